"""Placeholder for commands whose issue has not landed yet: a clear message, exit code 2."""

from __future__ import annotations

from rotld_cli.errors import NotAvailableError


def not_available(command: str, what: str) -> None:
    raise NotAvailableError(f"`rotld {command}` is not available yet: {what}")
