"""Rich console, progress bars, tables and one-line error rendering shared by every command."""

from __future__ import annotations

import logging
import os
import sys
import time
from collections.abc import Iterator, Sequence
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskProgressColumn,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.table import Table

console = Console()
err_console = Console(stderr=True)

_state = {"debug": bool(os.environ.get("ROTLD_DEBUG"))}


def set_debug(flag: bool) -> None:
    _state["debug"] = flag or _state["debug"]


def debug_enabled() -> bool:
    return _state["debug"]


def progress(*extra_columns, transient: bool = False) -> Progress:
    """A progress bar with count, rate columns supplied by the caller, elapsed time and ETA."""
    return Progress(
        TextColumn("[bold blue]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TaskProgressColumn(),
        *extra_columns,
        TimeElapsedColumn(),
        TextColumn("ETA"),
        TimeRemainingColumn(),
        console=console,
        transient=transient,
    )


def split_progress(outcomes: Iterator[Any], total: int) -> Iterator[Any]:
    """prepare-dota's bar: pass the image outcomes through, showing the patch count and patches/s."""
    bar = progress(TextColumn("{task.fields[patches]} patches, {task.fields[rate]:.1f}/s"))
    started = time.perf_counter()
    patches = 0
    with bar:
        task = bar.add_task("splitting images", total=total, patches=0, rate=0.0)
        for outcome in outcomes:
            patches += outcome.stats.patches if outcome.stats else 0
            rate = patches / max(time.perf_counter() - started, 1e-9)
            bar.update(task, advance=1, patches=patches, rate=rate)
            yield outcome


def table(title: str, columns: list[str], rows: list[list[object]], justify_numbers: bool = True) -> Table:
    tbl = Table(title=title, show_lines=False)
    for i, col in enumerate(columns):
        tbl.add_column(col, justify="right" if (justify_numbers and i > 0) else "left")
    for row in rows:
        tbl.add_row(*[str(c) for c in row])
    return tbl


def error(message: str) -> None:
    """One line on stderr, no traceback; the message is plain text (file names may hold brackets)."""
    err_console.print(f"[bold red]error:[/] {escape(message)}", highlight=False, soft_wrap=True)


def warn(message: str) -> None:
    err_console.print(f"[bold yellow]warning:[/] {escape(message)}", highlight=False, soft_wrap=True)


def info(message: str) -> None:
    console.print(message, highlight=False)


def is_interactive() -> bool:
    return sys.stdout.isatty()


class TrainDisplay:
    """The training display: a live progress bar when `live` (default: stdout is a terminal), else lines.

    It has the methods of `rotld_cli.engine.reporting.TrainReporter`; the engine's hooks call them
    (the engine decides what to show, this draws it).
    """

    def __init__(self, live: bool | None = None) -> None:
        self.live = console.is_terminal if live is None else live
        self._progress: Progress | None = None
        self._task = None

    def start(self, total: int, completed: int) -> None:
        if self.live:
            self._progress = progress(TextColumn("{task.fields[status]}"), TextColumn("{task.fields[speed]}"))
            self._progress.start()
            self._task = self._progress.add_task("starting", total=total, completed=completed, status="starting",
                                                 speed="")

    def update(self, completed: int, description: str, status: str, speed: str) -> None:
        if self._progress is not None:
            self._progress.update(self._task, completed=completed, description=description, status=status,
                                  speed=speed)

    def line(self, text: str) -> None:
        console.print(text, highlight=False, soft_wrap=True)

    def table(self, title: str, rows: Sequence[tuple[str, str]]) -> None:
        tbl = table(title, ["metric", "value"], [list(row) for row in rows])
        tbl.min_width = len(title) + 4
        console.print(tbl)

    def stop(self) -> None:
        if self._progress is not None:
            self._progress.stop()
            self._progress = None


class ConsoleLogHandler(logging.Handler):
    """Renders the toolkit's and the engine's `logging` records (they never draw UI themselves).

    WARNING and above become `warning:` lines on stderr, INFO plain lines on stdout.
    """

    def emit(self, record: logging.LogRecord) -> None:
        try:
            message = record.getMessage()
            if record.levelno >= logging.WARNING:
                warn(message)
            else:
                info(message)
        except Exception:  # logging must never break a command
            self.handleError(record)


LOGGER = "rotld_cli"


def install_log_handler() -> None:
    """Route `rotld_cli.*` log records (INFO and above) to the console, once per process."""
    logger = logging.getLogger(LOGGER)
    if not any(isinstance(h, ConsoleLogHandler) for h in logger.handlers):
        logger.addHandler(ConsoleLogHandler())
    if logger.level == logging.NOTSET:  # a worker rank other than 0 has raised it already: keep that
        logger.setLevel(logging.INFO)
