"""What the projections' folds read of one batch of events, derived once for all of them.

A catch-up (imagen/projections/catchup.py) feeds the jobs, usage and spend folds the same batch
(`ledger.projection.Batch`): a payload is json-decoded at most once, and each job the batch
touches is folded once (`job_states`), whichever folds ask; an event no fold reads is never
decoded. A fold called with a
plain list of events (no memo) derives the same values for itself.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from imagen.core.job import UNREAD, JobState, fold
from imagen.projections.usage.fold import usage_rows
from imagen.repository import payload, to_recorded
from ledger.events import RecordedEvent


def _memo(events: Sequence[RecordedEvent]) -> tuple[dict[Any, Any], Sequence[RecordedEvent]]:
    whole = getattr(events, "whole", None)
    return (events.memo, whole) if whole is not None else ({}, events)  # type: ignore[attr-defined]


def payloads(events: Sequence[RecordedEvent], types: frozenset[str]) -> dict[int, Any]:
    """The payloads of the batch's events of these types, by position (`repository.payload`),
    each decoded once for every fold of the batch; a job's other events are decoded with
    their events, only if its fold reads them (`job_states`)."""
    memo, whole = _memo(events)
    found: dict[int, Any] = memo.setdefault("payloads", {})
    done: set[frozenset[str]] = memo.setdefault("payloads of", set())
    if types not in done:
        for e in whole:
            if e.type in types and e.position not in found:
                found[e.position] = payload(e)
        done.add(types)
    return found


def job_states(
    view: Any, events: Sequence[RecordedEvent], job_ids: Iterable[str]
) -> dict[str, JobState]:
    """Each job folded from its events up to the batch's last position: the batch's own
    events, after the ones recorded before the batch (read from `view`, only for a job that
    began before it)."""
    memo, whole = _memo(events)
    states: dict[str, JobState] = memo.setdefault("states", {})
    wanted = [j for j in job_ids if j not in states]
    if wanted:
        streams: dict[str, list[RecordedEvent]] | None = memo.get("streams")
        if streams is None:
            streams = memo["streams"] = {}
            for e in whole:
                streams.setdefault(e.stream_id, []).append(e)
        # Whatever payloads the batch's folds decoded already; the rest are decoded (with
        # their events) only if the job's fold or a rule reads them.
        data = memo.get("payloads") or {}
        # (A batch of some types only covers up to its `last`, past its last event.)
        last = getattr(whole, "last", None) or (whole[-1].position if whole else 0)
        for jid in wanted:
            own = streams.get(jid, [])
            first = own[0].stream_version if own else None
            earlier = (
                []
                if first == 1
                else [
                    e
                    for e in view.read_stream(jid)
                    if (e.stream_version < first if first is not None else e.position <= last)
                ]
            )
            recorded = [to_recorded(e) for e in earlier]
            recorded += [to_recorded(e, data.get(e.position, UNREAD)) for e in own]
            states[jid] = fold(jid, recorded)
    return states


def job_usage(
    view: Any, events: Sequence[RecordedEvent], job_ids: Iterable[str]
) -> dict[str, list[dict[str, Any]]]:
    """Each job's `usage_rows` as of the batch's end (the usage table's rows, and what the
    spend table counts as spent), worked out once for both."""
    memo, _ = _memo(events)
    found: dict[str, list[dict[str, Any]]] = memo.setdefault("usage", {})
    wanted = [j for j in job_ids if j not in found]
    for jid, state in job_states(view, events, wanted).items():
        if jid not in found:
            found[jid] = usage_rows(state)
    return found
