"""The checkpoint hook of a training run: inside epochs, at their ends, and when a signal asks to stop.

Why one hook on every process: a checkpoint holds every process's random generators, and a stop
must happen at the same iteration everywhere (a process that stops alone leaves the others
waiting in their next collective). So at each iteration boundary the processes agree (one
all-reduce of a few integers) on whether to save (every N iterations, after a duration of training
measured on rank 0, or on a signal received by any of them) and whether to stop; they gather their
generators' states; rank 0 writes `iter_N.pth` (atomically, then `latest.pth`, then prunes to the
newest `keep`). At an epoch end the same happens for `epoch_N.pth` (see `AtomicCheckpointHook`).

A checkpoint records where the run is (`kind` iter/epoch, `epoch` = epochs completed, `inner_iter`
= steps done in the current one, `iter`), with the hooks' states (`run_state`). The log line
announcing a checkpoint is written before it, so the checkpoint's log length includes it.
"""

from __future__ import annotations

import signal
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from rotld_cli.engine import checkpoints as ckpt
from rotld_cli.engine import faults, run_state
from rotld_cli.engine.dist import group
from rotld_cli.engine.hooks import AtomicCheckpointHook
from rotld_cli.engine.preemption import Preempted, StopRequests, signal_name
from rotld_cli.errors import RotldError


class RunCheckpointHook(AtomicCheckpointHook):
    """Epoch and iteration checkpoints and signal stops; register on every rank, `write` on rank 0 only."""

    def __init__(
        self,
        work_dir: Path,
        meta_fn: Callable[[Any], dict[str, Any]],
        *,
        stops: StopRequests,
        interval: int = 1,
        max_keep_ckpts: int = -1,
        every_iters: int | None = None,
        every_seconds: float | None = None,
        keep_iters: int = 2,
        write: bool = True,
        record: Callable[[Mapping[str, Any]], None] | None = None,
        previous: Path | None = None,
        requeue: Callable[[], str] | None = None,
    ) -> None:
        super().__init__(work_dir, meta_fn, interval=interval, max_keep_ckpts=max_keep_ckpts)
        self.stops = stops
        self.every_iters = every_iters
        self.every_seconds = every_seconds
        self.keep_iters = max(1, int(keep_iters))
        self.write = write
        self.record = record
        self.previous = previous  # the newest complete checkpoint (what a failed save leaves to resume from)
        self.requeue = requeue  # rank 0, after a SIGTERM/SIGUSR1 save: requeue the Slurm job, say what happened
        self._last_save = time.monotonic()
        self._saved_iters: int | None = None  # what this run's last iteration checkpoint holds

    def before_run(self, runner) -> None:
        self._last_save = time.monotonic()
        if self.previous is not None and self.previous.parent == self.work_dir:  # resumed from it
            self._saved_iters = runner.iter

    def before_train_iter(self, runner) -> None:
        faults.fire("iter", runner.iter + 1)

    def after_train_iter(self, runner) -> None:
        done = runner.iter + 1
        due_iters = bool(self.every_iters) and done % self.every_iters == 0
        due_time = (
            self.write and self.every_seconds is not None and time.monotonic() - self._last_save >= self.every_seconds
        )
        signum, due_time = group.all_max([self.stops.signum, int(due_time)])
        if not (due_iters or due_time or signum):
            return
        path = self._save_iteration(runner, step=runner.inner_iter + 1, iters=done)
        if signum:
            self._stop(runner, signum, path, step=runner.inner_iter + 1, iters=done)

    def after_train_epoch(self, runner) -> None:
        self._epoch_end(runner, aborted=False)

    def stop_at_epoch_end(self, runner, signum: int) -> None:
        """Rank 0's validation was stopped by `signum`: save the state before the epoch-end work, stop."""
        self._epoch_end(runner, aborted=True)

    # -- saving ------------------------------------------------------------------------------
    def _epoch_end(self, runner, aborted: bool) -> None:
        signum, aborted_anywhere = group.all_max([self.stops.signum, int(aborted)])
        steps = len(runner.data_loader)
        if aborted_anywhere:
            # the epoch's last iteration may just have been saved: the state is the same, nothing to add
            path = (
                self.previous
                if self._saved_iters == runner.iter
                else self._save_iteration(runner, step=steps, iters=runner.iter)
            )
            self._stop(runner, signum, path, step=steps, iters=runner.iter)
        self.check_finite(runner)
        rngs = group.gather_objects(ckpt.capture_rng_state())
        path = None
        if self.write:
            path = self.epoch_path(runner)
            self._announce(runner, path, runner.iter)
            meta = self._meta(runner, "epoch", epoch=runner.epoch + 1, step=0, iters=runner.iter, rngs=rngs)
            self._guarded(path, lambda: self.write_epoch(runner, meta))
        self._last_save = time.monotonic()
        if signum:
            self._stop(runner, signum, path, step=steps, iters=runner.iter)

    def _save_iteration(self, runner, step: int, iters: int) -> Path | None:
        """`iter_N.pth` for `step` steps done in the current epoch (`iters` in all); None on other ranks."""
        self.check_finite(runner)
        rngs = group.gather_objects(ckpt.capture_rng_state())
        self._last_save = time.monotonic()
        self._saved_iters = iters  # on every rank: they must agree on skipping a save (a collective)
        if not self.write:
            return None
        path = self.work_dir / ckpt.iter_name(iters)
        self._announce(runner, path, iters)
        meta = self._meta(runner, "iter", epoch=runner.epoch, step=step, iters=iters, rngs=rngs)
        optim = runner.optimizer.state_dict() if self.save_optimizer else None

        def write() -> None:
            ckpt.save_checkpoint(path, ckpt.model_state_dict(runner.model), meta, optim)
            ckpt.publish_latest(path, self.work_dir)
            ckpt.prune_iters(self.work_dir, self.keep_iters)

        self._guarded(path, write)
        return path

    def _meta(self, runner, kind: str, epoch: int, step: int, iters: int, rngs: list[Any]) -> dict[str, Any]:
        meta = self.meta_fn(runner)
        meta.update(
            kind=kind,
            epoch=epoch,
            inner_iter=step,
            iter=iters,
            steps_per_epoch=len(runner.data_loader),
            rng=rngs[0],
            rng_ranks=rngs,
            hooks=run_state.hook_states(runner),
        )
        return meta

    def _announce(self, runner, path: Path, iters: int) -> None:
        if self.record is not None:
            self.record({"event": "checkpoint", "epoch": runner.epoch + 1, "iter": iters, "path": path.name})

    def _guarded(self, path: Path, write: Callable[[], Any]) -> None:
        """A save that fails (full disk, unwritable work dir) is one line; the previous checkpoint is intact."""
        try:
            write()
        except (RotldError, OSError) as exc:
            kept = f"{self.previous.name} is intact" if self.previous is not None else "no checkpoint was saved yet"
            raise ckpt.CheckpointError(
                f"{exc}; {path.name} was not saved ({kept}): make room or fix the work dir, then continue with "
                f"--resume --work-dir {self.work_dir}"
            ) from None
        self.previous = path

    def _stop(self, runner, signum: int, path: Path | None, step: int, iters: int) -> None:
        """Every process raises the same Preempted, once rank 0 has written (and requeued: before any
        process exits, since Slurm may end the job as soon as one does)."""
        requeued = ""
        if self.write and self.requeue is not None and signum != signal.SIGINT:
            requeued = self.requeue()
        name, requeued = group.gather_objects((None if path is None else path.name, requeued))[0]
        where = f"epoch {runner.epoch + 1}, iteration {step}/{len(runner.data_loader)} (total {iters})"
        raise Preempted(
            f"stopped by {signal_name(signum)} at {where}: saved {name}; continue with --resume "
            f"--work-dir {self.work_dir}{requeued}",
            signum,
        )
