"""numpy 1/2 and OpenCV 4/5: every call whose name or place differs between them, and the tested ranges.

rotld runs on numpy 1.23 … 2.x and OpenCV 4.5 … 5.x. Where those releases disagree (OpenCV 5 moved
`cv2.setLogLevel` to `cv2.utils.logging`; numpy 2 renamed `numpy.core` to `numpy._core`, the name
pickles and torch's weights-only loader see), the call goes through this module, so one test per
function covers every caller and a new break shows up here. `TESTED` holds the version ranges the
suites ran on; the installer (`bootstrap --system-torch`) refuses others unless overridden.

Standard library only at import: the bootstrap reads `TESTED` before numpy or OpenCV exist, and the
engine-free commands stay cheap to start. numpy and cv2 are imported inside the functions.
"""

from __future__ import annotations

import re
from types import ModuleType
from typing import Any

# name -> (lowest, highest) release, inclusive, as (major, minor); a None minor means "any minor".
# Their ends were run (README, Versions): the default environment (Python 3.11, torch 2.14.1, numpy 1.26,
# OpenCV 4.11), the numpy 2 / OpenCV 5 overlay (`make test-numpy2`: the newest the index serves),
# Python 3.12 (`make PYTHON=python3.12 test`), numpy 1.23.5 + OpenCV 4.5.5 (the tests not marked
# slow), a GPU machine's torch 2.11 + torchvision 0.26 (the CUDA mmcv-full build).
TESTED: dict[str, tuple[tuple[int, int | None], tuple[int, int | None]]] = {
    "Python": ((3, 11), (3, 12)),
    "torch": ((2, 11), (2, 14)),
    "torchvision": ((0, 26), (0, 29)),
    "numpy": ((1, 23), (2, None)),
    "OpenCV": ((4, 5), (5, None)),
}
NUMPY_CORE_NAMES = ("numpy.core", "numpy._core")
"""numpy 1's and numpy 2's name of its core package, as pickled checkpoints record them."""


def release(version: str) -> tuple[int, int]:
    """(major, minor) of a version string: '2.14.1+cu130' -> (2, 14), '5.1.0-pre' -> (5, 1)."""
    match = re.match(r"\s*(\d+)(?:\.(\d+))?", version)
    if not match:
        raise ValueError(f"cannot read the version {version!r}")
    return int(match.group(1)), int(match.group(2) or 0)


def _bound(version: tuple[int, int | None]) -> str:
    return f"{version[0]}.{'x' if version[1] is None else version[1]}"


def range_label(name: str) -> str:
    """'2.11 … 2.14' for `TESTED[name]`."""
    low, high = TESTED[name]
    return f"{_bound(low)} … {_bound(high)}"


def is_tested(name: str, version: str) -> bool:
    """Whether `version` of `name` lies in `TESTED[name]` (a None minor bound accepts every minor)."""
    low, high = TESTED[name]
    major, minor = release(version)
    above = (major, minor) >= (low[0], low[1] or 0)
    below = major < high[0] or (major == high[0] and (high[1] is None or minor <= high[1]))
    return above and below


# ------------------------------------------------------------------------------------------ numpy


def numpy_major() -> int:
    import numpy as np

    return release(np.__version__)[0]


def numpy_core_name() -> str:
    """How this numpy names its core package in pickles and messages: 'numpy.core' (1.x), 'numpy._core' (2.x)."""
    return NUMPY_CORE_NAMES[1] if numpy_major() >= 2 else NUMPY_CORE_NAMES[0]


def numpy_has_int_alias() -> bool:
    """Whether `np.int` (and `np.float`, `np.bool`, ...) still exist: deprecated in 1.20, removed in 1.24.

    mmdet 2.28 still calls `np.int`; engine/compat.py replaces those calls on every numpy.
    """
    import warnings

    import numpy as np

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        return hasattr(np, "int")


def numpy_multiarray() -> ModuleType:
    """numpy's `multiarray` module (home of `scalar` and `_reconstruct`), without numpy 2's deprecated alias."""
    import importlib

    return importlib.import_module(f"{numpy_core_name()}.multiarray")


def numpy_dtype_classes() -> list[type]:
    """Every dtype class (`Float64DType`, ...): `numpy.dtypes` since 1.25, reachable through instances before."""
    import numpy as np

    module = getattr(np, "dtypes", None)
    if module is not None:
        return [getattr(module, n) for n in dir(module) if n.endswith("DType")]
    kinds = (np.bool_, np.int8, np.int16, np.int32, np.int64, np.uint8, np.float16, np.float32, np.float64, np.str_)
    return sorted({type(np.dtype(t)) for t in kinds}, key=lambda c: c.__name__)


def numpy_pickle_globals() -> list[Any]:
    """The numpy callables a pickled array or scalar refers to, under numpy 1's and numpy 2's names both.

    torch's weights-only loader matches a global by the name in the file; a checkpoint saved under
    numpy 1 says `numpy.core.multiarray.scalar`, one saved under numpy 2 `numpy._core.multiarray.scalar`.
    (object, name) pairs let either load under either numpy.
    """
    multiarray = numpy_multiarray()
    return [multiarray.scalar, multiarray._reconstruct] + [
        (getattr(multiarray, fn), f"{core}.multiarray.{fn}")
        for fn in ("scalar", "_reconstruct")
        for core in NUMPY_CORE_NAMES
    ]


# ----------------------------------------------------------------------------------------- OpenCV


def _opencv_logging() -> Any:
    """Where this OpenCV keeps `setLogLevel`: `cv2` (4.x), `cv2.utils.logging` (5.x), or None."""
    import cv2

    logging = getattr(getattr(cv2, "utils", None), "logging", None)
    for owner in (logging, cv2):
        if owner is not None and hasattr(owner, "setLogLevel") and hasattr(owner, "getLogLevel"):
            return owner
    return None


def set_opencv_log_level(level: int) -> bool:
    """Set OpenCV's own log level (0 silent … 6 verbose, the same numbers in 4.x and 5.x); False if it has none."""
    owner = _opencv_logging()
    if owner is None:  # a future OpenCV without either: its log stays on, nothing else changes
        return False
    owner.setLogLevel(level)
    return True


def opencv_log_level() -> int | None:
    """OpenCV's current log level, read where this OpenCV keeps it (None if it has none)."""
    owner = _opencv_logging()
    return None if owner is None else int(owner.getLogLevel())


def silence_opencv_log() -> None:
    """Keep libpng's 'broken PNG' warnings off stderr: rotld's callers report a bad file once, themselves."""
    set_opencv_log_level(0)
