"""Fault injection for the resume tests: kill or signal this process at an exact point of a run.

Why in the product: "kill -9 while a checkpoint is being written" or "SIGTERM before iteration 7"
cannot be hit reliably from outside (timing luck); the tests set `ROTLD_FAULT` instead and the
training code calls `fire(point, n)` where such a point is. Unset (always, outside the tests),
`fire` is one dict lookup.

`ROTLD_FAULT` holds `ACTION:POINT:N[:RANK]` items separated by `;`:

- ACTION: `kill` (SIGKILL: no handler, no cleanup) or a signal name (`SIGTERM`, `SIGUSR1`, `SIGINT`),
  sent by this process to itself;
- POINT and N: `iter` N (just before global iteration N, counted from 1, trains), `save` N (the
  N-th checkpoint file this run writes, after the temporary file is complete and before it is
  renamed into place), `eval` N (inside this run's N-th validation);
- RANK: only the process of that rank (default: every process).
"""

from __future__ import annotations

import os
import signal
from collections import Counter
from dataclasses import dataclass

FAULT_ENV = "ROTLD_FAULT"
POINTS = ("iter", "save", "eval")


@dataclass(frozen=True)
class Fault:
    action: str
    point: str
    count: int
    rank: int | None = None


def parse(text: str) -> list[Fault]:
    """The faults of a `ROTLD_FAULT` value; ValueError names a malformed item."""
    faults = []
    for item in filter(None, (part.strip() for part in text.split(";"))):
        fields = item.split(":")
        try:
            action, point, count = fields[0], fields[1], int(fields[2])
            rank = int(fields[3]) if len(fields) > 3 else None
        except (IndexError, ValueError):
            raise ValueError(f"{FAULT_ENV}: {item!r} is not ACTION:POINT:N[:RANK]") from None
        if point not in POINTS or len(fields) > 4 or not (action == "kill" or hasattr(signal, action)):
            raise ValueError(f"{FAULT_ENV}: {item!r}: ACTION is kill or a signal name, POINT one of {POINTS}")
        faults.append(Fault(action, point, count, rank))
    return faults


_seen: Counter[str] = Counter()


def reset() -> None:
    """A run starts: `save` and `eval` count from 1 again."""
    _seen.clear()


def fire(point: str, count: int | None = None) -> None:
    """Act on the faults set for `point`; `count` defaults to how often this process reached it."""
    text = os.environ.get(FAULT_ENV)
    if not text:
        return
    _seen[point] += 1
    count = _seen[point] if count is None else count
    rank = int(os.environ.get("RANK", 0))
    for fault in parse(text):
        if fault.point == point and fault.count == count and fault.rank in (None, rank):
            os.kill(os.getpid(), signal.SIGKILL if fault.action == "kill" else getattr(signal, fault.action))
