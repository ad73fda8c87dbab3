"""`rotld demo`: Run the synthetic end-to-end pipeline: data, split, teacher, students, evaluation."""

from __future__ import annotations

from rotld_cli.cli import app
from rotld_cli.cli._stub import not_available


@app.command("demo", help="Run the synthetic end-to-end pipeline: data, split, teacher, students, evaluation. (not available yet)")
def demo_cmd() -> None:
    not_available("demo", "the training engine lands with the training issue")
