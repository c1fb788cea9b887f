"""Opening a ledger by URL: which store implementation serves it.

A SQLite ledger (`sqlite:///PATH`) that exists at this code's schema head is served by the
standard-library store (`ledger.sqlite_store`): appending needs no SQLAlchemy, which is most of
`imagen generate`'s start-up otherwise. Everything else goes through `ledger.store` first:
creating a ledger, migrating an older one, refusing a newer one, PostgreSQL. Once a SQLite
ledger has been created or migrated there, it is reopened with the standard-library store, so
every SQLite ledger is written the same way.

A URL that names its driver (`sqlite+pysqlite:///PATH`) is served by the SQLAlchemy store
throughout (the two produce the same chain; tests/test_ledger.py runs both).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ledger.chain import Clock, Durability, utc_now
from ledger.reader import sqlite_path
from ledger.schema_names import LEDGER_HEAD

if TYPE_CHECKING:
    from ledger.sqlite_store import SqliteStore
    from ledger.store import EventStore


def open_store(
    url: str,
    *,
    clock: Clock = utc_now,
    durability: Durability = "full",
    busy_timeout: float = 60.0,
    identity: bool = False,
    create: bool = True,
    group_commit: bool = True,
) -> EventStore | SqliteStore:
    """Open (creating and migrating if needed) the ledger at a SQLAlchemy URL.

    create=False (for commands that only read): nothing is created or migrated; no ledger
    there is NoLedgerError, an older schema a LedgerError naming `imagen db upgrade ledger`.

    identity=True: the first append to an empty ledger also records a `LedgerCreated` event
    (position 1) with a random id, the ledger's identity for off-machine anchoring.

    durability="full" fsyncs every commit (a paid prediction id survives power loss);
    "normal" survives a crash of the process but may lose the last commits on power loss.

    group_commit=True (see ledger/group.py): appends arriving from several threads at once
    share one transaction and one fsync; each returns once its own events are committed.
    """
    options: dict[str, Any] = dict(
        clock=clock,
        durability=durability,
        busy_timeout=busy_timeout,
        identity=identity,
        group_commit=group_commit,
    )
    path = _plain_sqlite_file(url)
    if path is None:
        from ledger import store

        return store.open_store(url, create=create, **options)
    from ledger.sqlite_store import open_at_head

    fast = open_at_head(path, LEDGER_HEAD, **options)
    if fast is not None:
        return fast
    from ledger import store

    # Creates, migrates, or raises (no ledger with create=False, older with create=False,
    # newer): exactly what opening it with SQLAlchemy alone would do.
    store.open_store(url, create=create, **options).close()
    fast = open_at_head(path, LEDGER_HEAD, **options)
    if fast is None:  # replaced under us between the two opens: let SQLAlchemy serve it
        return store.open_store(url, create=create, **options)
    return fast


def _plain_sqlite_file(url: str) -> Any:
    """The path of a `sqlite:///PATH` URL naming a file (not memory, a URI or query options)."""
    path = sqlite_path(url)
    if path is None or "?" in url or str(path) in ("", ".", ":memory:"):
        return None
    if str(path).startswith("file:"):
        return None
    return path
