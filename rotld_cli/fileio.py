"""Atomic writes (a crash or kill never leaves a half-written file under the final name), and what
resumable runs share: the output folder's lock, source-file signatures, completion markers."""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

from rotld_cli.errors import RotldError, describe_os_error, located


@contextlib.contextmanager
def atomic_path(final: str | os.PathLike[str], suffix: str | None = None) -> Iterator[Path]:
    """Yield a temporary path beside ``final``; rename it onto ``final`` only on success.

    The temp file keeps the final suffix (encoders such as cv2.imwrite choose the format by it).
    """
    final = Path(final)
    if final.is_dir():
        raise RotldError(located(final, None, "is a folder, but a file is needed here"))
    final.parent.mkdir(parents=True, exist_ok=True)
    try:
        fd, tmp = tempfile.mkstemp(
            prefix=f".{final.name}.", suffix=suffix if suffix is not None else final.suffix, dir=final.parent
        )
    except OSError as exc:
        raise _output_error(exc, final) from exc
    os.close(fd)
    os.chmod(tmp, 0o666 & ~_umask())  # mkstemp creates 0600; final files get the usual permissions
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        os.replace(tmp_path, final)
    except OSError as exc:
        if exc.filename not in (None, tmp, str(final)) and exc.errno not in (errno.ENOSPC, errno.EDQUOT):
            raise  # about another file the caller touched: not ours to rename
        raise _output_error(exc, final) from exc
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


def _output_error(exc: OSError, final: Path) -> RotldError:
    """The error names the user's output, never the hidden temp file beside it."""
    return RotldError(describe_os_error(exc, final) or located(final, None, f"cannot write ({exc})"))


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write_bytes(final: str | os.PathLike[str], data: bytes) -> None:
    with atomic_path(final) as tmp:
        with open(tmp, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())


def atomic_write_text(final: str | os.PathLike[str], text: str) -> None:
    atomic_write_bytes(final, text.encode("utf-8"))


@contextlib.contextmanager
def exclusive_lock(lock_path: Path, busy: str) -> Iterator[None]:
    """Hold an exclusive `flock` on `lock_path` (created with its folder); `RotldError(busy)` when another
    process holds it: two runs writing into one output folder (prepare-dota's OUT, convert's DST)."""
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    with open(lock_path, "w") as fh:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            raise RotldError(busy) from None
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def file_signature(path: Path | None) -> list[int] | None:
    """(size, mtime_ns) of a source file: a changed source invalidates what a run made from it."""
    if path is None or not path.exists():
        return None
    st = path.stat()
    return [st.st_size, st.st_mtime_ns]


def read_json_object(path: Path) -> dict | None:
    """A JSON object from a file a run wrote (a completion marker), None when absent or unreadable."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None
