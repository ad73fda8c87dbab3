"""`rotld recipes`: List and show the bundled YAML recipes."""

from __future__ import annotations

from rotld_cli.cli import app
from rotld_cli.cli._stub import not_available


@app.command("recipes", help="List and show the bundled YAML recipes. (not available yet)")
def recipes_cmd() -> None:
    not_available("recipes", "recipes land with the training issue")
