"""Safe checkpoint loading and file hashing, shared by publish, distill and evaluate.

A `.pth` file is a pickle: loading one with `weights_only=False` can run any code it holds.
We load with `weights_only=True` (tensors, containers, plain scalars) plus numpy scalars and
arrays, which MMCV runners leave in `meta` (e.g. `hook_msgs.best_score`) and which unpickle
without calling arbitrary code. A full pickle needs an explicit `trust=True`
(`--trust-checkpoint`), and then we warn.

torch is imported inside the functions: importing this module stays cheap and never pulls in
mmcv, so commands that only hash or inspect files stay fast.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import warnings
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from rotld_cli import ui
from rotld_cli.errors import EngineMissingError, RotldError

TRUST_OPTION = "--trust-checkpoint"
_CHUNK = 1 << 20
_ANSI = re.compile(r"\x1b\[[0-9;]*m")
_TORCH_ENFORCE = re.compile(r"^\[enforce fail at [^\]]*\][\s.]*")
_UNSUPPORTED_GLOBAL = re.compile(r"Unsupported global: GLOBAL ([\w.]+)")
_WEIGHTS_UNPICKLER_DETAIL = re.compile(r"WeightsUnpickler error:\s*(.+?)(?:\n\s*\n|$)", re.S)


def sha256_file(path: str | os.PathLike[str]) -> str:
    """Hex SHA-256 of a file, read in 1 MiB chunks so large checkpoints never sit in memory twice."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(_CHUNK), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _numpy_safe_globals() -> list[Any]:
    """The numpy callables a pickled numpy scalar/array needs; they build data, never run user code."""
    import numpy as np

    names = [np.core.multiarray.scalar, np.core.multiarray._reconstruct, np.ndarray, np.dtype]
    dtypes_module = getattr(np, "dtypes", None)
    if dtypes_module is not None:
        names += [getattr(dtypes_module, n) for n in dir(dtypes_module) if n.endswith("DType")]
    return names


def _first_line(exc: BaseException, limit: int = 160) -> str:
    text = _TORCH_ENFORCE.sub("", _ANSI.sub("", str(exc)).strip())
    line = text.splitlines()[0].strip() if text else type(exc).__name__
    return line if len(line) <= limit else line[: limit - 1] + "…"


def _unsafe_globals(torch: Any, path: Path, message: str) -> list[str]:
    """Every global the safe loader refuses (all of them for zip checkpoints, else the first one)."""
    lister = getattr(torch.serialization, "get_unsafe_globals_in_checkpoint", None)
    if lister is not None:
        allowed = {f"{g.__module__}.{g.__qualname__}" for g in _numpy_safe_globals()}
        try:
            found = [g for g in lister(str(path)) if g not in allowed]
        except Exception:  # legacy, non-zip files: fall back to the error message
            found = []
        if found:
            return found
    return _UNSUPPORTED_GLOBAL.findall(_ANSI.sub("", message))


def _not_a_checkpoint(path: Path, exc: BaseException) -> RotldError:
    message = _ANSI.sub("", str(exc))
    match = _WEIGHTS_UNPICKLER_DETAIL.search(message)
    if isinstance(exc, EOFError):
        reason = "the file is empty or truncated"
    elif "central directory" in message:
        reason = "truncated or corrupt zip archive"
    elif zipfile.is_zipfile(path):
        reason = f"a zip archive that torch.save did not write: {_first_line(exc)}"
    elif match:
        reason = f"pickle data that torch.save did not write: {' '.join(match.group(1).split())}"
    else:
        reason = "neither a torch.save zip archive nor a legacy torch pickle"
    return RotldError(f"{path}: not a PyTorch checkpoint ({reason})")


@contextlib.contextmanager
def _quiet_torch_warnings() -> Iterator[None]:
    """torch.load warns about pickle protocols and weights_only defaults: noise for our users."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=UserWarning, module=r"torch\.")
        warnings.filterwarnings("ignore", category=FutureWarning, module=r"torch\.")
        yield


def load_checkpoint_file(path: str | os.PathLike[str], trust: bool = False) -> Any:
    """Load a checkpoint onto the CPU; every failure is a one-line RotldError naming the file.

    Without `trust` only tensors, containers, plain scalars and numpy data load: a file holding
    other Python objects is refused with a message that suggests `--trust-checkpoint`.
    """
    path = Path(path)
    if not path.exists():
        raise RotldError(f"{path}: no such file")
    if not path.is_file():
        raise RotldError(f"{path}: not a file (expected a .pth checkpoint)")
    try:
        import torch
    except ImportError as exc:
        raise EngineMissingError(f"torch is not importable: {exc}") from exc

    if trust:
        ui.warn(f"{path}: loading as a full pickle ({TRUST_OPTION}); this can run any code the file holds")
        try:
            with _quiet_torch_warnings():
                return torch.load(path, map_location="cpu", weights_only=False)
        except (ImportError, AttributeError) as exc:
            raise RotldError(f"{path}: the checkpoint needs Python code that is not installed ({exc})") from exc
        except OSError as exc:
            raise RotldError(f"{path}: cannot read: {exc.strerror or exc}") from exc
        except Exception as exc:  # any unpickling failure means: not a checkpoint
            raise _not_a_checkpoint(path, exc) from exc

    allow = getattr(torch.serialization, "safe_globals", None)
    try:
        with _quiet_torch_warnings(), allow(_numpy_safe_globals()) if allow else contextlib.nullcontext():
            return torch.load(path, map_location="cpu", weights_only=True)
    except OSError as exc:
        raise RotldError(f"{path}: cannot read: {exc.strerror or exc}") from exc
    except Exception as exc:  # classified below: unsafe content vs not a checkpoint
        if "Unsupported global" in str(exc):
            names = _unsafe_globals(torch, path, str(exc))
            raise RotldError(
                f"{path}: holds Python objects that a safe load refuses ({', '.join(names)}); "
                f"pass {TRUST_OPTION} only if you trust the file's source"
            ) from exc
        raise _not_a_checkpoint(path, exc) from exc
