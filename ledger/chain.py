"""The hash chain and the head file (standard library only), used by the store on every
engine: whatever is appended is built here, so a ledger records the same bytes and hashes
whichever engine it lives on, and whichever version of the store wrote it.
"""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

from ledger.events import (
    GENESIS_HASH,
    IDENTITY_STREAM,
    NewEvent,
    RecordedEvent,
    canonical_json,
    event_hash,
    identity_event,
)

Clock = Callable[[], datetime]
Durability = Literal["full", "normal"]


def utc_now() -> datetime:
    return datetime.now(UTC)


def format_timestamp(moment: datetime) -> str:
    """Fixed-width UTC text, so timestamps sort and hash the same on every engine."""
    if moment.tzinfo is None:
        raise ValueError("the ledger clock must return timezone-aware datetimes")
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


@dataclass(frozen=True, slots=True)
class Head:
    position: int
    hash: str


@dataclass(frozen=True, slots=True)
class VerifyReport:
    checked: int
    head: Head
    first_broken: int | None = None
    reason: str | None = None

    @property
    def ok(self) -> bool:
        return self.first_broken is None


class Counter:
    """A count several threads add to (a store's commits)."""

    def __init__(self) -> None:
        self.value = 0
        self._lock = threading.Lock()

    def add(self) -> None:
        with self._lock:
            self.value += 1


def link(
    tip: Head,
    stream_id: str,
    current: int,
    new_events: Sequence[NewEvent],
    recorded_at: str,
    *,
    identity: bool = False,
    head_file: bool = False,
) -> list[RecordedEvent]:
    """The events to insert after `tip`, each hashed over the one before. With `identity` and
    an empty ledger, a `LedgerCreated` event comes first (the caller returns only its own); it
    records `head_file` (the ledger keeps a head file beside it)."""
    batch = [(stream_id, current + n, new) for n, new in enumerate(new_events, start=1)]
    if identity and tip.position == 0 and stream_id != IDENTITY_STREAM:
        batch.insert(0, (IDENTITY_STREAM, 1, identity_event(head_file)))
    position, prev = tip.position, tip.hash
    recorded: list[RecordedEvent] = []
    for stream, version, new in batch:
        position += 1
        data_json = canonical_json(new.data)
        digest = event_hash(
            prev,
            position,
            new.event_id,
            stream,
            version,
            new.type,
            new.schema_version,
            data_json,
            recorded_at,
        )
        recorded.append(
            RecordedEvent(
                position,
                new.event_id,
                stream,
                version,
                new.type,
                new.schema_version,
                data_json,
                recorded_at,
                prev,
                digest,
            )
        )
        prev = digest
    return recorded


def as_row(r: RecordedEvent) -> tuple[object, ...]:
    """An event as the row of `events` (columns in `schema_names.COLUMNS` order)."""
    return (
        r.position,
        r.event_id,
        r.stream_id,
        r.stream_version,
        r.type,
        r.schema_version,
        r.data_json,
        r.recorded_at,
        r.prev_hash,
        r.hash,
    )


def verify_rows(rows: Iterable[Sequence[Any]]) -> VerifyReport:
    """Walk `events` rows in position order; name the first position that does not hold."""
    walk = ChainWalk()
    versions: dict[str, int] = {}
    for row in rows:
        if not walk.step(row, versions.get(row[2], 0)):
            break
        versions[row[2]] = row[3]
    return walk.report()


class ChainWalk:
    """The chain checked one row at a time, from `start` (the genesis, or a head a previous
    audit verified and recorded): what `verify_rows` does, for a caller that folds the same
    rows as it verifies them and keeps each stream's last version itself (`imagen audit`
    keeps it only while a job is open)."""

    def __init__(self, start: Head | None = None) -> None:
        start = start or Head(0, GENESIS_HASH)
        # The head as two plain values: a Head built per row was a tenth of a walk's time.
        self._position, self._hash = start.position, start.hash
        self.checked = 0
        self.first_broken: int | None = None
        self.reason: str | None = None

    @property
    def head(self) -> Head:
        """The last row that held (the start, before any)."""
        return Head(self._position, self._hash)

    def step(self, row: Sequence[Any], last_version: int) -> bool:
        """Check one row (`events` columns; a `RecordedEvent` is one) after the head; False
        (and the walk stops) at the first that does not hold. `last_version`: its stream's
        version before it."""
        pos, eid, sid, ver, typ, sv, data, at, prev, digest = row
        expected = self._position + 1
        problem = None
        if pos != expected:
            problem = f"position {expected} is missing"
            pos = expected
        elif prev != self._hash:
            problem = "prev_hash does not match the previous event's hash"
        elif ver != last_version + 1:
            problem = f"stream {sid} jumps to version {ver}"
        elif event_hash(prev, pos, eid, sid, ver, typ, sv, data, at) != digest:
            problem = "hash does not match the event's contents"
        if problem:
            self.first_broken, self.reason = pos, problem
            return False
        self._position, self._hash = pos, digest
        self.checked += 1
        return True

    def report(self) -> VerifyReport:
        return VerifyReport(self.checked, self.head, self.first_broken, self.reason)


class HeadFile:
    """A SQLite ledger keeps its chain head in a file beside it too (`<ledger>.head`): a tail
    deleted from the database (triggers dropped) then shows in `imagen audit`.

    A ledger created with a head file records so in its identity (`keeps`): the file going
    missing or blank is then evidence too (a tail deleted with it), kept like any other: the
    store does not write a new one. So that no crash can leave such a ledger without one, the
    file is made (position 0, synced) before the ledger's first commit (`start`)."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def start(self) -> None:
        """Before the first commit of an empty ledger: a durable head file at position 0 (never
        ahead of the chain), so a kill or power cut right after that commit leaves a file that
        lags, not none."""
        if self.read() is not None:
            return  # a record already there is evidence (see `holds`) or a lagging head
        self.write(Head(0, GENESIS_HASH), sync=True)

    def write(self, head: Head, *, sync: bool = False) -> None:
        """After a commit: record the head beside the ledger. One fixed-width write at offset 0
        (readers see the old record or the new, never a mix); not temp + rename, which ext4
        turns into a flush when it replaces a file (~7 ms a commit, measured, against ~4 us).
        No fsync: after a power cut the file may lag the ledger or read empty, both harmless;
        it is never ahead, since it is written after the commit."""
        record = f'{{"position": {head.position:20d}, "hash": "{head.hash:64s}"}}\n'.encode()
        try:
            fd = os.open(self.path, os.O_WRONLY | os.O_CREAT, 0o600)
            try:
                os.pwrite(fd, record, 0)
                if sync:
                    os.fsync(fd)
            finally:
                os.close(fd)
            if sync:
                _sync_dir(self.path.parent)
        except OSError:
            pass  # the commit stands; a stale head file only weakens what audit can see

    def read(self) -> Head | None:
        try:
            text = self.path.read_text().strip("\x00 \n")
            if not text:
                return None  # never written, or lost to a power cut before writeback
            data = json.loads(text)
            return Head(int(data["position"]), str(data["hash"]).strip())
        except (OSError, ValueError, KeyError, TypeError):
            return None

    def holds(
        self, tip: Head, hash_at: Callable[[int], str | None], keeps: Callable[[], bool]
    ) -> bool:
        """Under the write lock, before appending after `tip`: does the chain still hold the
        head the file recorded? If not, the file is evidence (of a tail removed or rewritten)
        and is not overwritten. Usually the file names the tip itself: no query. A missing or
        blank file is evidence only for a ledger that records keeping one (`keeps`)."""
        recorded = self.read()
        if recorded is None:
            return tip.position == 0 or not keeps()
        if recorded.position == 0:
            return True  # made before the first commit (`start`): it can only lag
        if recorded.position >= tip.position:
            # The file is written after each commit, so it can only be ahead if events went.
            return recorded == tip
        return hash_at(recorded.position) == recorded.hash

    def problems(
        self, head: Head, hash_at: Callable[[int], str | None], keeps: bool = False
    ) -> list[dict[str, object]]:
        """Findings for audit: the head file against the verified chain. `keeps`: the ledger
        records that it keeps one, so a missing or blank file is a finding too."""
        missing = not self.path.exists()
        recorded = None if missing else self.read()
        try:
            blank = missing or not self.path.read_text(errors="replace").strip("\x00 \n")
        except OSError:
            blank = True
        if recorded is None and blank:
            if not keeps or head.position == 0:
                return []  # a ledger from before head files were recorded: nothing to go by
            what = "is missing" if missing else "is blank"
            return [
                {
                    "kind": "head_file",
                    "message": f"{self.path} {what}, though the ledger records that it keeps "
                    "one: events may have been removed with it (rebuilding does not clear this)",
                }
            ]
        if recorded is None:
            return [{"kind": "head_file", "message": f"{self.path}: unreadable chain head file"}]
        if recorded.position == 0:
            return []  # made before the first commit: it lags, like any head file may
        if recorded.position > head.position:
            return [
                {
                    "kind": "head_file",
                    "message": f"the ledger ends at position {head.position} but {self.path} "
                    f"recorded position {recorded.position}: events were removed",
                }
            ]
        if hash_at(recorded.position) != recorded.hash:
            return [
                {
                    "kind": "head_file",
                    "message": f"event {recorded.position} is not the one {self.path} "
                    "recorded: the chain was rewritten",
                }
            ]
        return []


def _sync_dir(path: Path) -> None:
    """Make a file's creation durable (its directory entry), where the platform allows."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
