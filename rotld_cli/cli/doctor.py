"""`rotld doctor`: report the engine environment: torch, mmcv-full ops, mmdet, mmrotate, shims, plugins."""

from __future__ import annotations

import json

import typer

from rotld_cli.cli import app
from rotld_cli.errors import RotldError

_STYLE = {"ok": "[green]ok[/]", "fail": "[bold red]FAIL[/]", "skip": "[yellow]skipped[/]", "n/a": "[dim]n/a[/]"}


@app.command(
    "doctor",
    help="Report the engine environment: torch, mmcv-full ops, mmdet, mmrotate, shims, plugins. "
    "Exits non-zero with a one-line fix for each failure.",
)
def doctor_cmd(
    as_json: bool = typer.Option(False, "--json", help="Print the checks as JSON on stdout."),
) -> None:
    from rotld_cli import ui
    from rotld_cli.engine.doctor import FAIL, report, run_checks

    checks = run_checks()
    document = report(checks)
    if as_json:
        typer.echo(json.dumps(document, indent=2))
    else:
        ui.console.print(
            ui.table(
                "rotld doctor",
                ["check", "status", "detail"],
                [[c.name, _STYLE.get(c.status, c.status), c.detail] for c in checks],
                justify_numbers=False,
            )
        )
    failures = [c for c in checks if c.status == FAIL]
    for check in failures[:-1]:
        ui.error(f"{check.name}: {check.fix}")
    if failures:  # the last fix line goes out as the error, so `main` sets the exit status
        raise RotldError(f"{failures[-1].name}: {failures[-1].fix}")
    if not as_json:
        ui.info("[green]the engine is ready[/]")
