"""Errors a user can act on: rendered as one line, never as a traceback (unless --debug)."""

from __future__ import annotations

import errno
import os
from pathlib import Path


class RotldError(Exception):
    """A problem with the user's input or environment; the message names the file/line/option."""

    exit_code = 1


class UsageError(RotldError):
    """Wrong or conflicting options."""

    exit_code = 2


class NotAvailableError(RotldError):
    """A command or feature that this installation cannot run (yet)."""

    exit_code = 2


class EngineMissingError(RotldError):
    """The MMRotate engine (torch, mmcv-full, mmdet, mmrotate) is not importable."""

    exit_code = 3

    def __init__(self, detail: str) -> None:
        super().__init__(
            f"the training engine is not installed ({detail}); run `make setup` "
            "(or `python3 -m rotld_cli.bootstrap`) and use .venv/bin/rotld"
        )


def located(path: object, line: int | None, message: str) -> str:
    """Format 'file:line: message' the way compilers do, so editors can jump there."""
    where = printable(str(path))
    return f"{where}:{line}: {message}" if line is not None else f"{where}: {message}"


def printable(text: str) -> str:
    """`text` with control and undecodable characters escaped (`\\t`, `\\udcff`), so a file name
    holding a newline or invalid UTF-8 still prints as one line on any terminal."""
    if text.isprintable():
        return text
    return "".join(ch if ch.isprintable() else repr(ch)[1:-1] for ch in text)


# What an ordinary file-system mistake means, in the words a user would look for.
_OS_REASONS = {
    errno.EEXIST: "already exists",
    errno.EISDIR: "is a folder, but a file is needed here",
    errno.EACCES: "permission denied",
    errno.EPERM: "operation not permitted (a system or protected location?)",
    errno.EROFS: "read-only file system",
    errno.ENOSPC: "no space left on the device",
    errno.EDQUOT: "disk quota exceeded",
    errno.ENAMETOOLONG: "file name too long",
    errno.ELOOP: "too many levels of symbolic links",
}


def describe_os_error(exc: OSError, path: os.PathLike[str] | str | None = None) -> str | None:
    """One line naming the path and what is wrong with it, for an OSError a user can cause
    (an output that is a file or a folder, a path under /proc, no permission, a full disk);
    None when the error names no file (then it is not the user's path that is wrong).
    `path` replaces the error's own file name (e.g. a temp file beside the user's output)."""
    where = path if path is not None else (exc.filename2 if exc.errno == errno.EEXIST and exc.filename2 else None)
    where = where if where is not None else exc.filename
    if where is None:
        return None
    where = os.fsdecode(where) if isinstance(where, bytes) else str(where)
    if exc.errno == errno.EEXIST and Path(where).is_file():
        reason = "is a file, but a folder is needed here"
    elif exc.errno == errno.ENOTDIR:
        blocker = _first_file_ancestor(Path(where))
        reason = f"{printable(str(blocker))} is a file, not a folder" if blocker else "not a folder"
    elif exc.errno == errno.ENOENT:
        parent = Path(where).parent
        reason = "no such file or folder"
        if parent.is_dir():
            reason += f" (and it cannot be created in {printable(str(parent))})" if _is_pseudo_fs(parent) else ""
    else:
        reason = _OS_REASONS.get(exc.errno, exc.strerror.lower() if exc.strerror else str(exc) or type(exc).__name__)
    return located(where, None, reason)


def _first_file_ancestor(path: Path) -> Path | None:
    for candidate in [*reversed(path.parents), path]:
        if candidate.exists() and not candidate.is_dir():
            return candidate
    return None


def _is_pseudo_fs(path: Path) -> bool:
    """/proc, /sys and /dev hold the kernel's files: nothing can be written there."""
    parts = path.resolve().parts
    return len(parts) > 1 and parts[1] in ("proc", "sys", "dev")
