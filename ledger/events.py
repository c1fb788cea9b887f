"""The two shapes an event has: before it is appended, and as the ledger recorded it."""

from __future__ import annotations

import hashlib
import json
import uuid
from dataclasses import dataclass, field
from typing import Any


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


@dataclass(frozen=True, slots=True)
class RecordedEvent:
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
