"""The training commands' display: a live Rich progress bar on a terminal, plain lines elsewhere.

The engine's hooks decide what to show and call this reporter (`rotld_cli.engine.reporting`);
drawing stays in the CLI layer.
"""

from __future__ import annotations

from collections.abc import Sequence

from rich.progress import TextColumn

from rotld_cli import ui
from rotld_cli.engine.reporting import TrainReporter


class ConsoleTrainReporter(TrainReporter):
    """Progress on rotld's console: a live bar when `live` (default: when stdout is a terminal)."""

    def __init__(self, live: bool | None = None) -> None:
        self.live = ui.console.is_terminal if live is None else live
        self._progress = None
        self._task = None

    def start(self, total: int, completed: int) -> None:
        if self.live:
            self._progress = ui.progress(TextColumn("{task.fields[status]}"), TextColumn("{task.fields[speed]}"))
            self._progress.start()
            self._task = self._progress.add_task("starting", total=total, completed=completed, status="starting",
                                                 speed="")

    def update(self, completed: int, description: str, status: str, speed: str) -> None:
        if self._progress is not None:
            self._progress.update(self._task, completed=completed, description=description, status=status,
                                  speed=speed)

    def line(self, text: str) -> None:
        ui.console.print(text, highlight=False, soft_wrap=True)

    def table(self, title: str, rows: Sequence[tuple[str, str]]) -> None:
        tbl = ui.table(title, ["metric", "value"], [list(row) for row in rows])
        tbl.min_width = len(title) + 4
        ui.console.print(tbl)

    def stop(self) -> None:
        if self._progress is not None:
            self._progress.stop()
            self._progress = None
