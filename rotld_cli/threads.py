"""Thread settings for torch's OpenMP pool, applied before torch is imported.

Why two policies: between two parallel regions libgomp's idle threads spin for a moment (its
default) before they sleep. For one training on its own cores that spin is what keeps the many
small ops of a step fast: the demo teacher's CPU step takes 0.80-1.0 s with it and 1.14-1.57 s with
`OMP_WAIT_POLICY=PASSIVE` (threads sleep at once and pay a wake-up per op), so the commands keep
the default. When several processes that each hold a pool share the cores (the test suite:
pytest and the trainings it starts), spinning threads take the cores the others need, which made
the training tests 10x slower: `share_cpu()` makes idle threads sleep there. Multi-process CPU
training needs neither: each process gets `cores / nproc` threads (`engine.dist.launch`).
A value the user exported wins.
"""

from __future__ import annotations

import os

SHARED_CPU = {"OMP_WAIT_POLICY": "PASSIVE"}


def share_cpu() -> None:
    """Idle OpenMP threads sleep at once (call before importing torch, in a process that shares the cores)."""
    for name, value in SHARED_CPU.items():
        os.environ.setdefault(name, value)
