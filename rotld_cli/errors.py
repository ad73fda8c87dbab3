"""Errors a user can act on: rendered as one line, never as a traceback (unless --debug)."""

from __future__ import annotations


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
