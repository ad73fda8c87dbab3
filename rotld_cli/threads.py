"""CPU threads for torch's OpenMP pool: spin alone, shrink to the free cores when others are busy.

Why: between two parallel regions libgomp's idle threads spin for a moment (its default) before
they sleep. For a training alone on its cores that spin is what keeps the many small ops of a step
fast (`OMP_WAIT_POLICY=PASSIVE` made the demo teacher's step 1.5x slower). Next to other busy
processes the same spin is ruinous: a thread spins on a core another process needs while the
thread it waits for is descheduled; one busy neighbour on 2 cores made an epoch 2.9x slower
(losing one of two cores should cost 2x). `python -m bench.threads` measures the policies side by
side; the commands use the one that came out best:

* the default (spinning) wait policy, and
* `CpuShareGovernor`: every few seconds it measures how much CPU *other* processes used
  (`/proc/stat` minus this process's own time) and sets torch's thread count to the cores left
  free (at least 1, at most the count it started with). One thread has no team to wait for, so
  nothing spins in vain; when the neighbours go, the threads come back.

The test suite still sets PASSIVE (`share_cpu`), where pytest and the trainings it starts share
the cores. Multi-process CPU training gets `cores / nproc` threads per process
(`engine.dist.launch`) and no governor. A value the user exported wins everywhere:
`OMP_NUM_THREADS` turns the governor off.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable

SHARED_CPU = {"OMP_WAIT_POLICY": "PASSIVE"}
CLOCK_TICKS = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def share_cpu() -> None:
    """Idle OpenMP threads sleep at once (call before importing torch, in a process that shares the cores)."""
    for name, value in SHARED_CPU.items():
        os.environ.setdefault(name, value)


def usable_cores() -> int:
    """Cores this process may run on (its affinity mask, else the machine's count)."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def _busy_ticks() -> int | None:
    """Busy clock ticks of all CPUs since boot (`/proc/stat`: everything but idle and iowait)."""
    try:
        with open("/proc/stat", encoding="ascii") as fh:
            fields = fh.readline().split()
    except OSError:
        return None
    if not fields or fields[0] != "cpu":
        return None
    values = [int(v) for v in fields[1:]]
    return sum(values) - values[3] - (values[4] if len(values) > 4 else 0) - sum(values[8:10])  # minus guest (in user)


def _own_ticks() -> int | None:
    """User + system ticks of this process, all threads (`/proc/self/stat` fields 14 and 15)."""
    try:
        with open("/proc/self/stat", encoding="ascii") as fh:
            text = fh.read()
    except OSError:
        return None
    fields = text[text.rindex(")") + 2:].split()
    return int(fields[11]) + int(fields[12])


class CpuShareGovernor:
    """Sets the thread count to the cores other processes leave free, measured over each interval.

    `set_threads(n)` applies a new count (torch.set_num_threads in training). `poll()` is cheap
    (two small /proc reads) and does nothing until `interval_s` has passed since the last sample.
    Without /proc (not Linux) it never changes anything.
    """

    def __init__(self, set_threads: Callable[[int], None], max_threads: int, interval_s: float = 10.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.set_threads = set_threads
        self.max_threads = max(1, int(max_threads))
        self.threads = self.max_threads
        self.interval_s = interval_s
        self.clock = clock
        self.cores = usable_cores()
        self._sample = self._read()

    def _read(self) -> tuple[float, int, int] | None:
        busy, own = _busy_ticks(), _own_ticks()
        return None if busy is None or own is None else (self.clock(), busy, own)

    def others_cores(self, previous: tuple[float, int, int], now: tuple[float, int, int]) -> float:
        """Cores' worth of CPU time the other processes used between two samples."""
        seconds = max(now[0] - previous[0], 1e-9)
        others = (now[1] - previous[1]) - (now[2] - previous[2])
        return max(0.0, others / CLOCK_TICKS / seconds)

    def threads_for(self, others: float) -> int:
        """The free cores, rounded to the nearest whole core, between 1 and `max_threads`."""
        free = self.cores - others
        return max(1, min(self.max_threads, int(free + 0.5)))

    def poll(self) -> int | None:
        """Re-measure if the interval has passed; returns the new thread count when it changed."""
        if self._sample is None or self.clock() - self._sample[0] < self.interval_s:
            return None
        now = self._read()
        if now is None:
            return None
        wanted = self.threads_for(self.others_cores(self._sample, now))
        self._sample = now
        if wanted == self.threads:
            return None
        self.threads = wanted
        self.set_threads(wanted)
        return wanted


def governor_wanted(environ: dict[str, str] | os._Environ = os.environ) -> bool:
    """The governor runs unless the user fixed the thread count or the wait policy themselves."""
    return "OMP_NUM_THREADS" not in environ and environ.get("OMP_WAIT_POLICY", "").upper() != "PASSIVE"
