"""Errors the ledger raises; each message names what to do."""


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


class SchemaTooNewError(LedgerError):
    """The database was migrated by a newer version of the code."""


class NoLedgerError(LedgerError):
    """Opened for reading only (create=False) where there is no ledger: nothing was created."""
