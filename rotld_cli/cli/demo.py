"""`rotld demo`: the synthetic end-to-end pipeline (data, split, teacher, students, evaluation)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer

from rotld_cli.cli import app


@app.command("demo", help="Run the synthetic end-to-end pipeline: data, split, teacher, students, evaluation.")
def demo_cmd(
    work_dir: Optional[Path] = typer.Option(
        None, "--work-dir", help="Demo folder (default: ./rotld-demo, or ./rotld-demo-quick with --quick)."
    ),
    quick: bool = typer.Option(False, "--quick", help="A ~2-minute smoke run: a few images, 1 epoch each."),
    device: Optional[str] = typer.Option(None, "--device", help="cpu or cuda (default: cuda if available)."),
    as_json: bool = typer.Option(False, "--json", help="Print the results as JSON after the table."),
    methods: str = typer.Option(
        "ld", "--methods", help="Students to train and compare, comma-separated: ld, ld-seed, crosskd, bckd, "
        "ld-crosskd (finished runs are reused: adding a method trains only its student)."
    ),
) -> None:
    from rotld_cli import ui
    from rotld_cli.cli.evaluate import print_table
    from rotld_cli.demo import parse_methods, run_demo

    chosen = parse_methods(methods)  # checked before anything is written
    result = run_demo(work_dir, quick=quick, device=device, methods=chosen)
    print_table(result.table())
    if result.found:
        ui.info(result.found)
    ui.info(f"report: {result.report} ({result.seconds / 60:.1f} min"
            + (f"; reused {', '.join(result.reused)})" if result.reused else ")"))
    if as_json:
        payload = {"work_dir": str(result.work_dir), "seconds": result.seconds, "steps": result.steps,
                   "models": result.rows}
        print(json.dumps(payload, indent=2))
