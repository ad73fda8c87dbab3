"""Stopping a run on request: SIGTERM, SIGUSR1 and SIGINT save a checkpoint, then the run exits.

Why: clusters pre-empt (Slurm sends SIGUSR1 `--signal=USR1@120` seconds before the end, or
SIGTERM), and a kill loses everything since the last checkpoint. While training runs, the handlers
here only note the signal; the checkpoint hook saves at the next iteration boundary (all processes
agree on which one) and raises `Preempted`. A signal that arrives while a checkpoint is being
written is noted and changes nothing (the file is finished and renamed into place as usual).
During validation (which can take minutes) a signal interrupts it at once: validation leaves no
state behind, and the resumed run validates again.

Exit codes: 75 (EX_TEMPFAIL, "try again later") after SIGTERM/SIGUSR1, 130 after SIGINT.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import signal
import subprocess
import threading
from collections.abc import Callable, Iterator
from typing import Any

from rotld_cli.engine import faults
from rotld_cli.errors import RotldError

log = logging.getLogger(__name__)

PREEMPTED_EXIT_CODE = 75
INTERRUPTED_EXIT_CODE = 130
SCONTROL_TIMEOUT_S = 60.0
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGUSR1)


def signal_name(signum: int) -> str:
    try:
        return signal.Signals(signum).name
    except ValueError:
        return f"signal {signum}"


class Preempted(RotldError):
    """The run stopped on a signal after saving its state; the message says where and how to go on."""

    def __init__(self, message: str, signum: int) -> None:
        super().__init__(message)
        self.signum = signum
        self.exit_code = INTERRUPTED_EXIT_CODE if signum == signal.SIGINT else PREEMPTED_EXIT_CODE


class StopNow(BaseException):
    """Raised by the signal handler inside an interruptible section (BaseException: nothing swallows it)."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal_name(signum))
        self.signum = signum


class EvalInterrupted(Exception):
    """Validation was stopped by a signal; the epoch's training iterations are complete."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal_name(signum))
        self.signum = signum


class StopRequests:
    """The stop signals received during a run: `signum` is the first one (0: none)."""

    def __init__(self) -> None:
        self.signum = 0
        self.repeats = 0
        self._previous: dict[int, Any] = {}
        self._interruptible = False

    def install(self) -> bool:
        """Catch the stop signals (main thread only: elsewhere Python cannot, and they keep their handlers)."""
        if threading.current_thread() is not threading.main_thread():
            return False
        for signum in STOP_SIGNALS:
            self._previous[signum] = signal.signal(signum, self._on_signal)
        return True

    def restore(self) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)
        self._previous.clear()

    def _on_signal(self, signum: int, frame: Any) -> None:
        if self.signum:
            self.repeats += 1  # already stopping: a second signal never interrupts the save
            _notice(f"{signal_name(signum)}: already stopping, the checkpoint is being saved")
            return
        self.signum = signum
        _notice(f"{signal_name(signum)}: saving a checkpoint after this iteration, then stopping")
        if self._interruptible:
            raise StopNow(signum)

    @contextlib.contextmanager
    def interruptible(self) -> Iterator[None]:
        """Inside, a stop signal raises StopNow at once (also one that arrived just before)."""
        if self.signum:
            raise StopNow(self.signum)
        self._interruptible = True
        try:
            yield
        finally:
            self._interruptible = False


def _notice(text: str) -> None:
    """One line on stderr from rank 0, straight to the file descriptor (safe inside a signal handler)."""
    if os.environ.get("RANK", "0") == "0":
        try:
            os.write(2, f"\nrotld: {text}\n".encode())
        except OSError:
            pass


def interruptible_eval(
    evaluate: Callable[[Any], dict[str, float]], stops: StopRequests
) -> Callable[[Any], dict[str, float]]:
    """`evaluate(model)` that a stop signal interrupts (EvalInterrupted) and that leaves every RNG as it was.

    Restoring the random states makes training independent of validation (its loader draws from
    torch's generator): a run with other `eval_interval`s, or one whose validation was
    interrupted and redone, trains exactly the same.
    """
    from rotld_cli.engine.checkpoints import capture_rng_state, restore_rng_state

    def run(model: Any) -> dict[str, float]:
        state = capture_rng_state()
        try:
            with stops.interruptible():
                faults.fire("eval")
                return evaluate(model)
        except StopNow as stop:
            raise EvalInterrupted(stop.signum) from None
        finally:
            restore_rng_state(state)

    return run


def requeue_slurm(job_id: str, scontrol: str | None = None) -> str | None:
    """`scontrol requeue JOB`: None when Slurm accepted it, else why not (one line)."""
    scontrol = scontrol or shutil.which("scontrol")
    if not scontrol:
        return "scontrol is not on PATH"
    try:
        done = subprocess.run(
            [scontrol, "requeue", str(job_id)], capture_output=True, text=True, timeout=SCONTROL_TIMEOUT_S
        )
    except (OSError, subprocess.SubprocessError) as exc:
        return f"scontrol failed ({exc})"
    if done.returncode != 0:
        detail = (done.stderr or done.stdout).strip().splitlines()
        return f"scontrol requeue {job_id} exited with {done.returncode}" + (f": {detail[-1]}" if detail else "")
    return None


def requeue_job() -> str:
    """`scontrol requeue $SLURM_JOB_ID` (--requeue), as the sentence that ends the stop message."""
    job = os.environ.get("SLURM_JOB_ID", "")
    problem = requeue_slurm(job)
    if problem is None:
        return f"; Slurm job {job} requeued: its next start resumes from this checkpoint"
    return f"; could not requeue Slurm job {job} ({problem}): submit it again to resume"
