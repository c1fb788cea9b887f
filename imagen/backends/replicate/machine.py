"""The Replicate state machine: `decide(state) -> action`, from the job's recorded events.

Creating (at most a few times) is here; looking a create up, polling, cancelling and
downloading are steps of their own modules.
"""

from __future__ import annotations

from datetime import timedelta

from imagen.backends.common import (
    Exchange,
    exchanges,
    next_image_index,
    no_stream,
    pending_retry,
    retries,
    retry_time,
)
from imagen.backends.replicate.cancel import cancel
from imagen.backends.replicate.download import download
from imagen.backends.replicate.job import (
    MAX_429_RETRIES,
    MAX_UNCERTAIN_CREATES,
    api_base,
    backoff,
    create_outcome,
    create_request,
    job_deadline,
    job_timeout,
    last_after,
    setting,
    snapshot,
    token_env,
    uncertain_creates,
)
from imagen.backends.replicate.lookup import lookup
from imagen.backends.replicate.poll import poll
from imagen.backends.replicate.wire import (
    describe,
    describe_body,
    outputs,
    retry_after,
    seed_from_logs,
)
from imagen.core.actions import Action, Halt, Record
from imagen.core.events import (
    ForceNewRequested,
    JobCancelled,
    JobFailed,
    JobSucceeded,
    LookupConcluded,
    RemoteJobAccepted,
    RequestFailed,
    ResponseReceived,
    RetryScheduled,
)
from imagen.core.failures import Failure
from imagen.core.job import JobState, iso

# -- the state machine -----------------------------------------------------------------------
#
# Money rules, each enforced below and tested from event histories in
# tests/test_replicate_decide.py:
# - a succeeded prediction is always fetched, whatever the clock says (no deadline check comes
#   before learning the prediction's state in this process, and a cancel reply that says
#   `succeeded` is downloaded);
# - the token goes only to the API's own origin (scheme, host and port equal base_url's);
# - a create whose outcome is unknown is looked up before anything else, and at most
#   MAX_UNCERTAIN_CREATES creates may end unknown (counted over the job's whole history);
# - the lookup window is measured on Replicate's clock (the listing's Date header) and by
#   elapsed time on ours, so a skewed local clock cannot hide the prediction;
# - a prediction another job holds is never adopted (CheckHeld asks the ledger; the answer is
#   an event).


interpret_frame = no_stream  # Replicate is polled, never streamed


def _http_failure(state: JobState, outcome: ResponseReceived) -> Action:
    """A create answered with an error that says nothing was created."""
    status = outcome.status
    if status == 401:
        return Record(
            (
                JobFailed(
                    "unauthorized",
                    f"Replicate rejected the API token: set {token_env(state)} to a valid token",
                    Failure.UNAUTHORIZED,
                ),
            )
        )
    if status == 402:
        return Record(
            (
                JobFailed(
                    "out_of_credit",
                    f"Replicate: out of credit ({describe_body(outcome)})",
                    Failure.OUT_OF_CREDIT,
                ),
            )
        )
    if status == 422:
        body = outcome.body if isinstance(outcome.body, dict) else {}
        fields_ = body.get("invalid_fields")
        fields = "; ".join(
            f"{f.get('field')}: {f.get('description')}"
            for f in (fields_ if isinstance(fields_, list) else [])
            if isinstance(f, dict)
        )
        return Record(
            (
                JobFailed(
                    "invalid_input",
                    f"Replicate rejected the input: {fields or describe_body(outcome)}",
                    Failure.INVALID_INPUT,
                ),
            )
        )
    if status == 404:
        return Record(
            (
                JobFailed(
                    "not_found",
                    f"Replicate: not found ({describe_body(outcome)}); check the model name",
                    Failure.NOT_FOUND,
                ),
            )
        )
    return Record(
        (
            JobFailed(
                "unexpected",
                f"Replicate answered HTTP {status}: {describe_body(outcome)}",
                Failure.UNEXPECTED,
            ),
        )
    )


# -- the decision ---------------------------------------------------------------------------------


def decide(state: JobState) -> Action:
    req = state.request
    assert req is not None
    if state.finished:
        return Record(())  # the job has ended: nothing more to send or record
    found = snapshot(state) if state.images else None
    if found is not None and next_image_index(state, len(outputs(found[0]))) is None:
        snap = found[0]
        metrics = snap.get("metrics")
        return Record(
            (
                JobSucceeded(
                    {
                        "prediction_id": state.remote_id,
                        "metrics": metrics if isinstance(metrics, dict) else None,
                        "seed_used": seed_from_logs(snap.get("logs")) or req.params.get("seed"),
                        "path": state.images[0].path,
                        "sha256": state.images[0].sha256,
                        "images": [i.path for i in state.images],
                        "outputs_returned": len(outputs(snap)),
                    }
                ),
            )
        )
    if state.remote_id is None:
        if state.cancel is not None:
            return _cancel_before_accepted(state)
        return _submit(state)

    found = snapshot(state)
    snap = found[0] if found else None
    status = snap.get("status") if snap else None
    if snap is not None and status == "succeeded":
        # Paid and finished: fetched whatever the clock says, and whatever a Ctrl-C asked (a
        # finished prediction cannot be cancelled; a second Ctrl-C stops the runner at once and
        # leaves the job resumable).
        return download(state, snap)
    if snap is not None and status == "failed":
        error = snap.get("error")
        return Record(
            (
                JobFailed(
                    "prediction_failed",
                    f"Replicate: the prediction failed: {str(error)[:500] if error else 'no reason given'}",
                    Failure.GENERATION_FAILED,
                ),
            )
        )
    if snap is not None and status in ("canceled", "aborted"):
        if state.cancel is not None:
            return Record((JobCancelled(state.cancel.reason, remote_cancelled=True),))
        return Record(
            (
                JobFailed(
                    "prediction_canceled",
                    f"Replicate: the prediction was {status}"
                    + (" (deadline reached)" if snap.get("deadline") else ""),
                    Failure.GENERATION_FAILED,
                ),
            )
        )
    if state.cancel is not None:
        return cancel(state)
    return poll(state, found[1] if found else 0)


def _submit(state: JobState) -> Action:
    creates = exchanges(state, "create")
    if not creates:
        return create_request(state)
    last = creates[-1]
    if last_after(state, ForceNewRequested, last.sent_at.version) is not None:
        return create_request(state)  # the user accepted the risk of paying twice, once
    if pending_retry(state, "create") is not None:
        return create_request(state, retry_time(state, "create"))
    kind = create_outcome(last.outcome)
    if kind == "accepted":
        assert isinstance(last.outcome, ResponseReceived)
        body = last.outcome.body
        urls = body.get("urls")
        get = urls.get("get") if isinstance(urls, dict) else None
        return Record((RemoteJobAccepted(body["id"], url=get if isinstance(get, str) else ""),))
    if kind == "refused":  # the connection was refused: nothing was sent, a retry is safe
        if retries(state, "create", "refused") < 1:
            return Record(
                (RetryScheduled("create", 1, backoff(state, 0), "refused: connection refused"),)
            )
        assert isinstance(last.outcome, RequestFailed)
        return Record(
            (
                JobFailed(
                    "unreachable",
                    f"cannot reach Replicate at {api_base(state)}: {last.outcome.message}",
                    Failure.UNREACHABLE,
                ),
            )
        )
    if kind == "throttled":
        assert isinstance(last.outcome, ResponseReceived)
        n = retries(state, "create", "429")
        delay = retry_after(last.outcome, n, setting(state, "retry_base_s", 1.0))
        assert state.now is not None
        if n < MAX_429_RETRIES and state.now + timedelta(seconds=delay) < job_deadline(state):
            return Record((RetryScheduled("create", n + 1, delay, "429 rate limited"),))
        why = (
            f"after {n} retries"
            if n >= MAX_429_RETRIES
            else f"and asks to wait {delay:g} s, past the job's {job_timeout(state):g} s timeout"
        )
        return Record(
            (
                JobFailed(
                    "rate_limited",
                    f"Replicate kept rate-limiting {why}: {describe_body(last.outcome)}",
                    Failure.RATE_LIMITED,
                ),
            )
        )
    if kind == "rejected":
        assert isinstance(last.outcome, ResponseReceived)
        return _http_failure(state, last.outcome)
    return _after_unknown_create(state, last)


def _after_unknown_create(state: JobState, last: Exchange) -> Action:
    """The create may have made a prediction: look it up before creating again."""
    concluded = last_after(state, LookupConcluded, last.sent_at.version)
    if concluded is not None and concluded.event.decision == "create":  # type: ignore[attr-defined]
        n = uncertain_creates(state)
        if n < MAX_UNCERTAIN_CREATES:
            return create_request(
                state, iso(concluded.at + timedelta(seconds=backoff(state, n - 1)))
            )
        return Record(
            (
                JobFailed(
                    "unreachable",
                    f"Replicate never answered a create in {n} attempts "
                    f"(last: {describe(last.outcome)}) and lists no prediction from them, "
                    "so nothing was paid",
                    Failure.UNREACHABLE,
                ),
            )
        )
    return lookup(state, last, on_none=None)


def _cancel_before_accepted(state: JobState) -> Action:
    """Cancelled before Replicate confirmed a prediction: if a create may have made one, find it
    (to cancel it, or to download it if it already finished)."""
    assert state.cancel is not None
    creates = exchanges(state, "create")
    giving_up = Record((JobCancelled(state.cancel.reason, remote_cancelled=False),))
    if creates and create_outcome(creates[-1].outcome) == "accepted":
        # The create was answered but the cancel came before the answer was taken in: take it
        # in (RemoteJobAccepted), so the prediction is cancelled rather than left running.
        return _submit(state)
    if not creates or create_outcome(creates[-1].outcome) != "unknown":
        return giving_up
    decided = lookup(state, creates[-1], on_none=giving_up)
    if isinstance(decided, Halt):
        return giving_up
    return decided
