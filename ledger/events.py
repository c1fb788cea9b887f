"""The two shapes an event has: before it is appended, and as the ledger recorded it."""

from __future__ import annotations

import hashlib
import json
import uuid
from dataclasses import dataclass, field
from typing import Any, NamedTuple


def canonical_json(value: Any) -> str:
    """One text per value: sorted keys, no whitespace, UTF-8 kept, no NaN."""
    return json.dumps(
        value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False
    )


@dataclass(frozen=True, slots=True)
class NewEvent:
    type: str
    data: dict[str, Any]
    schema_version: int = 1
    event_id: str = field(default_factory=lambda: str(uuid.uuid4()))


class RecordedEvent(NamedTuple):
    """Immutable; a tuple underneath, so reading millions of rows builds each in one step
    (a frozen dataclass sets its ten fields one by one: measured, a third of a read)."""

    position: int
    event_id: str
    stream_id: str
    stream_version: int
    type: str
    schema_version: int
    data_json: str
    recorded_at: str
    prev_hash: str
    hash: str

    @property
    def data(self) -> dict[str, Any]:
        return json.loads(self.data_json)


GENESIS_HASH = "0" * 64

# A ledger's identity: written by the store as the first event of a ledger opened with
# `identity=True`, so it is covered by the hash chain and survives edits of later events.
IDENTITY_STREAM = "$ledger"
IDENTITY_TYPE = "LedgerCreated"


def identity_event(head_file: bool = False) -> NewEvent:
    """`head_file`: the ledger keeps its chain head in a file beside it (ledger.chain.HeadFile);
    recorded once, under the chain, so a head file that later goes missing is evidence."""
    data: dict[str, Any] = {"ledger_id": uuid.uuid4().hex}
    if head_file:
        data["head_file"] = True
    return NewEvent(IDENTITY_TYPE, data)


def keeps_head_file(first: RecordedEvent | None) -> bool:
    """Whether the ledger's identity (its first event) records that it keeps a head file."""
    if first is None or first.stream_id != IDENTITY_STREAM or first.type != IDENTITY_TYPE:
        return False
    try:
        return json.loads(first.data_json).get("head_file") is True
    except (ValueError, AttributeError):
        return False


def identity_of(first: RecordedEvent | None) -> str | None:
    """The ledger's id from its first event: the id a `LedgerCreated` event recorded, else
    (ledgers created before identities existed) that first event's hash; None when empty."""
    if first is None:
        return None
    if first.stream_id == IDENTITY_STREAM and first.type == IDENTITY_TYPE:
        try:
            value = json.loads(first.data_json).get("ledger_id")
        except (ValueError, AttributeError):
            value = None
        if isinstance(value, str) and value:
            return value
    return first.hash


def event_hash(
    prev_hash: str,
    position: int,
    event_id: str,
    stream_id: str,
    stream_version: int,
    type_: str,
    schema_version: int,
    data_json: str,
    recorded_at: str,
) -> str:
    """sha256 of the JSON array of the event's fields with the previous hash first.

    Documented in docs/architecture.md so anyone can re-check the chain with other tools.
    """
    q = _quoted
    if (
        type(prev_hash) is type(event_id) is type(stream_id) is type(type_) is str
        and type(data_json) is type(recorded_at) is str
        and type(position) is type(stream_version) is type(schema_version) is int
    ):
        # `json.dumps` of the array below, written directly: for strings and ints it writes
        # exactly this, and building its encoder per call was most of an audit's hashing
        # time (measured). Any other value (a hostile row: NULL, a float) goes to `dumps`.
        encoded = (
            f"[{q(prev_hash)},{position},{q(event_id)},{q(stream_id)},{stream_version},"
            f"{q(type_)},{schema_version},{q(data_json)},{q(recorded_at)}]"
        )
    else:
        encoded = json.dumps(
            [
                prev_hash,
                position,
                event_id,
                stream_id,
                stream_version,
                type_,
                schema_version,
                data_json,
                recorded_at,
            ],
            separators=(",", ":"),
            ensure_ascii=False,
        )
    return hashlib.sha256(encoded.encode()).hexdigest()


# The json module's own string encoder (as `json.dumps(..., ensure_ascii=False)` writes a str).
_quoted = json.encoder.encode_basestring
