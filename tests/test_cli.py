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


# --------------------------------------------------------------------------------------------- help pages


def _commands():
    """(name, click command) of every command and group, from the tree `main` shows."""
    import typer

    from rotld_cli.cli import app
    from rotld_cli.cli.help import _walk, polish

    root = typer.main.get_command(app)
    polish(root)
    return list(_walk(root, ""))


def _help(capsys, monkeypatch, *argv: str) -> str:
    monkeypatch.setenv("COLUMNS", "200")
    code, out, err = run_main([*argv, "-h"], capsys)
    assert code == 0, err
    return out


@pytest.mark.parametrize("name", [name for name, _ in _commands()])
def test_every_help_page_has_real_metavars_and_examples(name, capsys, monkeypatch):
    out = _help(capsys, monkeypatch, *name.split())
    usage = next(line for line in out.splitlines() if "Usage:" in line)
    assert "{" not in usage and "<" not in usage, usage
    for typed in ("<bool>", "<str>", "<int>", "<float>", "<path>", "<list["):
        assert typed not in out, f"{name or 'rotld'}: {typed} in its help"
    examples = [line.strip() for line in out.splitlines() if line.strip().startswith("$ rotld")]
    if name != "recipes":  # a group: its commands have the examples
        assert "Examples" in out and len(examples) >= 2, out
        assert all(e.startswith(f"$ rotld {name}".rstrip()) for e in examples), examples


def test_examples_use_only_options_their_command_has():
    import shlex

    from rotld_cli.cli.help import EXAMPLES

    commands = dict(_commands())
    for name, examples in EXAMPLES.items():
        for _, line in examples:
            for part in line.split("&&"):
                words = shlex.split(part)[1:]  # after `rotld`
                depth = 0
                command = commands[""]
                while depth < len(words) and words[depth] in (getattr(command, "commands", None) or {}):
                    command = command.commands[words[depth]]
                    depth += 1
                known = {opt for p in command.params for opt in p.opts} | {"-h", "--help"}
                options = [w for w in words[depth:] if w.startswith("-")]
                assert set(options) <= known, (line, set(options) - known)
                assert name == "" or " ".join(words[:depth]) == name, line


def test_metavars_show_what_to_type(capsys, monkeypatch):
    out = _help(capsys, monkeypatch, "train-teacher")
    assert "Usage: rotld train-teacher [OPTIONS] RECIPE" in out
    rows = {line.split()[1]: line.split()[2] for line in out.splitlines() if line.startswith("│ --")}
    assert rows["--set"] == "KEY=VALUE" and rows["--device"] == "cpu|cuda" and rows["--seed"] == "N"
    assert rows["--launcher"] == "auto|torchrun|slurm" and rows["--work-dir"] == "DIR"
    flags = [line.split()[1] for line in out.splitlines() if line.startswith("│ --resume")]
    assert flags == ["--resume", "--resume-from"] and "--resume    " in out  # --resume: a flag, no value column
    assert rows["--resume-from"] == "CKPT" and rows["--checkpoint-every"] == "N|DURATION" and rows["--keep"] == "N"
    out = _help(capsys, monkeypatch, "prepare-dota")
    assert "Usage: rotld prepare-dota [OPTIONS] SRC OUT" in out
    assert "│ *    SRC " in out and "--dota-version" in out and "v1.0|v1.5|v2.0" in out and ".png|.bmp|.tif|.jpg" in out


def test_dash_h_and_dash_dash_help_are_the_same_page(capsys, monkeypatch):
    monkeypatch.setenv("COLUMNS", "200")
    assert run_main(["publish-model", "-h"], capsys)[1] == run_main(["publish-model", "--help"], capsys)[1]
    assert run_main(["-h"], capsys)[1] == run_main(["--help"], capsys)[1]


# --------------------------------------------------------------------------------------------- --debug


@pytest.mark.parametrize("where", ["first", "after the command", "last"])
def test_debug_is_accepted_anywhere_and_shows_the_traceback(where, tmp_path, capsys):
    (tmp_path / "afile").write_text("")
    argv = ["prepare-dota", str(tmp_path), str(tmp_path / "afile" / "out")]
    position = {"first": 0, "after the command": 1, "last": len(argv)}[where]
    code, _, err = run_main([*argv[:position], "--debug", *argv[position:]], capsys)
    assert code == 2 and "Traceback (most recent call last)" in err
    assert err.strip().splitlines()[-1] == f"error: SRC {tmp_path}: expected images/ (one split) or train/, val/, " \
        "test/ with images/ (a DOTA root)"
    code, _, err = run_main(argv, capsys)
    assert code == 2 and "Traceback" not in err


def test_debug_after_a_double_dash_is_an_argument():
    from rotld_cli.cli.help import strip_debug

    assert strip_debug(["--debug", "distill", "r.yaml", "--debug", "--", "--debug"]) == (
        ["distill", "r.yaml", "--", "--debug"], True
    )
    assert strip_debug(["evaluate", "--json"]) == (["evaluate", "--json"], False)
