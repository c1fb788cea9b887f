"""A small append-only event store with a hash chain, on SQLite or PostgreSQL.

It knows nothing about images: streams of typed JSON events, a global order, optimistic
concurrency per stream, checkpoints for projections, and `verify` for the chain.

`open_store` opens a ledger for writing: PostgreSQL through SQLAlchemy, a SQLite ledger through
the standard library's sqlite3 once it exists at this code's schema head (see ledger.opening).
`open_reader` gives read-only access; on SQLite it uses the standard library alone too.
"""

from typing import TYPE_CHECKING, Any

from ledger.errors import ConcurrencyError, LedgerError, NoLedgerError, SchemaTooNewError
from ledger.events import IDENTITY_STREAM, NewEvent, RecordedEvent, identity_of
from ledger.reader import SqliteReader, open_reader

if TYPE_CHECKING:
    from ledger.chain import Head, VerifyReport
    from ledger.opening import open_store
    from ledger.sqlite_store import SqliteStore
    from ledger.store import EventStore, open_scratch

# Imported on first use: `ledger.store` imports SQLAlchemy, which a SQLite ledger at head never
# needs (ledger.opening picks the store).
_LAZY = {
    "EventStore": "ledger.store",
    "open_scratch": "ledger.store",
    "SqliteStore": "ledger.sqlite_store",
    "Head": "ledger.chain",
    "VerifyReport": "ledger.chain",
    "open_store": "ledger.opening",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
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
    "SqliteStore",
    "VerifyReport",
    "identity_of",
    "open_reader",
    "open_scratch",
    "open_store",
]
