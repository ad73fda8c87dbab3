"""The CLI shell: version, help, exit codes and one-line errors (no engine needed)."""

from __future__ import annotations

import subprocess
import sys

import pytest

from rotld_cli import __version__
from rotld_cli.cli import main

COMMANDS = ["prepare-dota", "train-teacher", "distill", "evaluate", "publish-model"]


def run_main(argv: list[str], capsys) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as exc:
        main(argv)
    out, err = capsys.readouterr()
    return exc.value.code, out, err


def test_version(capsys):
    code, out, _ = run_main(["--version"], capsys)
    assert code == 0
    assert out.strip() == f"rotld {__version__}"


def test_help_lists_the_pipeline_commands(capsys):
    code, out, _ = run_main(["--help"], capsys)
    assert code == 0
    for name in COMMANDS:
        assert name in out


def test_unknown_option_is_a_usage_error(capsys):
    code, _, err = run_main(["prepare-dota", "--no-such-option"], capsys)
    assert code == 2
    assert "--no-such-option" in err
    assert "Traceback" not in err


def test_python_dash_m_entry_point():
    proc = subprocess.run([sys.executable, "-m", "rotld_cli", "--version"], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == f"rotld {__version__}"


def test_exit_codes_raised_by_commands_reach_the_shell(capsys):
    import typer

    from rotld_cli.cli import app

    @app.command("_exit-probe", hidden=True)
    def _probe() -> None:
        raise typer.Exit(7)

    try:
        code, _, _ = run_main(["_exit-probe"], capsys)
    finally:
        app.registered_commands[:] = [c for c in app.registered_commands if c.name != "_exit-probe"]
    assert code == 7
