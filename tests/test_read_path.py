"""The read path's shortcuts say exactly what the slow definitions say (issue #29).

The chain hash is documented as sha256 of `json.dumps([...], separators=(",", ":"),
ensure_ascii=False)`; `event_hash` writes that text directly for strings and ints. A payload is
`json.loads` of its text (or `{"data": text}` when it is not JSON); `payload_of` calls the json
module's scanner directly. Both are held to their definitions over arbitrary values.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from imagen.core.events import payload_of
from ledger.events import event_hash

TEXT = st.text(st.characters(codec="utf-8"))
ANY = st.one_of(TEXT, st.integers(), st.none(), st.booleans(), st.floats(allow_nan=False))


def documented(*fields: Any) -> str:
    text = json.dumps(list(fields), separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(text.encode()).hexdigest()


@settings(max_examples=300, deadline=None)
@given(st.tuples(TEXT, st.integers(), TEXT, TEXT, st.integers(), TEXT, st.integers(), TEXT, TEXT))
def test_event_hash_is_the_documented_hash(fields: tuple[Any, ...]) -> None:
    assert event_hash(*fields) == documented(*fields)


@settings(max_examples=300, deadline=None)
@given(st.lists(ANY, min_size=9, max_size=9))
def test_event_hash_of_a_hostile_row_is_still_the_documented_hash(fields: list[Any]) -> None:
    assert event_hash(*fields) == documented(*fields)


def loads_or_data(text: str) -> Any:
    try:
        return json.loads(text)
    except ValueError:
        return {"data": text}


JSON = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(), st.floats(allow_nan=False), TEXT),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(TEXT, inner, max_size=4),
    max_leaves=20,
)


@settings(max_examples=300, deadline=None)
@given(JSON, st.sampled_from(["", " ", "\n", "x", ",1", "}"]), st.sampled_from(["", " "]))
def test_payload_of_reads_as_json_loads(value: Any, tail: str, head: str) -> None:
    text = head + json.dumps(value, separators=(",", ":"), ensure_ascii=False) + tail
    assert repr(payload_of(text)) == repr(loads_or_data(text))  # (NaN != NaN)


@settings(max_examples=200, deadline=None)
@given(TEXT)
def test_payload_of_any_text_reads_as_json_loads(text: str) -> None:
    assert repr(payload_of(text)) == repr(loads_or_data(text))  # (NaN != NaN)


PURPOSES = st.sampled_from(["create", "poll", "prompt", "crea", "createx", "Create", "é-create"])


@settings(max_examples=300, deadline=None)
@given(PURPOSES, PURPOSES, st.booleans(), st.sampled_from([None, {"input": {"x": "create"}}]))
def test_may_have_is_false_only_when_the_decoded_event_does_not_have_the_value(
    recorded: str, looked_for: str, ascii_only: bool, body: Any
) -> None:
    """The peek that spares a search building every request (Recorded.may_have) answers from
    the text only when that is exact: \\u escapes, other fields holding the value."""
    from imagen.core.job import UNREAD, Recorded

    data = {
        "request_id": "r-1",
        "purpose": recorded,
        "method": "GET",
        "url": "http://127.0.0.1/x",
        "headers": {},
        "body": body,
    }
    text = json.dumps(data, ensure_ascii=ascii_only)
    rec = Recorded.stored("RequestSent", 1, UNREAD, text, 1, "2026-01-01T00:00:00.000000Z", 1)
    if not rec.may_have("purpose", looked_for):
        assert rec.event.purpose != looked_for  # type: ignore[attr-defined]
    assert rec.may_have("purpose", recorded)


def test_a_payload_nested_past_any_depth_is_kept_as_text() -> None:
    """A writer that edits the ledger can nest a payload deeper than the interpreter recurses:
    it becomes an event this imagen cannot read (named by show and audit), not a crash."""
    text = "[" * 200_000 + "]" * 200_000
    assert payload_of(text) == {"data": text}
