"""The one safe checkpoint loader (and file hashing), shared by publish, distill, evaluate and the engine.

A `.pth` file is a pickle: loading one with `weights_only=False` can run any code it holds.
We load with `weights_only=True` (tensors, containers, plain scalars) plus the harmless types
MMCV runners leave in `meta` (numpy scalars/arrays, e.g. `hook_msgs.best_score`, and datetimes),
which unpickle without calling arbitrary code: `SAFE_GLOBALS` is the one allow-list. A full
pickle needs an explicit `trust=True` or a `with trusted_checkpoints():` block
(`--trust-checkpoint`), and then we warn. Every failure maps to one RotldError line naming the
file (`torch_load`); the engine adapts mmcv's loaders to this function (engine/compat.py).

torch is imported inside the functions: importing this module stays cheap and never pulls in
mmcv, so commands that only hash or inspect files stay fast. Messages go through `logging`
(rendered by the CLI), never through the UI.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import re
import warnings
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Callable

from rotld_cli.errors import EngineMissingError, RotldError

TRUST_OPTION = "--trust-checkpoint"
_CHUNK = 1 << 20
_ANSI = re.compile(r"\x1b\[[0-9;]*m")
_TORCH_ENFORCE = re.compile(r"^\[enforce fail at [^\]]*\][\s.]*")
# torch words a refused global two ways: "Unsupported global: GLOBAL x.y" and
# "Trying to load unsupported GLOBAL posix.system whose module posix is blocked"
_UNSUPPORTED_GLOBAL = re.compile(r"unsupported global:? (?:GLOBAL )?([\w.]+)", re.I)
_WEIGHTS_UNPICKLER_DETAIL = re.compile(r"WeightsUnpickler error:\s*(.+?)(?:\n\s*\n|$)", re.S)
_WEIGHTS_ONLY_FAILED = "Weights only load failed"

log = logging.getLogger(__name__)
_trust_depth = 0


def sha256_file(path: str | os.PathLike[str]) -> str:
    """Hex SHA-256 of a file, read in 1 MiB chunks so large checkpoints never sit in memory twice."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(_CHUNK), b""):
            digest.update(chunk)
    return digest.hexdigest()


def safe_globals() -> list[Any]:
    """The allow-list: numpy scalars/arrays/dtypes and datetimes build data, they never run user code."""
    import datetime

    import numpy as np

    from rotld_cli.compat_libs import numpy_dtype_classes, numpy_pickle_globals

    names: list[Any] = [*numpy_pickle_globals(), np.ndarray, np.dtype, *numpy_dtype_classes()]
    return [*names, datetime.datetime, datetime.date, datetime.timedelta]


@contextlib.contextmanager
def trusted_checkpoints() -> Iterator[None]:
    """Inside this block every load unpickles everything (`weights_only=False`): trusted files only."""
    global _trust_depth
    _trust_depth += 1
    try:
        yield
    finally:
        _trust_depth -= 1


def checkpoints_trusted() -> bool:
    return _trust_depth > 0


def _first_line(exc: BaseException, limit: int = 160) -> str:
    text = _TORCH_ENFORCE.sub("", _ANSI.sub("", str(exc)).strip())
    line = text.splitlines()[0].strip() if text else type(exc).__name__
    return line if len(line) <= limit else line[: limit - 1] + "…"


def _unsafe_globals(torch: Any, path: Path | None, message: str) -> list[str]:
    """Every global the safe loader refuses (all of them for a local zip checkpoint, else the first one)."""
    lister = getattr(torch.serialization, "get_unsafe_globals_in_checkpoint", None)
    if lister is not None and path is not None and path.is_file():
        allowed = {g[1] if isinstance(g, tuple) else f"{g.__module__}.{g.__qualname__}" for g in safe_globals()}
        try:
            found = [g for g in lister(str(path)) if g not in allowed]
        except Exception:  # legacy, non-zip files: fall back to the error message
            found = []
        if found:
            return found
    return list(dict.fromkeys(_UNSUPPORTED_GLOBAL.findall(message)))


def _not_a_checkpoint(source: str, path: Path | None, exc: BaseException) -> RotldError:
    message = _ANSI.sub("", str(exc))
    match = _WEIGHTS_UNPICKLER_DETAIL.search(message)
    if isinstance(exc, EOFError):
        reason = "the file is empty or truncated"
    elif "central directory" in message:
        reason = "truncated or corrupt zip archive"
    elif path is not None and zipfile.is_zipfile(path):
        reason = f"a zip archive that torch.save did not write: {_first_line(exc)}"
    elif match:
        reason = f"pickle data that torch.save did not write: {' '.join(match.group(1).split())}"
    elif path is not None:
        reason = "neither a torch.save zip archive nor a legacy torch pickle"
    else:
        reason = _first_line(exc)
    return RotldError(f"{source}: not a PyTorch checkpoint ({reason})")


@contextlib.contextmanager
def _quiet_torch_warnings() -> Iterator[None]:
    """torch.load warns about pickle protocols and weights_only defaults: noise for our users."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=UserWarning, module=r"torch\.")
        warnings.filterwarnings("ignore", category=FutureWarning, module=r"torch\.")
        yield


def torch_load(load: Callable[..., Any], source: str | os.PathLike[str], *args: Any, trust: bool = False,
               **kwargs: Any) -> Any:
    """Call a torch loader (`torch.load`, `torch.hub.load_state_dict_from_url`) the safe way.

    `load(*args, weights_only=True, **kwargs)` under the allow-list, unless `trust` (or a
    `trusted_checkpoints()` block). Every failure becomes one RotldError line starting with
    `source`; a refused global is named, with the trust option to pass.
    """
    try:
        import torch
    except ImportError as exc:
        raise EngineMissingError(f"torch is not importable: {exc}") from exc
    local = Path(source) if "://" not in str(source) else None
    if trust or checkpoints_trusted():
        log.warning("%s: loading as a full pickle (%s); this can run any code the file holds", source, TRUST_OPTION)
        try:
            with _quiet_torch_warnings():
                return load(*args, weights_only=False, **kwargs)
        except (ImportError, AttributeError) as exc:
            raise RotldError(f"{source}: the checkpoint needs Python code that is not installed ({exc})") from exc
        except OSError as exc:
            raise RotldError(f"{source}: cannot read: {exc.strerror or exc}") from exc
        except Exception as exc:  # any unpickling failure means: not a checkpoint
            raise _not_a_checkpoint(str(source), local, exc) from exc
    try:
        with _quiet_torch_warnings(), torch.serialization.safe_globals(safe_globals()):
            return load(*args, weights_only=True, **kwargs)
    except OSError as exc:
        raise RotldError(f"{source}: cannot read: {exc.strerror or exc}") from exc
    except Exception as exc:  # classified below: unsafe content vs not a checkpoint
        message = _ANSI.sub("", str(exc))
        if _WEIGHTS_ONLY_FAILED in message or _UNSUPPORTED_GLOBAL.search(message):
            names = _unsafe_globals(torch, local, message)
            if names:
                raise RotldError(
                    f"{source}: holds Python objects that a safe load refuses ({', '.join(names)}); "
                    f"pass {TRUST_OPTION} only if you trust the file's source"
                ) from exc
        raise _not_a_checkpoint(str(source), local, exc) from exc


ONNX_HINT = (
    "an ONNX model, not a .pth checkpoint (give the .pth it was exported from; .onnx models run with `rotld predict`)"
)
_TAR_MAGIC_OFFSET = 257  # torch's oldest (tar) format: "ustar" at byte 257


def _looks_like_onnx(head: bytes) -> bool:
    """An ONNX protobuf opens with field 1 (ir_version, tag 0x08), then the producer's name."""
    return head[:1] == b"\x08" and any(name in head[:64] for name in (b"pytorch", b"onnx", b"tf2onnx", b"skl2onnx"))


def check_checkpoint_file(path: str | os.PathLike[str], what: str | None = None) -> Path:
    """What can be told about a checkpoint without torch (milliseconds, before the engine loads):
    it exists, is a file, is not an ONNX model, and is a torch.save zip archive or a pickle at all.

    The full check (what the pickle holds, the weights against the recipe) is `load_checkpoint_file`'s.
    `what` prefixes the message (e.g. "--teacher").
    """
    path = Path(path)
    prefix = f"{what}: {path}" if what else str(path)
    if not path.exists():
        raise RotldError(f"{prefix}: no such file")
    if not path.is_file():
        raise RotldError(f"{prefix}: not a file (expected a .pth checkpoint)")
    try:
        with open(path, "rb") as fh:
            head = fh.read(_TAR_MAGIC_OFFSET + 5)
    except OSError as exc:
        raise RotldError(f"{prefix}: cannot read: {exc.strerror or exc}") from None
    if path.suffix.lower() == ".onnx" or _looks_like_onnx(head):
        raise RotldError(f"{prefix}: {ONNX_HINT}")
    if not head:
        raise RotldError(f"{prefix}: not a PyTorch checkpoint (the file is empty)")
    if head[:4] == b"PK\x03\x04":
        try:
            with zipfile.ZipFile(path) as archive:
                names = archive.namelist()
        except (zipfile.BadZipFile, OSError):
            raise RotldError(f"{prefix}: not a PyTorch checkpoint (truncated or corrupt zip archive)") from None
        if not any(name == "data.pkl" or name.endswith("/data.pkl") for name in names):
            raise RotldError(f"{prefix}: not a PyTorch checkpoint (a zip archive that torch.save did not write)")
        return path
    if len(head) > 1 and head[0] == 0x80 and 2 <= head[1] <= 5:  # a pickle: PROTO and its number (torch legacy)
        return path
    if head[_TAR_MAGIC_OFFSET : _TAR_MAGIC_OFFSET + 5] == b"ustar":
        return path
    raise RotldError(f"{prefix}: not a PyTorch checkpoint (neither a torch.save zip archive nor a pickle)")


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
    return torch_load(torch.load, path, path, map_location="cpu", trust=trust)
