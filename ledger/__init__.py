"""A small append-only event store with a hash chain, on SQLite or PostgreSQL through SQLAlchemy.

It knows nothing about images: streams of typed JSON events, a global order, optimistic
concurrency per stream, checkpoints for projections, and `verify` for the chain.
"""

from ledger.errors import ConcurrencyError, LedgerError, SchemaTooNewError
from ledger.events import NewEvent, RecordedEvent
from ledger.store import EventStore, Head, VerifyReport, open_store

__all__ = [
    "ConcurrencyError",
    "EventStore",
    "Head",
    "LedgerError",
    "NewEvent",
    "RecordedEvent",
    "SchemaTooNewError",
    "VerifyReport",
    "open_store",
]
