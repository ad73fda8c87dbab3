"""`rotld publish-model`: Strip a checkpoint for release: no optimizer, no teacher, hashed name."""

from __future__ import annotations

from rotld_cli.cli import app
from rotld_cli.cli._stub import not_available


@app.command("publish-model", help="Strip a checkpoint for release: no optimizer, no teacher, hashed name. (not available yet)")
def publish_cmd() -> None:
    not_available("publish-model", "publishing lands with the foundation issue")
