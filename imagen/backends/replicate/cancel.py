"""Cancelling a running prediction, so billing stops."""

from __future__ import annotations

from imagen.backends.common import exchanges, pending_retry, request_id
from imagen.backends.replicate.job import api_base, token_env
from imagen.backends.replicate.wire import describe
from imagen.core.actions import Action, Halt, HttpRequest, Record
from imagen.core.events import CancelRequested, JobCancelled, ResponseReceived, RetryScheduled
from imagen.core.failures import Failure
from imagen.core.job import JobState

# -- cancelling -------------------------------------------------------------------------------


def cancel(state: JobState) -> Action:
    """Stop a running prediction (so billing stops). A cancel reply that says the prediction
    succeeded is handled by decide as any other snapshot: it is downloaded."""
    assert state.cancel is not None
    cancel_at = state.last(CancelRequested)
    assert cancel_at is not None
    cancels = [ex for ex in exchanges(state, "cancel") if ex.sent_at.version > cancel_at.version]
    url = f"{api_base(state)}/v1/predictions/{state.remote_id}/cancel"
    request = HttpRequest(
        request_id(state, "cancel"),
        "cancel",
        "POST",
        url,
        timeout_s=15,
        auth_env=token_env(state),
    )
    if not cancels or pending_retry(state, "cancel") is not None:
        return request
    last = cancels[-1]
    if last.outcome is None:
        return request  # died mid-cancel; cancelling again is harmless
    if isinstance(last.outcome, ResponseReceived) and last.outcome.status == 200:
        # Accepted but not terminal yet (a real cancel answers `canceled` at once).
        return Record((JobCancelled(state.cancel.reason, remote_cancelled=True),))
    if len(cancels) < 2:
        return Record(
            (RetryScheduled("cancel", 1, 0.2, f"cancel: {describe(last.outcome)}"[:300]),)
        )
    if state.cancel.reason == "user":
        return Record((JobCancelled("user", remote_cancelled=False),))
    return Halt(
        f"could not cancel prediction {state.remote_id} at the deadline "
        f"({describe(last.outcome)}); it may still finish and is paid: "
        f"`imagen resume {state.job_id}` fetches it or cancels it",
        Failure.UNREACHABLE,
    )
