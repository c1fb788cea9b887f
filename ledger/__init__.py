"""A small append-only event store with a hash chain, on SQLite or PostgreSQL.

It knows nothing about images: streams of typed JSON events, a global order, optimistic
concurrency per stream, checkpoints for projections, and `verify` for the chain.

`open_store` opens a ledger (ledger/store.py: one implementation over SQLAlchemy Core, the
engines' differences in ledger/dialects/); `open_reader` is the same store opened for reading
only. `ledger.interface.Store` and `Reader` declare what callers may rely on. Importing this
package is cheap: SQLAlchemy is imported when a store is opened.
"""

from typing import TYPE_CHECKING, Any

from ledger.errors import (
    ConcurrencyError,
    LedgerError,
    NoLedgerError,
    ProtectedStreamError,
    SchemaTooNewError,
)
from ledger.events import IDENTITY_STREAM, NewEvent, RecordedEvent, identity_of
from ledger.interface import Reader, Store

if TYPE_CHECKING:
    from ledger.chain import Head, VerifyReport
    from ledger.store import EventStore, open_reader, open_store

# Imported on first use: `ledger.store` imports SQLAlchemy.
_LAZY = {
    "EventStore": "ledger.store",
    "open_store": "ledger.store",
    "open_reader": "ledger.store",
    "Head": "ledger.chain",
    "VerifyReport": "ledger.chain",
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
    "ProtectedStreamError",
    "Reader",
    "RecordedEvent",
    "SchemaTooNewError",
    "Store",
    "VerifyReport",
    "identity_of",
    "open_reader",
    "open_store",
]
