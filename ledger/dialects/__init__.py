"""What differs between the engines a ledger lives on, one small module each (sqlite.py,
postgresql.py); everything else about the store is written once in ledger/store.py."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

from ledger.chain import Durability

if TYPE_CHECKING:
    from sqlalchemy import Connection, Engine
    from sqlalchemy.engine import URL


@dataclass(frozen=True)
class Opened:
    """An engine on a ledger, and what the store needs to know about where it lives."""

    engine: Engine
    head_path: Path | None = None  # the head file beside a SQLite ledger (see chain.HeadFile)
    # The file a scratch store attaches to read its events (SQLite), and with which URI option.
    source: tuple[Path, str] | None = None
    cleanup: Callable[[], None] | None = None  # run when the store closes (a private copy)


class Dialect(Protocol):
    name: str
    param: str  # the driver's placeholder, for the precomputed SQL of the hot path
    snapshot_isolation: str | None  # the isolation level of a consistent read view

    def open(self, url: URL, durability: Durability, busy_timeout: float, create: bool) -> Opened:
        """An engine on the ledger at `url` (nothing created when `create` is False)."""

    def lock(self, conn: Connection) -> None:
        """Take the ledger's write lock, first thing in a write transaction."""

    def read_view(self, conn: Connection) -> None:
        """Make this transaction one consistent read view, first thing in it."""

    def scratch(self, source: tuple[Path, str]) -> Engine | None:
        """An engine reading the ledger's events, projection tables in memory (or None)."""
