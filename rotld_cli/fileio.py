"""Atomic writes: a crash or kill never leaves a half-written file under the final name."""

from __future__ import annotations

import contextlib
import errno
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
