"""Thread settings for torch's OpenMP pool, applied before torch is imported (the one place).

Why: OpenMP's default wait policy spins idle threads; on a busy machine (2 cores shared by
several processes) that made CPU training 10x slower. PASSIVE lets idle threads sleep. The
setting only takes effect if it is in the environment before the OpenMP runtime loads, so the
commands that train or infer, the engine loader, the tests and the benchmarks call `configure()`
first. A value the user exported wins.
"""

from __future__ import annotations

import os

DEFAULTS = {"OMP_WAIT_POLICY": "PASSIVE"}


def configure() -> None:
    """Set the defaults that are not already in the environment (call before importing torch)."""
    for name, value in DEFAULTS.items():
        os.environ.setdefault(name, value)
