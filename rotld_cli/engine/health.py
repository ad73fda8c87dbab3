"""Training health: say when a run ends with a dead classifier or a runaway loss, instead of AP 0.00.

Why: a dense detector's classifier can die without any NaN. When every unit of the last conv of
its classification tower stops firing (ReLU outputs 0 for every input, so no gradient flows back
through them), the class logits are the bias alone: the focal loss settles near 1.0, every score
sits at the ~0.01 prior, and the model's test threshold (0.05) removes every box. The run then
"finishes" and its evaluation prints AP 0.00. This hook watches for that and for losses that
explode, and states it in `log.jsonl` and in the run's last line.

Per iteration it adds two numbers to the logged values (averaged per log window in `log.jsonl`
and per epoch in `metrics.csv`, like the losses):

* `cls_active`: the fraction of the classification tower's last-conv channels that fire (> 0)
  somewhere in the batch. A healthy tower keeps most of them; 0 is a dead tower.
* `score_max`: the highest class score (sigmoid) of any anchor in the batch.

At the end of the run the final model scores the last training batch in eval mode (as `rotld
evaluate` will): if no anchor reaches the test `score_thr`, the model "detects nothing" (and has
"collapsed" when its tower is dead, not merely undertrained). A logged
loss window above `EXPLODING_FACTOR` × the median of the windows before it is "exploding". The
verdicts go to `log.jsonl` (`{"event": "health", ...}`) and to `TrainResult.health`, which the
commands print last.
"""

from __future__ import annotations

import statistics
from collections.abc import Callable
from typing import Any

import torch
from mmcv.runner import Hook
from torch import nn

EXPLODING_FACTOR = 10.0
"""A log window's mean loss this many times the median of the earlier windows is an exploding loss."""
MIN_WINDOWS = 5
"""Windows needed before the median is trusted (warmup losses are noisy)."""
CLASSIFIER_NAMES = ("retina_cls", "conv_cls", "atss_cls", "fcos_cls")


def _head(model: nn.Module) -> nn.Module | None:
    module = model.module if hasattr(model, "module") else model
    return getattr(module, "bbox_head", None)


def _classifier(head: nn.Module) -> nn.Module | None:
    return next((getattr(head, name) for name in CLASSIFIER_NAMES if isinstance(getattr(head, name, None), nn.Module)),
                None)


def _score_thr(head: nn.Module) -> float | None:
    cfg = getattr(head, "test_cfg", None)
    value = cfg.get("score_thr") if cfg is not None else None
    return None if value is None else float(value)


class HeadHealthHook(Hook):
    """Watches the classification tower and the loss; see the module docstring.

    `record(event)` receives the log records (rank 0's `RunLog.record`, or None on other ranks);
    `verdicts` holds the end-of-run warnings (empty for a healthy run).
    """

    def __init__(self, record: Callable[[dict[str, Any]], None] | None = None, interval: int = 50) -> None:
        self.record = record
        self.interval = max(1, int(interval))  # the loss window: the progress log's interval
        self.verdicts: list[str] = []
        self._handles: list[Any] = []
        self._active: torch.Tensor | None = None
        self._score_max: torch.Tensor | None = None  # the best class logit of the iteration
        self._window: list[float] = []
        self._windows: list[float] = []
        self._last_batch: dict[str, Any] | None = None
        self._exploded_at: int | None = None

    # -- resume: the loss windows and any verdict so far travel in the checkpoint ---------------------
    def state_dict(self) -> dict[str, Any]:
        return {"window": list(self._window), "windows": list(self._windows), "exploded_at": self._exploded_at,
                "verdicts": list(self.verdicts)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self._window = [float(v) for v in state.get("window", [])]
        self._windows = [float(v) for v in state.get("windows", [])]
        self._exploded_at = state.get("exploded_at")
        self.verdicts = [str(v) for v in state.get("verdicts", [])]

    # -- hooks on the student's head -----------------------------------------------------------
    def before_run(self, runner) -> None:
        head = _head(runner.model)
        if head is None:
            return
        convs = getattr(head, "cls_convs", None)
        if isinstance(convs, nn.ModuleList) and len(convs):
            self._handles.append(convs[-1].register_forward_hook(self._tower_output))
        classifier = _classifier(head)
        if classifier is not None:
            self._handles.append(classifier.register_forward_hook(self._logits))

    def _tower_output(self, module, inputs, output: torch.Tensor) -> None:
        fired = (output.detach() > 0).flatten(2).any(dim=2).any(dim=0)
        self._active = fired if self._active is None else self._active | fired

    def _logits(self, module, inputs, output: torch.Tensor) -> None:
        best = output.detach().max().float()  # a tensor: one device sync per iteration, not one per FPN level
        self._score_max = best if self._score_max is None else torch.maximum(self._score_max, best)

    def before_train_iter(self, runner) -> None:
        self._active, self._score_max = None, None

    def after_train_iter(self, runner) -> None:
        log_vars = runner.outputs.setdefault("log_vars", {})
        if self._active is not None:
            log_vars["cls_active"] = float(self._active.float().mean())
        if self._score_max is not None:
            log_vars["score_max"] = float(self._score_max.sigmoid())
        self._last_batch = runner.data_batch if hasattr(runner, "data_batch") else None
        if "loss" in log_vars:
            self._window.append(float(log_vars["loss"]))
        if (runner.inner_iter + 1) % self.interval == 0 or runner.inner_iter + 1 == len(runner.data_loader):
            self._close_window(runner)

    def _close_window(self, runner) -> None:
        if not self._window:
            return
        mean = sum(self._window) / len(self._window)
        self._window = []
        if len(self._windows) >= MIN_WINDOWS and self._exploded_at is None:
            median = statistics.median(self._windows)
            if median > 0 and mean > EXPLODING_FACTOR * median:
                self._exploded_at = runner.iter + 1
                self._emit(runner, "exploding",
                           f"the loss exploded at iteration {runner.iter + 1}: {mean:.4g}, "
                           f"{mean / median:.0f}x the median of the earlier log windows ({median:.4g})")
        self._windows.append(mean)

    # -- the verdict -----------------------------------------------------------------------------
    def after_run(self, runner) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles = []
        head = _head(runner.model)
        threshold = None if head is None else _score_thr(head)
        if head is None or threshold is None or self._last_batch is None or runner.iter == 0:
            return
        best, active = self._eval_scores(runner, head)
        if best is None:
            return
        if best < threshold:
            dead = active is not None and active.startswith("0/")
            why = (f"its classification tower is dead ({active} channels active): the classifier collapsed; retrain "
                   "with another seed or a lower lr" if dead else
                   f"classification tower: {active} channels active; train longer, or check the data"
                   if active else "train longer, or check the data")  # fmt: skip
            self._emit(runner, "collapsed" if dead else "detects_nothing",
                       f"this model detects nothing: no anchor of the last training batch scores above the test "
                       f"threshold {threshold:g} (best {best:.4f}), so its evaluation gives AP 0; {why}")

    def _eval_scores(self, runner, head: nn.Module) -> tuple[float | None, str | None]:
        """Best class score of the last batch with the model in eval mode (as inference sees it)."""
        from mmcv.parallel import DataContainer

        img = self._last_batch.get("img")
        if isinstance(img, DataContainer):
            img = img.data[0]
        if not isinstance(img, torch.Tensor):
            return None, None
        module = runner.model.module if hasattr(runner.model, "module") else runner.model
        device = next(module.parameters()).device
        was_training = module.training
        module.eval()
        self._active, self._score_max = None, None
        last_conv = list(getattr(head, "cls_convs", None) or [])[-1:]
        handles = [conv.register_forward_hook(self._tower_output) for conv in last_conv]
        classifier = _classifier(head)
        if classifier is not None:
            handles.append(classifier.register_forward_hook(self._logits))
        try:
            with torch.no_grad():
                head(module.extract_feat(img.to(device)))
        finally:
            for handle in handles:
                handle.remove()
            module.train(was_training)
        active = None
        if self._active is not None:
            active = f"{int(self._active.sum())}/{self._active.numel()}"
        return (None if self._score_max is None else float(self._score_max.sigmoid())), active

    def _emit(self, runner, status: str, message: str) -> None:
        self.verdicts.append(message)
        if self.record is not None:
            self.record({"event": "health", "status": status, "epoch": runner.epoch, "iter": runner.iter,
                         "message": message})
