"""`rotld distill`: Distill a student from a teacher checkpoint with a YAML recipe."""

from __future__ import annotations

from rotld_cli.cli import app
from rotld_cli.cli._stub import not_available


@app.command("distill", help="Distill a student from a teacher checkpoint with a YAML recipe. (not available yet)")
def distill_cmd() -> None:
    not_available("distill", "the training engine lands with the training issue")
