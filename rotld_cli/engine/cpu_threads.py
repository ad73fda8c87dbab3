"""The training-side hook of `rotld_cli.threads.CpuShareGovernor`: torch's threads follow the free cores.

Only for a single CPU process (multi-process runs split the cores up front) and only when the
user did not fix `OMP_NUM_THREADS` or the wait policy. Each change is one `{"event": "threads"}`
record in `log.jsonl`; the thread count changes no result (torch's CPU kernels give the same
values for any thread count up to float summation order, which the tests do not depend on).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from mmcv.runner import Hook

from rotld_cli.threads import CpuShareGovernor


class CpuShareHook(Hook):
    def __init__(self, record: Callable[[dict[str, Any]], None] | None = None, interval_s: float = 10.0) -> None:
        self.record = record
        self.interval_s = interval_s
        self.governor: CpuShareGovernor | None = None

    def before_run(self, runner) -> None:
        self.governor = CpuShareGovernor(torch.set_num_threads, torch.get_num_threads(), self.interval_s)

    def after_train_iter(self, runner) -> None:
        changed = self.governor.poll() if self.governor is not None else None
        if changed is not None and self.record is not None:
            self.record({"event": "threads", "epoch": runner.epoch + 1, "iter": runner.iter + 1, "threads": changed})

    def after_run(self, runner) -> None:
        if self.governor is not None and self.governor.threads != self.governor.max_threads:
            torch.set_num_threads(self.governor.max_threads)  # the process goes on (evaluation, the next run)
