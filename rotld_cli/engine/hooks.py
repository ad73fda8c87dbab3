"""mmcv runner hooks: Rich progress + run logs, the non-finite loss guard, atomic checkpoints, evaluation.

Why our own hooks: mmcv's TextLoggerHook/CheckpointHook print unstructured text, write
checkpoints in place (a kill corrupts them) and let a NaN loss update the weights. A user who
trusts a run with days of GPU time needs a live view (every loss term, lr, speed, ETA),
machine-readable logs (`log.jsonl`, `metrics.csv`), a run that stops at the first non-finite
loss, and checkpoints that are always loadable.
"""

from __future__ import annotations

import csv
import io
import json
import math
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import torch
from mmcv.runner import Hook

from rotld_cli.engine import checkpoints as ckpt
from rotld_cli.engine.reporting import TrainReporter, rate_text
from rotld_cli.errors import RotldError, describe_os_error
from rotld_cli.fileio import atomic_write_text

LOG_JSONL = "log.jsonl"
METRICS_CSV = "metrics.csv"

LOSS_SHORT_NAMES = {"loss_cls": "cls", "loss_bbox": "bbox", "loss_ld": "ld", "loss_kd": "kd", "loss_im": "im"}


class TrainingDiverged(RotldError):
    """A non-finite loss or weight: the run stopped before corrupting anything on disk."""


def _short(name: str) -> str:
    return LOSS_SHORT_NAMES.get(name, name.removeprefix("loss_"))


def _fmt(value: float) -> str:
    return f"{value:.4g}" if math.isfinite(value) else str(value)


class RunLog:
    """`log.jsonl` (one record per log interval and per evaluation) and `metrics.csv` (one row per epoch).

    On resume, records beyond the resumed iteration (written by the interrupted run after its
    last checkpoint) and a torn last line are dropped, so the logs describe exactly the
    iterations that the weights went through.
    """

    def __init__(self, work_dir: Path, use_tensorboard: bool = True) -> None:
        self.work_dir = Path(work_dir)
        self.jsonl_path = self.work_dir / LOG_JSONL
        self.csv_path = self.work_dir / METRICS_CSV
        self._rows: list[dict[str, Any]] = []
        self._columns: list[str] = []
        self._lines = 0
        self._writer = _tensorboard_writer(self.work_dir / "tensorboard") if use_tensorboard else None

    def start(self, resumed_iter: int, snapshot: Mapping[str, Any] | None = None) -> None:
        """Keep what the resumed checkpoint had seen: its `snapshot()` when it has one (exactly its lines
        and rows), else the records of iterations <= `resumed_iter` (0, a fresh run, keeps none)."""
        self.work_dir.mkdir(parents=True, exist_ok=True)
        lines = self.jsonl_path.read_text(encoding="utf-8").splitlines() if resumed_iter > 0 and \
            self.jsonl_path.exists() else []
        if snapshot is not None:
            kept = lines[: int(snapshot["lines"])]
        else:
            kept = [line for line in lines if _record_iter(line) <= resumed_iter]
        self._write(lambda: atomic_write_text(self.jsonl_path, "".join(f"{line}\n" for line in kept)))
        self._lines = len(kept)
        self._rows, self._columns = [], []
        if snapshot is not None:
            self._columns = list(snapshot["columns"])
            self._rows = [dict(row) for row in snapshot["rows"]]
        elif resumed_iter > 0 and self.csv_path.exists():
            with open(self.csv_path, newline="", encoding="utf-8") as fh:
                reader = csv.DictReader(fh)
                self._columns = list(reader.fieldnames or [])
                self._rows = [row for row in reader if int(float(row.get("iter") or 0)) <= resumed_iter]
        self._write_csv()

    def snapshot(self) -> dict[str, Any]:
        """What `start` restores: how many lines were written so far, and the metrics rows."""
        return {"lines": self._lines, "columns": list(self._columns),
                "rows": [{k: _csv_value(v) for k, v in row.items()} for row in self._rows]}

    def record(self, record: Mapping[str, Any]) -> None:
        """Append one JSON line (flushed, so a crash loses at most the line being written)."""

        def append() -> None:
            with open(self.jsonl_path, "a", encoding="utf-8") as fh:
                fh.write(json.dumps(record, allow_nan=True) + "\n")
                fh.flush()

        self._write(append)
        self._lines += 1
        if self._writer is not None:
            step = int(record.get("iter", 0))
            prefix = record.get("mode", "train")
            for key, value in record.items():
                if isinstance(value, float) and key not in ("epoch", "iter"):
                    self._writer.add_scalar(f"{prefix}/{key}", value, step)
            self._writer.flush()

    def epoch_row(self, row: Mapping[str, Any]) -> None:
        """Add or update the metrics.csv row of one epoch; the file is rewritten atomically."""
        for existing in self._rows:
            if int(float(existing["epoch"])) == int(row["epoch"]):
                existing.update(row)
                break
        else:
            self._rows.append(dict(row))
        for key in row:
            if key not in self._columns:
                self._columns.append(key)
        self._write_csv()

    def _write_csv(self) -> None:
        buf = io.StringIO()
        writer = csv.DictWriter(buf, fieldnames=self._columns, extrasaction="ignore", lineterminator="\n")
        if self._columns:
            writer.writeheader()
            for row in self._rows:
                writer.writerow({k: _csv_value(row.get(k, "")) for k in self._columns})
        self._write(lambda: atomic_write_text(self.csv_path, buf.getvalue()))

    @staticmethod
    def _write(write: Callable[[], None]) -> None:
        """A full disk or a work dir that became unwritable: one line naming the file, not a traceback."""
        try:
            write()
        except OSError as exc:
            raise RotldError(describe_os_error(exc) or f"cannot write the run log ({exc})") from None

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None


def _csv_value(value: Any) -> Any:
    return f"{value:.6g}" if isinstance(value, float) else value


def _record_iter(line: str) -> float:
    """The iteration a log line is about (a torn line: never kept)."""
    try:
        return int(json.loads(line).get("iter", 0))
    except (json.JSONDecodeError, AttributeError, TypeError, ValueError):
        return float("inf")


def _tensorboard_writer(log_dir: Path):
    """A TensorBoard SummaryWriter when the `tensorboard` package is installed, else None."""
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        return None
    return SummaryWriter(log_dir=str(log_dir))


class NonFiniteLossGuard(Hook):
    """Stop at the first non-finite loss, *before* the optimizer step applies it to the weights.

    Registered with priority HIGHEST so it runs before the OptimizerHook (ABOVE_NORMAL) in
    `after_train_iter`; checkpoints on disk are therefore never touched by a diverged step.
    """

    def __init__(self, work_dir: Path, on_stop: Callable[[dict[str, Any]], None] | None = None) -> None:
        self.work_dir = Path(work_dir)
        self.on_stop = on_stop

    def after_train_iter(self, runner) -> None:
        log_vars = runner.outputs.get("log_vars", {})
        loss = runner.outputs.get("loss")
        bad = {k: v for k, v in log_vars.items() if isinstance(v, float) and not math.isfinite(v)}
        if loss is not None and not bool(torch.isfinite(loss.detach()).all()):
            bad.setdefault("loss", float(loss.detach().float().sum()))
        if not bad:
            return
        terms = ", ".join(f"{k}={_fmt(v)}" for k, v in log_vars.items() if k != "loss") or "no terms"
        event = {"event": "diverged", "epoch": runner.epoch + 1, "iter": runner.iter + 1, **log_vars}
        if self.on_stop is not None:
            self.on_stop(event)
        raise TrainingDiverged(
            f"training stopped: non-finite loss at epoch {runner.epoch + 1}, iteration {runner.inner_iter + 1} "
            f"(total iteration {runner.iter + 1}; {terms}); the weights were not updated with it. "
            f"{last_good_checkpoint(self.work_dir)} Lower the learning rate (--set optimizer.lr=...) "
            "and continue with --resume."
        )


def last_good_checkpoint(work_dir: Path) -> str:
    latest = Path(work_dir) / ckpt.LATEST
    if not latest.exists():
        return "No checkpoint was written yet."
    try:
        epoch = ckpt.load_checkpoint(latest)["meta"].get("epoch")
    except RotldError:
        return f"The last checkpoint is {latest}."
    return f"The last good checkpoint is {latest} (epoch {epoch})."


class AtomicCheckpointHook(Hook):
    """After every epoch: refresh `latest.pth`; every `interval` epochs and at the end, keep `epoch_N.pth`.

    `meta_fn(runner)` supplies the metadata (epoch, iter, lr schedule, RNG states, recipe, ...);
    it is called here, last among the epoch-end hooks (priority LOWEST), so the RNG states it
    captures are exactly those the next epoch starts from.
    """

    def __init__(self, work_dir: Path, meta_fn: Callable[[Any], dict[str, Any]], interval: int = 1,
                 max_keep_ckpts: int = -1, save_optimizer: bool = True,
                 on_saved: Callable[[Path, int], None] | None = None) -> None:
        self.work_dir = Path(work_dir)
        self.meta_fn = meta_fn
        self.interval = max(1, int(interval))
        self.max_keep_ckpts = max_keep_ckpts
        self.save_optimizer = save_optimizer
        self.on_saved = on_saved

    def after_train_epoch(self, runner) -> None:
        self.check_finite(runner)
        path = self.write_epoch(runner, self.meta_fn(runner))
        if self.on_saved is not None:
            self.on_saved(path, runner.epoch + 1)

    def check_finite(self, runner) -> None:
        """Never write a checkpoint whose weights went non-finite."""
        module = runner.model.module if hasattr(runner.model, "module") else runner.model
        for name, param in module.named_parameters():
            if not bool(torch.isfinite(param.detach()).all()):
                raise TrainingDiverged(
                    f"training stopped: parameter {name} became non-finite during epoch {runner.epoch + 1}; "
                    f"no checkpoint was written for it. {last_good_checkpoint(self.work_dir)} "
                    "Lower the learning rate (--set optimizer.lr=...) and continue with --resume."
                )

    def epoch_path(self, runner) -> Path:
        """epoch_N.pth every `interval` epochs and at the end; otherwise only latest.pth is refreshed."""
        epoch = runner.epoch + 1
        keep = epoch % self.interval == 0 or epoch >= runner.max_epochs
        return self.work_dir / (ckpt.epoch_name(epoch) if keep else ckpt.LATEST)

    def write_epoch(self, runner, meta: dict[str, Any]) -> Path:
        """Write the epoch's checkpoint (`epoch_path`) with `meta`, then latest.pth and the pruning."""
        path = self.epoch_path(runner)
        optim = runner.optimizer.state_dict() if self.save_optimizer else None
        ckpt.save_checkpoint(path, ckpt.model_state_dict(runner.model), meta, optim)
        if path.name != ckpt.LATEST:
            ckpt.publish_latest(path, self.work_dir)
            ckpt.prune_epochs(self.work_dir, self.max_keep_ckpts)
        return path


class EvalHook(Hook):
    """Every `interval` epochs (and after the last one) run `evaluate_fn(model)` and log its metrics."""

    def __init__(self, evaluate_fn: Callable[[Any], dict[str, float]], run_log: RunLog, interval: int = 1,
                 reporter: TrainReporter | None = None) -> None:
        self.evaluate_fn = evaluate_fn
        self.run_log = run_log
        self.interval = max(1, int(interval))
        self.reporter = reporter or TrainReporter()
        self.results: list[dict[str, Any]] = []

    def after_train_epoch(self, runner) -> None:
        epoch = runner.epoch + 1
        if epoch % self.interval and epoch < runner.max_epochs:
            return
        metrics = {k: float(v) for k, v in self.evaluate_fn(runner.model).items() if _is_number(v)}
        runner.model.train()
        self.results.append({"epoch": epoch, **metrics})
        self.run_log.record({"mode": "val", "epoch": epoch, "iter": runner.iter, **metrics})
        self.run_log.epoch_row({"epoch": epoch, "iter": runner.iter, **{f"val_{k}": v for k, v in metrics.items()}})
        rows = [(name, f"{value:.4f}") for name, value in metrics.items()]
        self.reporter.table(f"Validation after epoch {epoch}", rows)

    def state_dict(self) -> dict[str, Any]:
        return {"results": [dict(result) for result in self.results]}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.results = [dict(result) for result in state["results"]]


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


class ProgressHook(Hook):
    """Progress (epoch, iteration, every loss term, lr, it/s or s/it, ETA) and the run logs.

    A live reporter (the CLI's progress bar on a terminal) is updated every iteration; otherwise
    (CI, `nohup`, a pipe, a library caller) one plain line goes out every `interval` iterations
    so a log file still shows progress. The hook never draws: its reporter does.
    """

    def __init__(self, run_log: RunLog, interval: int = 50, reporter: TrainReporter | None = None) -> None:
        self.run_log = run_log
        self.interval = max(1, int(interval))
        self.reporter = reporter or TrainReporter()
        self._started = False
        self._window: dict[str, list[float]] = {}
        self._epoch_sums: dict[str, float] = {}
        self._epoch_iters = 0
        self._last_tick = 0.0
        self._data_start = 0.0
        self._times: list[float] = []
        self._data_times: list[float] = []
        self._epoch_start = 0.0
        self._run_start = 0.0
        self._start_iter = 0
        self._resumed: dict[str, Any] | None = None

    # -- resume ------------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        """The logs' length and the epoch's accumulators: a resumed run writes the same records and rows."""
        return {
            "log": self.run_log.snapshot(),
            "window": {k: list(v) for k, v in self._window.items()},
            "epoch_sums": dict(self._epoch_sums),
            "epoch_iters": self._epoch_iters,
            "times": list(self._times),
            "data_times": list(self._data_times),
            "epoch_seconds": time.perf_counter() - self._epoch_start if self._epoch_iters else 0.0,
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Applied when the run starts (the logs) and when the resumed epoch starts (the accumulators)."""
        self._resumed = dict(state)

    # -- run ---------------------------------------------------------------------------------
    def before_run(self, runner) -> None:
        self.run_log.start(runner.iter, None if self._resumed is None else self._resumed["log"])
        self._run_start = time.perf_counter()
        self._start_iter = runner.iter
        self.reporter.start(runner.max_iters, runner.iter)
        self._started = True

    def after_run(self, runner) -> None:
        self.close()

    def close(self) -> None:
        if self._started:
            self.reporter.stop()
            self._started = False
        self.run_log.close()

    # -- epoch -------------------------------------------------------------------------------
    def before_train_epoch(self, runner) -> None:
        self._epoch_sums, self._epoch_iters, self._window = {}, 0, {}
        self._times, self._data_times = [], []
        self._epoch_start = self._last_tick = time.perf_counter()
        if self._resumed is not None:
            state, self._resumed = self._resumed, None
            self._window = {k: list(v) for k, v in state["window"].items()}
            self._epoch_sums, self._epoch_iters = dict(state["epoch_sums"]), int(state["epoch_iters"])
            self._times, self._data_times = list(state["times"]), list(state["data_times"])
            self._epoch_start -= float(state["epoch_seconds"])

    def before_train_iter(self, runner) -> None:
        self._data_start = time.perf_counter()
        self._data_times.append(self._data_start - self._last_tick)

    def after_train_iter(self, runner) -> None:
        now = time.perf_counter()
        self._times.append(now - self._last_tick)
        self._last_tick = now
        log_vars = {k: float(v) for k, v in runner.outputs.get("log_vars", {}).items()}
        for key, value in log_vars.items():
            self._window.setdefault(key, []).append(value)
            self._epoch_sums[key] = self._epoch_sums.get(key, 0.0) + value
        self._epoch_iters += 1
        lr = float(runner.current_lr()[0])
        done_in_run = runner.iter + 1 - self._start_iter
        speed = done_in_run / max(now - self._run_start, 1e-9)
        inner, per_epoch = runner.inner_iter + 1, len(runner.data_loader)
        if self.reporter.live:
            status = f"it {inner}/{per_epoch} " + self._loss_text(log_vars) + f" lr {lr:.2e}"
            self.reporter.update(runner.iter + 1, f"epoch {runner.epoch + 1}/{runner.max_epochs}", status,
                                 rate_text(speed))
        if inner % self.interval == 0 or inner == per_epoch:
            means = {k: sum(v) / len(v) for k, v in self._window.items()}
            record = {
                "mode": "train", "epoch": runner.epoch + 1, "iter": runner.iter + 1, "inner_iter": inner,
                "lr": lr, **means,
                "time": sum(self._times) / len(self._times),
                "data_time": sum(self._data_times) / max(len(self._data_times), 1),
                "it_per_s": speed,
            }
            if torch.cuda.is_available() and torch.cuda.is_initialized():
                record["memory_mb"] = torch.cuda.max_memory_allocated() / 2**20
            self.run_log.record(record)
            self._window, self._times, self._data_times = {}, [], []
            if not self.reporter.live:
                remaining = (runner.max_iters - runner.iter - 1) / max(speed, 1e-9)
                self.reporter.line(
                    f"epoch {runner.epoch + 1}/{runner.max_epochs} it {inner}/{per_epoch} "
                    f"{self._loss_text(means)} lr {lr:.2e} {rate_text(speed)} ETA {_duration(remaining)}"
                )

    def after_train_epoch(self, runner) -> None:
        epoch = runner.epoch + 1
        seconds = time.perf_counter() - self._epoch_start
        means = {k: v / max(self._epoch_iters, 1) for k, v in self._epoch_sums.items()}
        row = {"epoch": epoch, "iter": runner.iter, "lr": float(runner.current_lr()[0]), **means,
               "seconds": seconds, "it_per_s": self._epoch_iters / max(seconds, 1e-9)}
        self.run_log.epoch_row(row)
        self.reporter.line(f"epoch {epoch}/{runner.max_epochs} done in {_duration(seconds)}: {self._loss_text(means)}")
        self._epoch_sums, self._epoch_iters, self._window = {}, 0, {}

    @staticmethod
    def _loss_text(values: Mapping[str, float]) -> str:
        if "loss" not in values:
            return ""
        terms = " ".join(f"{_short(k)} {_fmt(v)}" for k, v in values.items() if k.startswith("loss_"))
        return f"loss {_fmt(values['loss'])} ({terms})"


def _duration(seconds: float) -> str:
    seconds = max(0, int(seconds))
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"
