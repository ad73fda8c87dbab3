"""`rotld train-teacher`: Train a teacher detector with a YAML recipe."""

from __future__ import annotations

from rotld_cli.cli import app
from rotld_cli.cli._stub import not_available


@app.command("train-teacher", help="Train a teacher detector with a YAML recipe. (not available yet)")
def train_cmd() -> None:
    not_available("train-teacher", "the training engine lands with the training issue")
