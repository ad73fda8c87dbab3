"""`rotld prepare-dota`: Split DOTA images into patches (MMRotate img_split semantics)."""

from __future__ import annotations

from rotld_cli.cli import app
from rotld_cli.cli._stub import not_available


@app.command("prepare-dota", help="Split DOTA images into patches (MMRotate img_split semantics). (not available yet)")
def prepare_cmd() -> None:
    not_available("prepare-dota", "the DOTA split lands with the foundation issue")
