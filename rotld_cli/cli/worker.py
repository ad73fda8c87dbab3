"""`python -m rotld_cli.cli.worker ARGV...`: one process of a run that `rotld ... --gpus N` started.

torchrun starts this module once per process with the user's command line (ARGV, e.g.
`train-teacher RECIPE --gpus 4 ...`). It joins the process group, silences every rank but 0,
and runs the same rotld command, whose `maybe_launch` sees it is inside a worker and trains.

Errors: rank 0 prints its own error line as any rotld command does. The other ranks print
nothing; each failing worker leaves a small JSON record (rank, exit code, its error line) in the
launcher's failure folder, from which the launching process names the rank that caused a failure.
"""

from __future__ import annotations

import os
import sys
import time
import traceback
from collections.abc import Callable, Sequence
from pathlib import Path

from rotld_cli import ui
from rotld_cli.engine.dist import group, launch
from rotld_cli.errors import RotldError


def _record_errors(rank: int) -> list[str]:
    """Keep every error line rotld reports in this process; only rank 0 also prints them.

    `ui.error` is the one place rotld renders an error (the CLI's `main` and this module call it),
    so the worker's failure record carries exactly the line a user would have seen.
    """
    seen: list[str] = []
    show = ui.error

    def error(message: str) -> None:
        seen.append(message)
        if rank == 0 and not lost_peer(message):
            show(message)

    ui.error = error
    if rank != 0:
        ui.err_console.quiet = True
    return seen


def quiet_other_ranks(rank: int) -> None:
    """The console is rank 0's: the other ranks of a run print no progress or tables."""
    if rank != 0:
        ui.console.quiet = True


PEER_LOST_SIGNS = (
    "Connection closed by peer",
    "Connection reset by peer",
    "Broken pipe",
    "remote process exited",
    "communicator was aborted",
)


def lost_peer(message: str) -> bool:
    """A collective failed because another rank died: a consequence, reported by the launcher instead."""
    return any(sign in message for sign in PEER_LOST_SIGNS)


def _exit_code(exc: SystemExit) -> int:
    if exc.code is None:
        return 0
    return exc.code if isinstance(exc.code, int) else 1


def record_failure(rank: int, exit_code: int, message: str, printed: bool, rotld_error: bool,
                   peer_lost: bool = False) -> None:
    """Leave this worker's failure for the launcher (no-op outside a rotld launch)."""
    folder = launch.failure_dir()
    if folder is None:
        return
    local = int(os.environ.get("LOCAL_RANK", 0))
    launch.write_record(Path(folder) / f"rank{rank}.json", {
        "rank": rank, "local_rank": local, "exit_code": exit_code, "message": message, "printed": printed,
        "rotld_error": rotld_error, "peer_lost": peer_lost, "time": time.time(),
    })


def run_worker(body: Callable[[group.DistInfo], int | None]) -> int:
    """Join the group from the environment, run `body(info)`, turn its outcome into an exit code.

    A RotldError is one line (on rank 0's stderr, in the record elsewhere); any other exception
    is an internal error line (with the traceback under `rotld --debug`). A failed worker leaves
    the group without a farewell barrier: torchrun stops the others.
    """
    from rotld_cli.engine import compat
    from rotld_cli.engine.preemption import PREEMPTED_EXIT_CODE

    compat.quiet_imports()  # before anything imports mmcv: its notices would print once per process
    rank = int(os.environ.get("RANK", 0))
    errors = _record_errors(rank)
    group.silence_other_ranks(rank)
    quiet_other_ranks(rank)
    try:
        ctx = group.init_from_env(os.environ.get(group.DEVICE_ENV, "cpu"))
        code = body(ctx) or 0
    except SystemExit as exc:
        code = _exit_code(exc)
    except KeyboardInterrupt:
        code = 130
        ui.error("interrupted")
    except RotldError as exc:
        code = exc.exit_code
        ui.error(str(exc))
    except Exception as exc:
        if ui.debug_enabled():
            traceback.print_exc()
        code = 1
        ui.error(f"internal error: {type(exc).__name__}: {exc}")
    if code:
        message = errors[-1] if errors else ""
        rotld_error = bool(message) and not message.startswith(("internal error:", "interrupted"))
        peer_lost = lost_peer(message)
        record_failure(rank, code, message, printed=rank == 0 and not peer_lost, rotld_error=rotld_error,
                       peer_lost=peer_lost)
        if code == PREEMPTED_EXIT_CODE:  # every rank stopped at the same iteration, after rank 0 saved
            _leave_together()
        return code
    group.destroy()
    return 0


def _leave_together() -> None:
    """After a signal stop: exit only once every rank has reported it (the launcher stops the others as soon
    as one exits, which could cut rank 0's line short)."""
    try:
        group.barrier()
    except Exception:  # a peer already gone: nothing left to wait for
        pass


def run_cli(argv: Sequence[str]) -> int:
    """The rotld command line, in this process, as an exit code."""
    from rotld_cli.cli import main as cli_main

    try:
        cli_main(list(argv))
    except SystemExit as exc:
        return _exit_code(exc)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    return run_worker(lambda _ctx: run_cli(argv))


if __name__ == "__main__":
    sys.exit(main())
