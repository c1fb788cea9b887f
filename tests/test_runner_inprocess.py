"""The runner driven in-process: its HTTP and websocket transports and its Environment are
arguments, so a test can watch or disturb what it does without a subprocess. The backends are
the protocol doubles on 127.0.0.1; the transports wrap the real ones. (Signals and kill -9 stay
subprocess tests: tests/test_crash.py, tests/test_jobs_audit.py.)"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from imagen.app.runners import new_runner
from imagen.core.events import AcceptedVia, RemoteJobAccepted, RequestSent, StreamClosed
from imagen.core.inputs import GenerateInputs
from imagen.runner.http import Http, Reply
from imagen.runner.transports import Stream, StreamDropped, Websockets
from ledger import NewEvent, open_store
from tests.support.doubles import TOKEN_ENV, comfyui_double, replicate_double
from tests.support.inprocess import ManualTime, drive, environment, prepared


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Any]:
    s = open_store(f"sqlite:///{tmp_path / 'ledger.db'}")
    yield s
    s.close()


class RecordingHttp:
    """The real client, noting each request it is asked to send."""

    def __init__(self) -> None:
        self.real = Http()
        self.sent: list[tuple[str, str]] = []

    def send(self, method: str, url: str, **kwargs: Any) -> Reply:
        self.sent.append((method, url))
        return self.real.send(method, url, **kwargs)


def test_waits_go_through_the_environment_and_requests_through_the_transport(
    tmp_path: Path, store: Any
) -> None:
    time = ManualTime()
    http = RecordingHttp()
    with replicate_double() as rep:
        rep.fail_next("create", status=429, retry_after=3)
        envt = environment(dict(TOKEN_ENV), time)
        job = prepared(
            tmp_path / "out",
            "replicate",
            {"base_url": rep.url, "retry_base_s": 0.01, "poll_interval_s": 0.05},
            GenerateInputs("a kite", seed=5),
            envt,
        )
        state = drive(store, job, envt, http=http)
        billed = rep.billed
    assert state.status == "succeeded", state.terminal
    assert billed == 1
    # Retry-After: 3 was honoured by sleeping through the injected environment, not the wall.
    assert sum(time.slept) >= 2.0
    # Every request the transport sent is one the ledger recorded first, in the same order.
    recorded = [
        (r.event.method, r.event.url)
        for r in state.history
        if isinstance(r.event, RequestSent) and r.event.purpose != "stream"
    ]
    assert http.sent == recorded and [m for m, _ in http.sent].count("POST") == 2


class DroppingStreams:
    """The real websocket, which this transport closes after `keep` messages."""

    def __init__(self, keep: int) -> None:
        self.keep = keep
        self.opened = 0

    def connect(self, url: str, *, headers: dict[str, str], timeout_s: float) -> Stream:
        self.opened += 1
        return _Dropping(Websockets().connect(url, headers=headers, timeout_s=timeout_s), self.keep)


class _Dropping:
    def __init__(self, inner: Stream, keep: int) -> None:
        self.inner, self.left = inner, keep

    def recv(self, timeout: float) -> str | bytes:
        if self.left == 0:
            raise StreamDropped("dropped by the test transport")
        message = self.inner.recv(timeout)
        self.left -= 1
        return message

    def close(self) -> None:
        self.inner.close()


def test_a_stream_transport_that_drops_is_reconnected_and_the_prompt_located(
    tmp_path: Path, store: Any
) -> None:
    streams = DroppingStreams(keep=1)
    with comfyui_double() as comfy:
        envt = environment({})
        job = prepared(
            tmp_path / "out",
            "comfyui",
            {"url": comfy.url, "poll_interval_s": 0.05, "retry_base_s": 0.01},
            GenerateInputs("a kite", seed=5, size=(256, 256)),
            envt,
        )
        state = drive(store, job, envt, streams=streams)
        executed = comfy.executed
    assert state.status == "succeeded", state.terminal
    # After the drop the runner reconnects (the adapter asks) and looks the prompt up in /queue
    # and /history before following again: the image comes either way, with one execution.
    assert executed == 1 and streams.opened >= 2
    purposes = [r.event.purpose for r in state.history if isinstance(r.event, RequestSent)]
    assert "queue" in purposes[purposes.index("prompt") :]
    closed = [r.event for r in state.history if isinstance(r.event, StreamClosed)]
    assert closed and closed[0].reason == "dropped" and "test transport" in closed[0].message
    assert state.image is not None and Path(state.image.path).exists()


class DeafStreams:
    """The real websocket, deaf from the start: what a socket ComfyUI popped from its table
    hears (nothing), while it stays open. Its waits pass on the test's clock, once the double
    has finished every prompt (so what the quiet check finds never depends on speed)."""

    def __init__(self, comfy: Any, time: ManualTime) -> None:
        self.comfy, self.time = comfy, time

    def connect(self, url: str, *, headers: dict[str, str], timeout_s: float) -> Stream:
        return _Deaf(Websockets().connect(url, headers=headers, timeout_s=timeout_s), self)


class _Deaf:
    def __init__(self, inner: Stream, streams: DeafStreams) -> None:
        self.inner, self.streams = inner, streams

    def recv(self, timeout: float) -> str | bytes:
        comfy = self.streams.comfy
        comfy.wait_until(lambda c: c.submitted and c.running is None, timeout=120)
        self.streams.time.sleep(timeout)
        raise TimeoutError

    def close(self) -> None:
        self.inner.close()


def test_a_deaf_stream_is_noticed_by_its_quiet_and_the_image_found(
    tmp_path: Path, store: Any
) -> None:
    """Issue #25 defect 2: an open socket that hears nothing is no reason to wait for the
    deadline. After quiet_s without a word the runner records StreamQuiet; /queue and /history
    find the finished prompt."""
    time = ManualTime()
    with comfyui_double() as comfy:
        envt = environment({}, time)
        job = prepared(
            tmp_path / "out",
            "comfyui",
            {"url": comfy.url, "poll_interval_s": 0.05, "retry_base_s": 0.01},
            GenerateInputs("a kite", seed=5, size=(256, 256)),
            envt,
        )
        started = time.now
        state = drive(store, job, envt, streams=DeafStreams(comfy, time))
        executed = comfy.executed
    assert state.status == "succeeded", state.terminal
    assert executed == 1
    kinds = [type(r.event).__name__ for r in state.history]
    assert kinds.count("StreamQuiet") == 1 and "CancelRequested" not in kinds
    assert (time.now - started).total_seconds() < 10  # the first quiet spell, not the deadline
    assert len(kinds) < 40, kinds


class ShownProgress:
    """A reporter noting what the progress display would show."""

    def __init__(self) -> None:
        self.shown: list[tuple[int | None, int | None, str]] = []

    def event(self, state: Any, rec: Any) -> None:
        pass

    def progress(self, step: int | None, total: int | None, label: str = "") -> None:
        self.shown.append((step, total, label))


def test_comfyui_progress_is_what_a_user_sees(tmp_path: Path, store: Any) -> None:
    from imagen.app.runners import new_runner

    reporter = ShownProgress()
    with comfyui_double() as comfy:
        envt = environment({})
        job = prepared(
            tmp_path / "out",
            "comfyui",
            {"url": comfy.url},
            GenerateInputs("a kite", seed=5, size=(256, 256), steps=6),
            envt,
        )
        runner = new_runner(store, envt, reporter)
        runner.submit(job.job_id, job.request)
        state = runner.run(job.job_id)
    assert state.status == "succeeded", state.terminal
    assert reporter.shown[0] == (None, None, "queued in ComfyUI")
    bar = [(step, total) for step, total, label in reporter.shown if label == "KSampler" and total]
    assert bar[0] == (1, 6) and bar[-1] == (6, 6)  # the sampler's steps, to the end
    labels = {label for _, total, label in reporter.shown if total is None}
    assert {"UNETLoader", "VAEDecode", "SaveImage"} <= labels  # nodes without steps by name
    assert not any("HTTP" in label or "system_stats" in label for *_, label in reporter.shown)


class AdoptingRival:
    """The store, except that right after `job` records which remote ids others hold (its
    RemoteIdsHeld check), the rival job adopts the first of them: the instant between the
    check and this job's own adoption, which two processes resuming at once can hit."""

    def __init__(self, store: Any, job: str, rival: str) -> None:
        self.store, self.job, self.rival = store, job, rival
        self.struck: str | None = None

    def __getattr__(self, name: str) -> Any:
        return getattr(self.store, name)

    def append(self, stream_id: str, events: list[NewEvent], *args: Any, **kwargs: Any) -> Any:
        recorded = self.store.append(stream_id, events, *args, **kwargs)
        checks = [e for e in events if e.type == "RemoteIdsHeld"]
        if stream_id == self.job and checks and self.struck is None:
            self.struck = checks[0].data["checked"][0]
            taken = RemoteJobAccepted(self.struck, via=AcceptedVia.LOOKUP)
            self.store.append(
                self.rival,
                [NewEvent(taken.type_name(), taken.to_data(), taken.SCHEMA_VERSION)],
                self.store.stream_version(self.rival),
            )
        return recorded


def test_a_prediction_another_job_adopted_after_the_check_is_not_adopted_again(
    tmp_path: Path, store: Any
) -> None:
    """Two jobs with one input, both looking up after an unanswered create: the other job
    adopts the prediction between this job's RemoteIdsHeld check and its adoption. The
    adoption's guard (under the write lock) sees it, so this job creates its own prediction
    instead: one prediction, one job."""
    time = ManualTime()
    with replicate_double() as rep:
        envt = environment(dict(TOKEN_ENV), time)
        options = {"base_url": rep.url, "retry_base_s": 0.01, "poll_interval_s": 0.05}
        inputs = GenerateInputs("one kite, twice", seed=9)
        rival = prepared(tmp_path / "a", "replicate", options, inputs, envt)
        new_runner(store, envt).submit(rival.job_id, rival.request)
        job = prepared(tmp_path / "b", "replicate", options, inputs, envt)
        rep.reset_after_create(1)  # the create is made and billed; its answer is lost
        racing = AdoptingRival(store, job.job_id, rival.job_id)
        state = drive(racing, job, envt)
        billed = rep.billed
    assert racing.struck is not None, "the lookup never checked who holds the prediction"
    mine = [r.event.remote_id for r in state.history if isinstance(r.event, RemoteJobAccepted)]
    assert state.status == "succeeded", state.terminal
    assert racing.struck not in mine and len(mine) == 1
    assert billed == 2  # the lost create's prediction is the rival's; this job paid for its own
