"""Errors the ledger raises; each message names what to do."""

from __future__ import annotations

import sys
from typing import Any


class LedgerError(Exception):
    """Base class for ledger errors."""


class ConcurrencyError(LedgerError):
    """Another writer appended to the stream after the caller read it."""

    def __init__(self, stream_id: str, expected: int | None, actual: int) -> None:
        super().__init__(
            f"stream {stream_id!r} is at version {actual}, not {expected}: "
            "another writer got there first; re-read the stream and decide again"
        )
        self.stream_id, self.expected, self.actual = stream_id, expected, actual


class ProtectedStreamError(LedgerError):
    """An append to a protected stream (`EventStore.protect_streams`) by a role that is not
    the ledger's owner, refused by the database (PostgreSQL); the message names the owner."""


class SchemaTooNewError(LedgerError):
    """The database was migrated by a newer version of the code."""


class NoLedgerError(LedgerError):
    """Opened for reading only (create=False) where there is no ledger: nothing was created."""


# Error classification for callers (the CLI) without importing SQLAlchemy: a store raises
# SQLAlchemy's errors, so if SQLAlchemy was never imported, no store error can be one.


def _sa_exc() -> Any:
    return sys.modules.get("sqlalchemy.exc")


def database_error(exc: BaseException | None) -> bool:
    """Did the database (not the caller's code) raise this?"""
    sa = _sa_exc()
    return sa is not None and isinstance(exc, sa.SQLAlchemyError)


def open_failure(exc: BaseException) -> bool:
    """Is this why a ledger could not be opened (rather than a bug)?"""
    sa = _sa_exc()
    return isinstance(exc, LedgerError | OSError) or (
        sa is not None and isinstance(exc, sa.DBAPIError | sa.ArgumentError)
    )


def cannot_write(exc: BaseException) -> bool:
    """A database error saying this process may not write the ledger's file or directory."""
    text = str(getattr(exc, "orig", None) or exc).lower()
    return database_error(exc) and any(
        s in text for s in ("readonly", "read-only", "permission denied", "unable to open")
    )
