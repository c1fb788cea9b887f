"""The ComfyUI state machine: `decide(state) -> action`, from the job's recorded events.

From acceptance to the image (listen, locate, poll, reconnect) is here; submitting,
cancelling and fetching the image are steps of their own modules."""

from __future__ import annotations

from dataclasses import replace
from datetime import timedelta
from typing import Any

from imagen.backends.comfyui.cancel import cancel
from imagen.backends.comfyui.download import finished
from imagen.backends.comfyui.frames import TERMINAL_KINDS
from imagen.backends.comfyui.graph import posted_classes
from imagen.backends.comfyui.job import (
    RECONNECT_BASE_S,
    accepted_at,
    backoff,
    current_prompt,
    malformed,
    open_stream,
    past_deadline,
    posted_client,
    request,
    retry_at,
    run_deadline,
    server_url,
    still_unreachable,
    stream_state,
)
from imagen.backends.comfyui.pool import step as pool_step
from imagen.backends.comfyui.report import success_result
from imagen.backends.comfyui.submit import submit
from imagen.backends.comfyui.wire import (
    HistoryEntry,
    execution_error,
    outcome_text,
    queue_ids,
    read_history,
    stats_body,
)
from imagen.backends.common import config_of, exchanges, finite, pending_retry, run_start
from imagen.core.actions import Action, FollowStream, HttpRequest, Progress, Record
from imagen.core.events import (
    CancelRequested,
    JobFailed,
    JobSucceeded,
    LookupConcluded,
    ProgressObserved,
    RequestFailed,
    ResponseReceived,
    RetryScheduled,
    StreamMessage,
    StreamOpened,
    StreamQuiet,
)
from imagen.core.failures import Failure
from imagen.core.job import JobState, Recorded, iso

# -- decide ----------------------------------------------------------------------------------


def decide(state: JobState) -> Action:
    if state.request is None:
        return Record((JobFailed("internal", "the job has no request", Failure.UNEXPECTED),))
    if state.finished:
        return Record(())  # the job has ended: nothing more to send or record
    if state.images:
        # Some images are on disk, so the prompt finished: fetch the rest and succeed, even
        # after a cancel (an image in hand is never thrown away).
        pid = current_prompt(state)
        return _follow(state, pid) if pid else Record((JobSucceeded(success_result(state)),))
    if state.cancel is not None:
        return cancel(state)
    placing = pool_step(state)  # a pool: place the job, or move it off a member that is gone
    if placing is not None:
        return placing
    pid = current_prompt(state)
    if pid is None:
        if stream_state(state).state == "none":
            return open_stream(state)  # before POST /prompt, so no message can be missed
        return submit(state)
    return _follow(state, pid)


def _follow(state: JobState, pid: str) -> Action:
    """From acceptance to the image: listen, locate, reconnect, fetch."""
    # 1. What the latest /history answer says (after the end, a locate, a poll, or a cancel's
    # own look: a cancel that found the prompt finished stored its first image, and that
    # answer is what the rest are fetched from; following the stream again would ask for the
    # cancel whose outcome is already recorded).
    polls = [ex for ex in exchanges(state, "history") if ex.sent_at.version > accepted_at(state)]
    looks = [
        ex for ex in exchanges(state, "cancel_history") if ex.sent_at.version > accepted_at(state)
    ]
    looked = sorted([*polls, *looks], key=lambda ex: ex.sent_at.version)
    last = looked[-1] if looked else None
    if last is not None and last.outcome is not None:
        o = last.outcome
        if isinstance(o, ResponseReceived) and o.status == 200:
            entry = read_history(o.body, pid)
            if isinstance(entry, HistoryEntry):
                return finished(state, entry)
            if isinstance(entry, str):
                return malformed(state, "history", f"/history/{pid}", entry)
    # 2. The stream said the prompt ended.
    end = _stream_end(state, pid)
    if end is not None:
        e: StreamMessage = end.event  # type: ignore[assignment]
        if e.kind == "execution_error":
            return Record((execution_error(e.data),))
        if e.kind == "execution_interrupted":
            return Record(
                (
                    JobFailed(
                        "interrupted",
                        "ComfyUI interrupted the prompt (another client or the server's "
                        "interrupt button)",
                        Failure.GENERATION_FAILED,
                    ),
                )
            )
        after = [ex for ex in polls if ex.sent_at.version > end.version]
        if not after:
            return request(state, "history", "GET", f"/history/{pid}")
        # execution_success comes just before ComfyUI writes the history entry: ask again.
        return _history_again(state, pid, after[-1])
    # 3. Machine facts, once per job (asked again by a later run when they are missing).
    stats = _system_stats_request(state)
    if stats is not None:
        return stats
    # 4. Where the prompt is, with this process's websocket.
    stream = stream_state(state)
    if stream.state == "open":
        assert stream.at is not None
        if posted_client(state, pid) != stream.at.event.client_id:  # type: ignore[attr-defined]
            # Posted under an earlier connection's id: ComfyUI sends its messages to that id
            # alone, so this socket will never hear of it. Where is it, then poll.
            return _locate(state, pid, since=stream.at.version, stream_open=False)
        quiet = _last_quiet(state, since=stream.at.version)
        if quiet is None:
            return _follow_stream(state, pid)  # posted with this socket open: nothing missed
        # Quiet for a while: ask the server (a deaf socket never says so itself).
        return _locate(state, pid, since=quiet.version, stream_open=True)
    if stream.state == "closed" and stream.why == "deadline":
        return Record((CancelRequested("timeout"),))
    if stream.state == "failed" and stream.why == "handshake":
        # The server answers but refuses websockets (a proxy): poll instead.
        assert stream.at is not None
        return _locate(state, pid, since=stream.at.version, stream_open=False)
    if past_deadline(state) and stream.state != "none":
        return still_unreachable(state, f"no connection to {server_url(state)} ({stream.why})")
    not_before = None
    if stream.state == "failed" and stream.at is not None:
        not_before = iso(stream.at.at + timedelta(seconds=backoff(stream.failures)))
    return open_stream(state, not_before)


# A followed prompt the stream says nothing of for this long is looked for in /queue and
# /history (3 events a look), the wait doubling while it stays quiet (a queue ahead of it, a
# long node without progress) and back to the start once the stream speaks.
QUIET_BASE_S = 5.0
QUIET_CAP_S = 60.0


def _follow_stream(state: JobState, pid: str, running: bool = False) -> FollowStream:
    """`running`: /queue had it running (a reconnect or resume); shown until a frame says more."""
    deadline = run_deadline(state)
    return FollowStream(
        {"prompt_id": pid, "classes": posted_classes(state), "recorded": {}},
        deadline=iso(deadline) if deadline else None,
        waiting=Progress("running in ComfyUI" if running else "queued in ComfyUI"),
        quiet_s=min(QUIET_BASE_S * 2 ** _quiet_looks(state), QUIET_CAP_S),
    )


def _last_quiet(state: JobState, *, since: int) -> Recorded | None:
    rec = state.last(StreamQuiet)
    return rec if rec is not None and rec.version > since else None


def _quiet_looks(state: JobState) -> int:
    """StreamQuiet events since the stream last spoke (a recorded message or progress) or
    opened."""
    n = 0
    for rec in reversed(state.history):
        if isinstance(rec.event, StreamQuiet):
            n += 1
        elif isinstance(rec.event, StreamMessage | ProgressObserved | StreamOpened):
            break
    return min(n, 8)


def _locate(state: JobState, pid: str, *, since: int, stream_open: bool) -> Action:
    """After (re)connecting: /queue first, then /history. ComfyUI moves a prompt from the queue
    to the history under one lock, so a prompt in neither, in that order, is lost. Only what
    was asked after this prompt was accepted counts (an earlier attempt's answers say nothing
    of it)."""
    since = max(since, accepted_at(state))
    queue = [ex for ex in exchanges(state, "queue") if ex.sent_at.version > since]
    if not queue or (pending_retry(state, "queue") is not None and queue[-1].outcome is not None):
        return request(state, "queue", "GET", "/queue", not_before=retry_at(state, "queue"))
    o = queue[-1].outcome
    if o is None:
        return request(state, "queue", "GET", "/queue")
    if isinstance(o, RequestFailed) or o.status != 200:
        if past_deadline(state):
            return still_unreachable(state, f"/queue: {outcome_text(o)}")
        n = sum(1 for ex in queue if ex.outcome is not None)
        return Record((RetryScheduled("queue", n, backoff(n), outcome_text(o)),))
    ids = queue_ids(o.body)
    if ids is None:
        return malformed(state, "queue", "/queue", "queue_running/queue_pending are not lists")
    if pid in ids[0] or pid in ids[1]:
        if stream_open:
            return _follow_stream(state, pid, running=pid in ids[0])
        return _poll(state, pid, since=queue[-1].outcome_at.version)  # type: ignore[union-attr]
    looked = [
        ex for ex in exchanges(state, "history") if ex.sent_at.version > queue[-1].sent_at.version
    ]
    if not looked or looked[-1].outcome is None:
        return request(state, "history", "GET", f"/history/{pid}")
    h = looked[-1].outcome
    if isinstance(h, RequestFailed) or h.status != 200:
        if past_deadline(state):
            return still_unreachable(state, f"/history: {outcome_text(h)}")
        n = len(looked)
        return Record((RetryScheduled("queue", n, backoff(n), outcome_text(h)),))
    # In neither place (a finished entry was handled by _follow): ComfyUI restarted and lost
    # it. ComfyUI is local and free, so a new attempt (a new prompt_id) finishes the job; a
    # few times, and not past the deadline (nothing runs then: the timeout cancel verifies it).
    if past_deadline(state):
        return Record((CancelRequested("timeout"),))
    lost = sum(
        1
        for r in state.events_of(LookupConcluded)
        if r.event.decision == "resubmit"  # type: ignore[attr-defined]
    )
    if lost >= MAX_RESUBMITS:
        return Record(
            (
                JobFailed(
                    "lost",
                    f"ComfyUI lost this job's prompt {lost + 1} times (in neither /queue nor "
                    "/history after it was accepted: restarted?)",
                    Failure.SERVER_ERROR,
                ),
            )
        )
    return Record(
        (
            LookupConcluded([], "resubmit"),
            RetryScheduled(
                "prompt",
                len(exchanges(state, "prompt")) + 1,
                0.0,
                f"ComfyUI knows prompt {pid} neither in /queue nor in /history (restarted?)",
            ),
        )
    )


POLL_WINDOW_S = 60.0
MAX_RESUBMITS = 3  # prompts ComfyUI may lose (a restart each) before the job fails


def _poll(state: JobState, pid: str, *, since: int) -> Action:
    """No websocket (a proxy refused it): poll /history, the runner repeating the request while
    the answer stays `{}` (backing off to 5 s) and recording the repeats as one event. After
    each quiet window, /queue says whether the prompt is still there (a restart loses it)."""
    polls = [ex for ex in exchanges(state, "history") if ex.sent_at.version > since]
    deadline = run_deadline(state)
    if past_deadline(state) or deadline is None or state.now is None:
        return Record((CancelRequested("timeout"),))
    if polls and polls[-1].outcome is not None:
        last = polls[-1].outcome
        if isinstance(last, RequestFailed) or last.status != 200:
            # Unreachable again: back to reconnecting (the stream is the cheap probe).
            return open_stream(state, state.after(RECONNECT_BASE_S))
        return request(state, "queue", "GET", "/queue")  # a quiet window: is it still queued?
    window = min(POLL_WINDOW_S, (deadline - state.now).total_seconds())
    every = finite(config_of(state).get("poll_interval_s")) or 0.5
    return replace(
        request(state, "history", "GET", f"/history/{pid}"),
        repeat_for_s=max(window, 0.0),
        repeat_every_s=every,
    )


def _history_again(state: JobState, pid: str, last: Any) -> Action:
    o = last.outcome
    if o is None:
        return request(state, "history", "GET", f"/history/{pid}")
    n = len([ex for ex in exchanges(state, "history") if ex.sent_at.version > accepted_at(state)])
    if isinstance(o, RequestFailed) or o.status != 200:
        if past_deadline(state):
            return still_unreachable(state, f"/history: {outcome_text(o)}")
    elif past_deadline(state):
        return Record((CancelRequested("timeout"),))
    delay = backoff(n) if isinstance(o, RequestFailed) else min(0.1 * n, 2.0)
    return request(state, "history", "GET", f"/history/{pid}", not_before=state.after(delay))


def _stream_end(state: JobState, pid: str) -> Recorded | None:
    for rec in reversed(state.history):
        e = rec.event
        if rec.version <= accepted_at(state):
            return None
        if (
            isinstance(e, StreamMessage)
            and e.data.get("prompt_id") == pid
            and (e.kind in TERMINAL_KINDS or (e.kind == "executing" and e.data.get("node") is None))
        ):
            return rec
    return None


def _system_stats_request(state: JobState) -> HttpRequest | None:
    stats = exchanges(state, "system_stats")
    if any(stats_body(ex.outcome) for ex in stats):
        return None
    floor = run_start(state)
    if any(ex.sent_at.version > floor for ex in stats):
        return None  # one try per run: metadata never delays an image
    return request(state, "system_stats", "GET", "/system_stats", timeout_s=3)
