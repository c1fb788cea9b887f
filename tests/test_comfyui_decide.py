"""comfyui.decide and comfyui.interpret_frame as pure functions: event histories in, actions
out. No sockets, no ledger: each case is a list of events (as the runner would record them)
and the action the adapter must choose next. The recorded real session
(/work/shared/reference/comfyui-real-0.3.64.json) is replayed frame by frame."""

from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from imagen.backends import comfyui
from imagen.core.actions import FollowStream, HttpRequest, OpenStream, Record, StoreImage
from imagen.core.events import (
    CancelRequested,
    Event,
    ImageStored,
    JobCancelled,
    JobFailed,
    JobInterrupted,
    JobRequested,
    JobSucceeded,
    LookupConcluded,
    ProgressObserved,
    RemoteJobAccepted,
    RequestFailed,
    RequestSent,
    RetryScheduled,
    RunnerClaimed,
    RunnerRenewed,
    StreamClosed,
    StreamMessage,
    StreamQuiet,
)
from imagen.core.inputs import GenerateInputs
from tests.support.history import History

RECORDING = Path("/work/shared/reference/comfyui-real-0.3.64.json")
URL = "http://127.0.0.1:8188"
JOB = "job0123456789abc"


def request(**options: Any) -> JobRequested:
    cfg = {"url": URL, **options}
    params = comfyui.normalise(GenerateInputs("a fox", 7, steps=8), cfg)
    return JobRequested("local", "comfyui", "flux", "a fox", params, cfg, "/tmp/out.png")


def new_job(**options: Any) -> History:
    """A job on the ComfyUI backend at URL, claimed by a runner; `options` are backend options."""
    return History(comfyui.decide, request(**options), job_id=JOB)


def open_stream(job: History) -> History:
    action = job.decide()
    assert isinstance(action, OpenStream), action
    return job.opened(action)


def accepted(job: History) -> History:
    """Stream open, prompt posted and accepted, system_stats answered."""
    open_stream(job)
    post = job.decide()
    assert isinstance(post, HttpRequest) and post.purpose == "prompt", post
    job.do(post, {"prompt_id": post.json_body["prompt_id"], "number": 1, "node_errors": {}})
    job.apply(job.decide())
    stats = job.decide()
    assert isinstance(stats, HttpRequest) and stats.purpose == "system_stats", stats
    return job.do(stats, recording()[0]["body"])


def prompt(job: History) -> str:
    """The accepted prompt's id."""
    pid = comfyui.current_prompt(job.state)
    assert pid is not None
    return pid


def recording() -> list[dict[str, Any]]:
    return json.loads(RECORDING.read_text())["exchanges"]


def only(action: Any, kind: type) -> Any:
    assert isinstance(action, Record), action
    found = [e for e in action.events if isinstance(e, kind)]
    assert found, action
    return found[-1]


# -- the happy path, step by step ----------------------------------------------------------


def test_socket_first_then_post_with_our_ids_then_follow() -> None:
    job = new_job()
    first = job.decide()
    assert isinstance(first, OpenStream) and first.client_id in first.url
    open_stream(job)
    post = job.decide()
    assert isinstance(post, HttpRequest) and (post.method, post.purpose) == ("POST", "prompt")
    assert post.json_body["client_id"] == first.client_id
    job.do(post, {"prompt_id": post.json_body["prompt_id"], "number": 3, "node_errors": {}})
    accepted = only(job.decide(), RemoteJobAccepted)
    assert accepted.remote_id == post.json_body["prompt_id"]
    job.apply(job.decide())
    assert job.decide().purpose == "system_stats"
    job.do(job.decide(), recording()[0]["body"])
    follow = job.decide()
    assert isinstance(follow, FollowStream)
    assert follow.context["prompt_id"] == prompt(job)
    assert follow.context["classes"]["8"] == "KSampler"


def test_a_quiet_stream_is_checked_in_queue_and_history() -> None:
    """Issue #25 defect 2: a socket can stay open and hear nothing (ComfyUI popped its client
    id). The follow is bounded by quiet_s; each quiet spell asks /queue (and /history when it
    is gone from the queue), the wait doubling while the prompt stays queued."""
    job = accepted(new_job())
    follow = job.decide()
    assert isinstance(follow, FollowStream) and follow.quiet_s == 5.0
    job.add(StreamQuiet(5.0), after=5)
    look = job.decide()
    assert isinstance(look, HttpRequest) and look.url == f"{URL}/queue"
    item = [5, prompt(job), {}, {}, ["10"]]
    job.do(look, {"queue_running": [item], "queue_pending": []})
    again = job.decide()
    assert isinstance(again, FollowStream) and again.quiet_s == 10.0
    job.add(StreamQuiet(10.0), after=10)
    look = job.decide()
    assert isinstance(look, HttpRequest) and look.url == f"{URL}/queue"
    job.do(look, {"queue_running": [], "queue_pending": []})
    history = job.decide()
    assert isinstance(history, HttpRequest) and history.url == f"{URL}/history/{prompt(job)}"
    entry = {
        "status": {"status_str": "success", "completed": True},
        "outputs": {"9": {"images": [{"filename": "a.png", "subfolder": "", "type": "output"}]}},
    }
    job.do(history, {prompt(job): entry})
    assert isinstance(job.decide(), StoreImage)
    # The stream speaking again starts the waits over.
    job.add(ProgressObserved("KSampler", 2, 8))
    assert comfyui.machine._quiet_looks(job.state) == 0


@pytest.mark.parametrize(
    "renewal",
    [RunnerRenewed(100, 120.0), RunnerClaimed(100, "host", 120.0, "1")],
    ids=["RunnerRenewed", "legacy-renewal-as-RunnerClaimed"],
)
def test_a_lease_renewal_mid_stream_keeps_following(renewal: Event) -> None:
    job = accepted(new_job())
    before = comfyui.client_id(job.state)
    job.add(ProgressObserved("KSampler", 1, 8), renewal, after=50)
    follow = job.decide()
    assert isinstance(follow, FollowStream), follow
    assert comfyui.client_id(job.state) == before


def test_another_process_does_not_inherit_the_socket() -> None:
    job = accepted(new_job())
    job.add(RunnerClaimed(200, "host", 120.0, "777", resumed=True))
    reopen = job.decide()
    assert isinstance(reopen, OpenStream)
    # A fresh client id for every connection: reconnecting under the posted one, the old
    # connection's late close would pop the new socket from ComfyUI's table (issue #25 #2).
    posted = next(e.body for e in _events(job, RequestSent) if e.purpose == "prompt")
    assert reopen.client_id != posted["client_id"]
    assert reopen.client_id in reopen.url
    job.opened(reopen)
    # The prompt's messages go to the id it was posted under: never waited for on this
    # socket; /queue says where the prompt is, then /history is polled.
    where = job.decide()
    assert isinstance(where, HttpRequest) and where.url.endswith("/queue"), where


def _events(job: History, kind: type) -> list[Any]:
    return [r.event for r in job.state.history if isinstance(r.event, kind)]


# -- after a drop: reconnect, locate, resubmit when lost --------------------------------------


def test_a_drop_reconnects_at_once_then_backs_off() -> None:
    job = accepted(new_job())
    job.add(StreamClosed("dropped", "ConnectionClosedError"))
    first = job.decide()
    assert isinstance(first, OpenStream) and first.not_before is None
    delays = []
    for _ in range(6):
        action = job.decide()
        assert isinstance(action, OpenStream)
        if action.not_before:
            then = datetime.fromisoformat(action.not_before.replace("Z", "+00:00"))
            delays.append(round((then - job.state.now).total_seconds(), 2))  # type: ignore[operator]
        rid = f"stream-{job.state.version + 1}"
        job.add(
            RequestSent(rid, "stream", "GET", action.url),
            RequestFailed(rid, "stream", "unreachable", "refused"),
        )
    assert delays[:4] == pytest.approx([0.25, 0.5, 1.0, 2.0])  # after each failure
    assert max(delays) <= comfyui.RECONNECT_CAP_S


def test_unreachable_past_the_deadline_is_interrupted_not_failed() -> None:
    job = accepted(new_job(timeout_s=5))
    job.add(StreamClosed("dropped", "x"))
    action = job.decide()
    rid = "stream-x"
    job.add(RequestSent(rid, "stream", "GET", action.url), after=6)
    job.add(RequestFailed(rid, "stream", "unreachable", "refused"))
    interrupted = only(job.decide(), JobInterrupted)
    assert interrupted.signal.startswith("unreachable")
    assert not any(isinstance(r.event, JobFailed) for r in job.state.history)


@pytest.mark.parametrize(
    "queue, expect",
    [
        # Posted under the dropped connection's client id: the new socket never hears of it,
        # so /history is polled (repeats summarised), not the stream followed.
        ("running", "poll"),
        ("pending", "poll"),
        ("neither", "history"),
    ],
)
def test_after_reconnecting_the_prompt_is_located(queue: str, expect: Any) -> None:
    job = accepted(new_job())
    job.add(StreamClosed("dropped", "x"))
    open_stream(job)
    look = job.decide()
    assert isinstance(look, HttpRequest) and (look.method, look.url) == ("GET", f"{URL}/queue")
    item = [5, prompt(job), {}, {}, ["10"]]
    body = {
        "running": {"queue_running": [item], "queue_pending": []},
        "pending": {"queue_running": [[4, "other", {}, {}, []]], "queue_pending": [item]},
        "neither": {"queue_running": [], "queue_pending": []},
    }[queue]
    job.do(look, body)
    action = job.decide()
    if expect == "poll":
        assert isinstance(action, HttpRequest) and action.repeat_for_s > 0, action
        assert action.url == f"{URL}/history/{prompt(job)}"
    elif expect == "history":
        assert isinstance(action, HttpRequest) and action.url == f"{URL}/history/{prompt(job)}"
    else:
        assert isinstance(action, expect)


def test_a_prompt_the_server_lost_is_submitted_again_with_a_new_id() -> None:
    job = accepted(new_job())
    lost = prompt(job)
    job.add(StreamClosed("dropped", "x"))
    open_stream(job)
    job.do(job.decide(), {"queue_running": [], "queue_pending": []})
    job.do(job.decide(), {})  # /history/{id}: unknown (ComfyUI restarted)
    decision = job.decide()
    assert only(decision, LookupConcluded).decision == "resubmit"
    job.apply(decision)
    assert comfyui.current_prompt(job.state) is None
    post = job.decide()
    assert isinstance(post, HttpRequest) and post.purpose == "prompt"
    assert post.json_body["prompt_id"] != lost
    job.do(post, {"prompt_id": post.json_body["prompt_id"], "number": 1, "node_errors": {}})
    job.apply(job.decide())
    assert prompt(job) == post.json_body["prompt_id"]
    assert isinstance(job.decide(), FollowStream)  # posted with the socket open


def test_a_finished_prompt_found_on_reconnect_is_fetched() -> None:
    job = accepted(new_job())
    job.add(StreamClosed("dropped", "x"))
    open_stream(job)
    job.do(job.decide(), {"queue_running": [], "queue_pending": []})
    history = recording()[89]["body"]
    body = {prompt(job): next(iter(history.values()))}
    job.do(job.decide(), body)
    fetch = job.decide()
    assert isinstance(fetch, StoreImage) and "filename=ignored_00001_.png" in fetch.url


def test_execution_success_then_history_then_image_then_result() -> None:
    job = accepted(new_job())
    job.add(StreamMessage("execution_success", {"prompt_id": prompt(job)}))
    hist = job.decide()
    assert isinstance(hist, HttpRequest) and hist.url.endswith(f"/history/{prompt(job)}")
    job.do(hist, {})  # not written yet: asked again shortly
    again = job.decide()
    assert isinstance(again, HttpRequest) and again.not_before is not None
    entry = next(iter(recording()[89]["body"].values()))
    job.do(again, {prompt(job): entry})
    fetch = job.decide()
    assert isinstance(fetch, StoreImage)
    job.add(ImageStored("/tmp/out.png", "ab" * 32, 10, "png", 256, 256, fetch.url))
    result = only(job.decide(), JobSucceeded).result
    assert result["device"] == {"name": "cpu", "type": "cpu"}
    assert result["comfyui_version"] == "0.3.64"
    assert result["vram_total_mib"] == round(25276063744 / 2**20)
    assert result["vram_used_mib"] == round((25276063744 - 23462133760) / 2**20)
    assert result["memory"] == "ram"  # a CPU server's vram_* fields are its RAM
    assert result["model"] == comfyui.DEFAULT_MODEL and result["workflow"] == "flux-schnell"


def test_system_stats_missing_is_asked_again_by_the_next_run_only() -> None:
    job = open_stream(new_job())
    post = job.decide()
    job.do(post, {"prompt_id": post.json_body["prompt_id"], "number": 1, "node_errors": {}})
    job.apply(job.decide())
    job.fail(job.decide(), "timeout")
    assert isinstance(job.decide(), FollowStream)  # metadata never delays the image
    job.add(RunnerClaimed(300, "host", 120.0, "9", resumed=True))
    again = job.decide()
    assert isinstance(again, HttpRequest) and again.purpose == "system_stats"


def test_a_custom_workflow_records_its_file_and_sha256() -> None:
    text = json.dumps({"9": {"class_type": "SaveImage", "inputs": {}}})
    job = new_job(workflow="/home/me/flows/mine.json", workflow_content=text)
    info = comfyui.workflow_info(job.state.request.backend_config)  # type: ignore[union-attr]
    assert info is not None and info["file"] == "mine.json" and len(info["sha256"]) == 64
    assert comfyui.describe_model(job.state.request.backend_config).startswith(  # type: ignore[union-attr]
        "workflow mine.json (sha256 "
    )


def test_multiple_of_16_is_flux_s_rule_not_a_custom_graph_s() -> None:
    from imagen.core.inputs import BadInput

    with pytest.raises(BadInput):
        comfyui.normalise(GenerateInputs("x", 1, size=(100, 100)), {})
    params = comfyui.normalise(GenerateInputs("x", 1, size=(100, 100)), {"workflow": "w.json"})
    assert (params["width"], params["height"]) == (100, 100)


# -- cancel: look where the prompt is ----------------------------------------------------------


def _cancel_job() -> History:
    job = accepted(new_job())
    return job.add(CancelRequested("user"))


def test_cancel_of_a_pending_prompt_deletes_it_and_verifies() -> None:
    job = _cancel_job()
    look = job.decide()
    assert (look.method, look.url) == ("GET", f"{URL}/queue")
    job.do(look, recording()[4]["body"] | {"queue_pending": [[5, prompt(job), {}, {}, []]]})
    delete = job.decide()
    assert (delete.method, delete.url, delete.json_body) == (
        "POST",
        f"{URL}/queue",
        {"delete": [prompt(job)]},
    )
    job.do(delete, "")
    verify = job.decide()
    assert (verify.method, verify.url) == ("GET", f"{URL}/queue")
    job.do(verify, recording()[7]["body"])  # the running one (a bare id) is not ours
    # Gone from the queue: deleted, unless it ran meanwhile; the history tells.
    history = job.decide()
    assert (history.method, history.url) == ("GET", f"{URL}/history/{prompt(job)}")
    job.do(history, {})
    cancelled = only(job.decide(), JobCancelled)
    assert cancelled.remote_cancelled and "deleted" in cancelled.detail
    assert ("POST", f"{URL}/interrupt") not in [
        (e.method, e.url) for e in _events(job, RequestSent)
    ]


def test_a_queued_prompt_that_ran_before_its_delete_is_fetched() -> None:
    # Several jobs cancelled at once (a batch): interrupting the running prompt lets the next
    # one start, and it may finish before its own delete arrives (a delete of a prompt that is
    # no longer pending does nothing). Its image is fetched, not reported deleted.
    job = _cancel_job()
    job.do(job.decide(), {"queue_running": [], "queue_pending": [[5, prompt(job), {}, {}, []]]})
    job.do(job.decide(), "")  # the delete, too late
    job.do(job.decide(), {"queue_running": [], "queue_pending": []})
    image = {"filename": "imagen_00002_.png", "subfolder": "", "type": "output"}
    entry = {
        "status": {"status_str": "success", "completed": True, "messages": []},
        "outputs": {"9": {"images": [image]}},
    }
    job.do(job.decide(), {prompt(job): entry})
    store = job.decide()
    assert isinstance(store, StoreImage) and "imagen_00002_.png" in store.url


def test_cancel_of_a_pending_prompt_that_stays_is_not_claimed() -> None:
    job = _cancel_job()
    pending = {"queue_running": [], "queue_pending": [[5, prompt(job), {}, {}, []]]}
    job.do(job.decide(), pending)
    job.do(job.decide(), "")
    job.do(job.decide(), pending)
    cancelled = only(job.decide(), JobCancelled)
    assert not cancelled.remote_cancelled and "may still run" in cancelled.detail


def test_cancel_of_a_running_prompt_interrupts_and_verifies() -> None:
    job = _cancel_job()
    job.do(job.decide(), {"queue_running": [[5, prompt(job), {}, {}, []]], "queue_pending": []})
    interrupt = job.decide()
    assert (interrupt.url, interrupt.json_body) == (f"{URL}/interrupt", {"prompt_id": prompt(job)})
    job.do(interrupt, "")
    job.do(job.decide(), {})  # not stopped yet
    check = job.decide()
    assert check.url.endswith(f"/history/{prompt(job)}") and check.not_before
    entry = {
        "status": {
            "status_str": "error",
            "completed": False,
            "messages": [["execution_interrupted", {"prompt_id": prompt(job)}]],
        },
        "outputs": {},
    }
    job.do(check, {prompt(job): entry})
    cancelled = only(job.decide(), JobCancelled)
    assert cancelled.remote_cancelled and "interrupted" in cancelled.detail


def test_cancel_never_claims_what_it_could_not_see() -> None:
    job = _cancel_job()
    job.fail(job.decide(), "refused", "down")
    cancelled = only(job.decide(), JobCancelled)
    assert not cancelled.remote_cancelled and "may still run" in cancelled.detail
    job = _cancel_job()
    job.do(job.decide(), {"queue_running": [], "queue_pending": []})
    job.do(job.decide(), {})
    cancelled = only(job.decide(), JobCancelled)
    assert not cancelled.remote_cancelled and "neither queued nor finished" in cancelled.detail


def test_cancel_of_a_prompt_that_already_finished_fetches_its_image() -> None:
    # Running when asked, finished before the interrupt took effect: cancelling saves nothing
    # now, and an image made is never thrown away.
    job = _cancel_job()
    job.do(job.decide(), {"queue_running": [[5, prompt(job), {}, {}, []]], "queue_pending": []})
    job.do(job.decide(), "")  # the interrupt
    image = {"filename": "imagen_00001_.png", "subfolder": "", "type": "output"}
    entry = {
        "status": {"status_str": "success", "completed": True, "messages": []},
        "outputs": {"9": {"images": [image]}},
    }
    job.do(job.decide(), {prompt(job): entry})
    store = job.decide()
    assert isinstance(store, StoreImage) and "imagen_00001_.png" in store.url


def test_timeout_while_following_cancels() -> None:
    job = accepted(new_job())
    job.add(StreamClosed("deadline", "no result before the deadline"))
    assert only(job.decide(), CancelRequested).reason == "timeout"


# -- the recorded real session, frame by frame ------------------------------------------------


def _replay(frames: list[Any], prompt: str, classes: dict[str, str]) -> tuple[list, list, bool]:
    context: dict[str, Any] = {"prompt_id": prompt, "classes": classes, "recorded": {}}
    events: list[Event] = []
    shown: list[Any] = []
    done = False
    for frame in frames:
        out = comfyui.interpret_frame(context, frame)
        context = out.context
        events.extend(out.events)
        if out.progress is not None:
            shown.append(out.progress)
        done = done or out.done
    return events, shown, done


def _recorded_frames() -> list[Any]:
    frames: list[Any] = []
    for ex in recording():
        if "message" in ex:
            frames.append(json.dumps(ex["message"]))
        elif ex["kind"] == "ws binary frame":
            frames.append(b"\x00\x00\x00\x01\x00\x00\x00\x02" + b"\x89PNG" * 4)
    return frames


RECORDED_CLASSES = {
    "1": "PrimitiveString",
    "2": "StringLength",
    "3": "EmptyImage",
    "4": "ImageAddNoise",
    "6": "ImageBlur",
    "7": "SaveImageWebsocket",
    "8": "ImageFromBatch",
    "5": "SaveImage",
}


def test_the_recorded_session_replays_through_the_frame_interpreter() -> None:
    prompt = "8642f564-9a9d-4393-8f53-0ddfe8993cdd"
    events, shown, done = _replay(_recorded_frames(), prompt, RECORDED_CLASSES)
    assert done
    kinds = [e.kind for e in events if isinstance(e, StreamMessage)]
    assert kinds == ["execution_start", "execution_cached", "executed", "execution_success"]
    steps = [(e.status, e.step, e.total) for e in events if isinstance(e, ProgressObserved)]
    # Sparse (first, each quarter, last) and the bar reaches its end (from progress_state:
    # the `progress` messages stop at 15/16).
    assert steps == [("SaveImageWebsocket", s, 16) for s in (0, 4, 8, 12, 16)]
    labels = [p.label for p in shown]
    for name in ("PrimitiveString", "EmptyImage", "ImageBlur", "ImageFromBatch", "SaveImage"):
        assert name in labels  # a node without steps is named by its class_type
    bar = [(p.step, p.total) for p in shown if p.total]
    assert bar[-1] == (16, 16) and all(total == 16 for _, total in bar)
    assert not any("system_stats" in p.label or "HTTP" in p.label for p in shown)


def test_frames_for_other_prompts_and_broadcasts_are_ignored() -> None:
    frames = [
        json.dumps({"type": "status", "data": {"status": {"exec_info": {"queue_remaining": 1}}}}),
        json.dumps({"type": "executing", "data": {"node": "3"}}),  # reconnect: no prompt_id
        json.dumps({"type": "execution_success", "data": {"prompt_id": "someone-else"}}),
        json.dumps({"type": "crystools.monitor", "data": {"cpu_utilization": 3}}),
    ]
    events, shown, done = _replay(frames, "mine", {})
    assert (events, shown, done) == ([], [], False)


def test_executing_null_for_our_prompt_ends_following() -> None:
    frame = json.dumps({"type": "executing", "data": {"node": None, "prompt_id": "p"}})
    out = comfyui.interpret_frame({"prompt_id": "p"}, frame)
    assert out.done and out.events[0].kind == "executing"  # type: ignore[attr-defined]


def test_a_frame_holding_nan_is_ignored_not_recorded() -> None:
    # Python's json accepts NaN; no event may hold it, so such a frame is malformed.
    for text in (
        '{"type": "progress", "data": {"prompt_id": "p", "node": "3", "value": NaN, "max": 4}}',
        '{"type": "execution_error", "data": {"prompt_id": "p", "exception_message": Infinity}}',
    ):
        out = comfyui.interpret_frame({"prompt_id": "p"}, text)
        assert out.events == () and not out.done


# -- hostile and malformed answers never raise ------------------------------------------------


def _hostile_history(pid: str) -> list[Any]:
    return [
        {pid: "a string"},
        {pid: None},
        {pid: {"status": "success"}},
        {pid: {"status": {"status_str": "error", "messages": "x"}}},
        {pid: {"status": {"status_str": "error", "messages": [["execution_error", "x"], [1]]}}},
        {
            pid: {
                "status": {
                    "status_str": "error",
                    "messages": [["execution_error", {"node_type": [1]}]],
                }
            }
        },
        {pid: {"outputs": []}},
        {pid: {"outputs": {"9": "x"}}},
        {pid: {"outputs": {"9": {"images": "a.png"}}}},
        {pid: {"outputs": {"9": {"images": ["a.png", None]}}}},
        {pid: {"outputs": {"9": {"images": [{"filename": 5}]}}}},
        {pid: {"outputs": {"9": {"images": [{"filename": "a.png", "subfolder": ["x"]}]}}}},
        [pid],
    ]


@pytest.mark.parametrize("body_index", range(13))
def test_each_malformed_history_is_a_recorded_protocol_error(body_index: int) -> None:
    job = accepted(new_job())
    job.add(StreamMessage("execution_success", {"prompt_id": prompt(job)}))
    body = _hostile_history(prompt(job))[body_index]
    for _ in range(comfyui.MALFORMED_RETRIES + 1):
        action = job.decide()
        while isinstance(action, Record):
            job.apply(action)
            if job.state.finished:
                break
            action = job.decide()
        if job.state.finished or isinstance(action, StoreImage):
            break
        job.do(action, body)
    final = job.decide()
    if isinstance(final, Record):
        job.apply(final)
    terminal = job.state.terminal
    # Either a clear failure (what was wrong, or ComfyUI's own error) or a fetch of a valid
    # image; never an exception.
    assert isinstance(terminal, JobFailed) or isinstance(final, StoreImage), (terminal, final)
    if isinstance(terminal, JobFailed) and terminal.reason == "protocol":
        assert "malformed" in terminal.message
        assert sum(isinstance(r.event, RetryScheduled) for r in job.state.history) == 2


def test_without_websockets_the_adapter_asks_for_compact_polls() -> None:
    job = accepted(new_job())
    job.add(StreamClosed("dropped", "x"))
    action = job.decide()
    rid = "stream-h"
    job.add(
        RequestSent(rid, "stream", "GET", action.url),
        RequestFailed(rid, "stream", "handshake", "InvalidStatus: HTTP 404"),
    )
    job.do(job.decide(), {"queue_running": [[1, prompt(job), {}, {}, []]], "queue_pending": []})
    poll = job.decide()
    assert isinstance(poll, HttpRequest) and poll.url.endswith(f"/history/{prompt(job)}")
    assert poll.repeat_for_s > 0 and poll.repeat_every_s == 0.5
    job.do(poll, {})  # a quiet window: is it still queued?
    check = job.decide()
    assert isinstance(check, HttpRequest) and check.url.endswith("/queue")


def test_a_quiet_look_shows_what_the_queue_says_running_or_queued() -> None:
    """When the stream goes quiet and /queue is asked, the display then says what /queue says,
    not always "queued in ComfyUI" (issue #25, item 6). (A reconnect or resume polls: a new
    socket's client id never hears of the prompt.)"""
    from imagen.core.events import StreamQuiet

    for where, shown in (("queue_running", "running in ComfyUI"), ("queue_pending", "queued")):
        job = accepted(new_job())
        job.add(StreamQuiet(5.0))
        other = {"queue_running": [], "queue_pending": []}
        look = job.decide()
        assert isinstance(look, HttpRequest) and look.purpose == "queue", look
        job.do(look, {**other, where: [[1, prompt(job), {}, {}, []]]})
        follow = job.decide()
        assert isinstance(follow, FollowStream), follow
        assert follow.waiting is not None and follow.waiting.label.startswith(shown), where
