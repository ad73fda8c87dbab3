"""Rich console, progress bars, tables and one-line error rendering shared by every command."""

from __future__ import annotations

import contextlib
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
    """Debug output for this invocation: `--debug` anywhere, or ROTLD_DEBUG set in the environment."""
    _state["debug"] = flag or bool(os.environ.get("ROTLD_DEBUG"))


def debug_enabled() -> bool:
    return _state["debug"]


# Without a terminal (a log file, CI, a pipe) progress is a plain line at most this often, plus one
# whenever another tenth of the work is done and one at the end; ROTLD_PROGRESS_SECONDS overrides it.
LOG_INTERVAL_S = 10.0


def progress(*extra_columns, transient: bool = False) -> Progress:
    """A progress bar with count, rate columns supplied by the caller, elapsed time and ETA.

    On a terminal it is Rich's live bar; elsewhere nothing would show until the end (a 10-hour
    run's log would stay empty), so it prints periodic plain lines instead (see LoggedProgress)."""
    columns = (
        TextColumn("[bold blue]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TaskProgressColumn(),
        *extra_columns,
        TimeElapsedColumn(),
        TextColumn("ETA"),
        TimeRemainingColumn(),
    )
    if console.is_terminal:
        return Progress(*columns, console=console, transient=transient)
    return LoggedProgress(*columns, extra_columns=extra_columns, console=console)


class LoggedProgress(Progress):
    """Rich's task bookkeeping (rates, ETA) without the live display: one plain line per task
    every LOG_INTERVAL_S seconds or tenth of the total, and a last one when it stops."""

    def __init__(self, *columns, extra_columns: tuple = (), **kwargs) -> None:
        super().__init__(*columns, disable=True, **kwargs)
        self._extra = extra_columns
        interval = os.environ.get("ROTLD_PROGRESS_SECONDS")
        self._interval = float(interval) if interval else LOG_INTERVAL_S
        self._logged: dict = {}  # task id -> (time, tenth, completed) of its last line

    def update(self, task_id, **kwargs) -> None:
        super().update(task_id, **kwargs)
        self._maybe_log(task_id)

    def advance(self, task_id, advance: float = 1) -> None:
        super().advance(task_id, advance)
        self._maybe_log(task_id)

    def stop(self) -> None:
        for task in self.tasks:
            if task.completed and self._logged.get(task.id, (0, 0, None))[2] != task.completed:
                self._log(task)
        super().stop()

    def _maybe_log(self, task_id) -> None:
        task = self._tasks[task_id]
        last_time, last_tenth, _ = self._logged.get(task_id, (task.start_time or self.get_time(), 0, None))
        tenth = int(10 * task.completed / task.total) if task.total else 0
        now = self.get_time()
        if now - last_time >= self._interval or (tenth > last_tenth and now - last_time >= min(1.0, self._interval)):
            self._log(task)

    def _log(self, task) -> None:
        self._logged[task.id] = (self.get_time(), int(10 * task.completed / task.total) if task.total else 0,
                                 task.completed)
        console.print(progress_line(task, self._extra), highlight=False, markup=False, soft_wrap=True)


def progress_line(task, extra_columns: tuple = ()) -> str:
    """`splitting images: 3/10 (30%), 12 patches, 1.5/s, elapsed 0:00:02, ETA 0:00:05`."""
    done = f"{task.completed:g}/{task.total:g} ({100 * task.completed / task.total:.0f}%)" if task.total else (
        f"{task.completed:g} done"
    )
    parts = [f"{task.description}: {done}"]
    for column in extra_columns:
        rendered = column(task)
        parts.append(getattr(rendered, "plain", str(rendered)))
    speed = task.finished_speed or task.speed
    if speed and not extra_columns:  # callers' columns carry their own rate (patches/s, it/s)
        parts.append(f"{speed:.2f}/s" if speed >= 1 else f"{1 / speed:.1f} s each")
    parts.append(f"elapsed {_clock(task.finished_time if task.finished else task.elapsed)}")
    if not task.finished:
        remaining = task.time_remaining
        parts.append(f"ETA {_clock(remaining) if remaining is not None else '?'}")
    return ", ".join(p for p in parts if p)


def _clock(seconds: float | None) -> str:
    seconds = int(seconds or 0)
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"


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


def count_progress(outcomes: Iterator[Any], total: int, description: str) -> Iterator[Any]:
    """A plain bar over per-item outcomes (`rotld convert`'s images): pass them through, counting."""
    with progress() as bar:
        task = bar.add_task(description, total=total)
        for outcome in outcomes:
            bar.update(task, advance=1)
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
    err_console.print(f"[bold red]error:[/] {escape(_encodable(message))}", highlight=False, soft_wrap=True)


def warn(message: str) -> None:
    err_console.print(f"[bold yellow]warning:[/] {escape(_encodable(message))}", highlight=False, soft_wrap=True)


def _encodable(message: str) -> str:
    """A file name that is not valid UTF-8 reaches Python as lone surrogates, which no terminal
    encoding can write: show them escaped (`\\udcff`) instead of failing while reporting."""
    return message.encode("utf-8", "backslashreplace").decode("utf-8")


def info(message: str, stderr: bool = False) -> None:
    """A status line; `stderr=True` keeps stdout clean for a command's --json output."""
    (err_console if stderr else console).print(message, highlight=False)


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

    WARNING and above become `warning:` lines on stderr, INFO plain lines on stdout, or on stderr
    after `status_to_stderr()` (a command printing --json keeps stdout for the JSON alone).
    """

    def emit(self, record: logging.LogRecord) -> None:
        try:
            message = record.getMessage()
            if record.levelno >= logging.WARNING:
                warn(message)
            else:
                info(message, stderr=_state.get("status_stderr", False))
        except Exception:  # logging must never break a command
            self.handleError(record)


LOGGER = "rotld_cli"


@contextlib.contextmanager
def status_on_stderr(enabled: bool = True) -> Iterator[None]:
    """Inside the block, logged status lines go to stderr (a command's --json keeps stdout alone)."""
    before = _state.get("status_stderr", False)
    _state["status_stderr"] = enabled or before
    try:
        yield
    finally:
        _state["status_stderr"] = before


def install_log_handler() -> None:
    """Route `rotld_cli.*` log records (INFO and above) to the console, once per process."""
    logger = logging.getLogger(LOGGER)
    if not any(isinstance(h, ConsoleLogHandler) for h in logger.handlers):
        logger.addHandler(ConsoleLogHandler())
    if logger.level == logging.NOTSET:  # a worker rank other than 0 has raised it already: keep that
        logger.setLevel(logging.INFO)
