"""A small append-only event store with a hash chain, on SQLite or PostgreSQL through SQLAlchemy.

It knows nothing about images: streams of typed JSON events, a global order, optimistic
concurrency per stream, checkpoints for projections, and `verify` for the chain.

`open_reader` gives read-only access; on SQLite it uses the standard library alone, so
read-only commands start without importing SQLAlchemy.
"""

from typing import TYPE_CHECKING, Any

from ledger.errors import ConcurrencyError, LedgerError, NoLedgerError, SchemaTooNewError
from ledger.events import IDENTITY_STREAM, NewEvent, RecordedEvent, identity_of
from ledger.reader import SqliteReader, open_reader

if TYPE_CHECKING:
    from ledger.store import EventStore, Head, VerifyReport, open_scratch, open_store

_LAZY = {"EventStore", "Head", "VerifyReport", "open_store", "open_scratch"}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        from ledger import store

        return getattr(store, name)
    raise AttributeError(name)


__all__ = [
    "IDENTITY_STREAM",
    "ConcurrencyError",
    "EventStore",
    "Head",
    "LedgerError",
    "NoLedgerError",
    "NewEvent",
    "RecordedEvent",
    "SchemaTooNewError",
    "SqliteReader",
    "VerifyReport",
    "identity_of",
    "open_reader",
    "open_scratch",
    "open_store",
]
