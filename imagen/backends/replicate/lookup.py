"""Finding the prediction a create whose outcome is unknown may have made: the listing, paged,
searched within a window on Replicate's clock for a prediction echoing this job's input."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from imagen.backends.common import Exchange, exchanges, pending_retry, retry_time, run_start
from imagen.backends.replicate.job import (
    PAST_DEADLINE_MAX_WAIT_S,
    api_base,
    backoff,
    get_request,
    job_deadline,
    last_after,
)
from imagen.backends.replicate.wire import (
    PREDICTION_ID,
    created_at,
    describe,
    header_value,
    http_date,
    listing_body,
    oldest_created,
    same_origin,
)
from imagen.core.actions import Action, CheckHeld, Halt, Record
from imagen.core.events import (
    LookupConcluded,
    RemoteIdsHeld,
    RemoteJobAccepted,
    ResponseReceived,
    RetryScheduled,
)
from imagen.core.job import JobState

LOOKUP_MARGIN_S = 300  # latency and Date-header rounding allowance around the lookup window
MAX_LOOKUP_PAGES = 20


def _round_start(state: JobState, create: Exchange) -> int:
    return max(create.sent_at.version, run_start(state))


def lookup(state: JobState, create: Exchange, on_none: Action | None) -> Action:
    """List recent predictions and find the one this job's create made.

    The window is measured on Replicate's clock: the first page's Date header, minus the time
    that passed on our clock between the first create and this lookup (a duration, unaffected
    by an offset between the clocks), minus a margin. Candidates must echo our input exactly
    (the seed is chosen and recorded before any create, so inputs are unique) and not be held by
    another job.
    """
    start = _round_start(state, create)
    concluded = last_after(state, LookupConcluded, start)
    if concluded is not None:
        decision = concluded.event.decision  # type: ignore[attr-defined]
        matches = concluded.event.matches  # type: ignore[attr-defined]
        if decision == "create" and on_none is not None:
            return on_none
        if decision == "ambiguous":
            return Halt(
                f"{len(matches)} predictions match this job's input ({', '.join(matches)}); "
                "imagen will not guess which one is yours: "
                f"`imagen resume {state.job_id} --force-new` creates a new one"
            )
        if decision == "refused":
            return Halt(
                "the listing of predictions links to another origin, which imagen does not "
                "follow with the token, so it cannot tell whether the create reached Replicate: "
                f"resume later, or `imagen resume {state.job_id} --force-new` to create a new "
                "prediction (possibly paying twice)"
            )
    pages = [ex for ex in exchanges(state, "lookup") if ex.sent_at.version > start]
    first_url = f"{api_base(state)}/v1/predictions"
    if not pages:
        return get_request(state, "lookup", first_url)
    last = pages[-1]
    if last.outcome is None or pending_retry(state, "lookup") is not None:
        return get_request(state, "lookup", last.sent.url, retry_time(state, "lookup"))
    body = listing_body(last)
    if body is None:
        # Every answer that is not a listing counts against the bound, whatever its status or
        # shape (`200 {}`, a prediction, `{"detail": "maintenance"}`): the retries of one run
        # are bounded, and past the job's deadline they are brief.
        failures = sum(1 for ex in pages if listing_body(ex) is None)
        delay = backoff(state, failures - 1)
        assert state.now is not None
        in_time = state.now + timedelta(seconds=delay) < job_deadline(state)
        if failures < 3 and (in_time or delay <= PAST_DEADLINE_MAX_WAIT_S):
            return Record(
                (
                    RetryScheduled(
                        "lookup",
                        failures,
                        delay,
                        f"lookup failed: {describe(last.outcome)}"[:300],
                    ),
                )
            )
        return Halt(
            f"the create request may have reached Replicate but the lookup failed "
            f"({describe(last.outcome)}); resume later, or `imagen resume {state.job_id} "
            "--force-new` to create a new prediction (possibly paying twice)"
        )
    answered = [ex for ex in pages if listing_body(ex) is not None]
    cutoff = _cutoff(state, answered[0])
    candidates = _candidates(state, answered, cutoff)
    nxt = body.get("next")
    oldest = oldest_created(body)
    more = isinstance(nxt, str) and nxt and (cutoff is None or oldest is None or oldest >= cutoff)
    if more:
        if not same_origin(nxt, api_base(state)):
            return Record((LookupConcluded(candidates, "refused"),))
        if len(answered) < MAX_LOOKUP_PAGES:
            return get_request(state, "lookup", nxt)
        if not candidates:
            return Halt(
                f"more than {MAX_LOOKUP_PAGES} pages of predictions since this job's create; "
                "imagen cannot tell whether it reached Replicate: "
                f"`imagen resume {state.job_id} --force-new` creates a new prediction"
            )
    if candidates:
        checked = last_after(state, RemoteIdsHeld, start)
        if checked is None or set(candidates) - set(checked.event.checked):  # type: ignore[attr-defined]
            return CheckHeld(tuple(candidates))
        held = checked.event.held  # type: ignore[attr-defined]
        candidates = [c for c in candidates if c not in held]
    if len(candidates) == 1:
        return Record(
            (
                LookupConcluded(candidates, "adopt"),
                RemoteJobAccepted(candidates[0], via="lookup"),
            )
        )
    if len(candidates) > 1:
        return Record((LookupConcluded(candidates, "ambiguous"),))
    if on_none is not None:
        return on_none
    return Record((LookupConcluded([], "create"),))


def _cutoff(state: JobState, first_page: Exchange) -> datetime | None:
    """The earliest created_at (Replicate's clock) a prediction of ours can have; None when the
    listing carried no usable Date header (then every page is searched, up to a bound)."""
    assert isinstance(first_page.outcome, ResponseReceived) and first_page.outcome_at is not None
    server_now = http_date(header_value(first_page.outcome, "date"))
    if server_now is None:
        return None
    first_create = exchanges(state, "create")[0]
    elapsed = max(0.0, (first_page.sent_at.at - first_create.sent_at.at).total_seconds())
    return server_now - timedelta(seconds=elapsed + LOOKUP_MARGIN_S)


def _candidates(state: JobState, pages: list[Exchange], cutoff: datetime | None) -> list[str]:
    """Predictions in the pages whose echoed input is exactly what this job sent."""
    sent: dict[str, Any] = {}
    for ex in exchanges(state, "create"):
        if isinstance(ex.sent.body, dict) and isinstance(ex.sent.body.get("input"), dict):
            sent = ex.sent.body["input"]
    found: list[str] = []
    for ex in pages:
        listing = listing_body(ex)
        for p in listing["results"] if listing else []:
            if (
                not isinstance(p, dict)
                or not isinstance(p.get("id"), str)
                or not PREDICTION_ID.match(p["id"])
            ):
                continue
            inp = p.get("input")
            if not isinstance(inp, dict) or any(
                k not in inp or inp[k] != v for k, v in sent.items()
            ):
                continue
            created = created_at(p)
            if cutoff is not None and created is not None and created < cutoff:
                continue
            if p["id"] not in found:
                found.append(p["id"])
    return found
