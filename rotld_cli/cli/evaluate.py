"""`rotld evaluate`: Evaluate detections with the DOTA devkit's Task1 rules at IoU 0.50:0.95."""

from __future__ import annotations

from rotld_cli.cli import app
from rotld_cli.cli._stub import not_available


@app.command("evaluate", help="Evaluate detections with the DOTA devkit's Task1 rules at IoU 0.50:0.95. (not available yet)")
def evaluate_cmd() -> None:
    not_available("evaluate", "result-file evaluation lands with the evaluation issue")
