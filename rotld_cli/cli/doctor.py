"""`rotld doctor`: Report the engine environment: torch, mmcv-full ops, mmdet, mmrotate, plugins."""

from __future__ import annotations

from rotld_cli.cli import app
from rotld_cli.cli._stub import not_available


@app.command("doctor", help="Report the engine environment: torch, mmcv-full ops, mmdet, mmrotate, plugins. (not available yet)")
def doctor_cmd() -> None:
    not_available("doctor", "the engine lands with the engine issue")
