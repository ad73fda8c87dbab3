"""How a training run reports progress without drawing UI: a reporter object the CLI replaces.

Why: the engine must not import the CLI or Rich's display. The hooks compute what to show
(losses, lr, speed, ETA, validation metrics) and hand it to a `TrainReporter`; this base class
writes plain lines through `logging` (what a library caller or a log file gets), and the CLI
passes any object with the same methods: `rotld_cli.ui.TrainDisplay` draws a live progress bar
and tables.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

log = logging.getLogger("rotld_cli.engine.train")


class TrainReporter:
    """Plain progress lines via `logging`; `live` reporters also get every iteration through `update`."""

    live = False

    def start(self, total: int, completed: int) -> None:
        """The run begins at iteration `completed` of `total`."""

    def update(self, completed: int, description: str, status: str, speed: str) -> None:
        """After each iteration (only called when `live`)."""

    def line(self, text: str) -> None:
        """A progress line: periodic when not `live`, and each epoch's summary."""
        log.info(text)

    def table(self, title: str, rows: Sequence[tuple[str, str]]) -> None:
        """A small two-column table (validation metrics)."""
        log.info("%s: %s", title, ", ".join(f"{name} {value}" for name, value in rows))

    def stop(self) -> None:
        """The run ended (normally or not)."""


def rate_text(iters_per_s: float) -> str:
    """`2.50 it/s`, or `4.00 s/it` when a step takes longer than a second (never `0.00 it/s`)."""
    if iters_per_s >= 1 or iters_per_s <= 0:
        return f"{iters_per_s:.2f} it/s"
    return f"{1 / iters_per_s:.2f} s/it"
