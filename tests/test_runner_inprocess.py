"""The runner driven in-process: its HTTP and websocket transports and its Environment are
arguments, so a test can watch or disturb what it does without a subprocess. The backends are
the protocol doubles on 127.0.0.1; the transports wrap the real ones. (Signals and kill -9 stay
subprocess tests: tests/test_crash.py, tests/test_jobs_audit.py.)"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from imagen.core.events import RequestSent, StreamClosed
from imagen.core.inputs import GenerateInputs
from imagen.runner.http import Http, Reply
from imagen.runner.transports import Stream, StreamDropped, Websockets
from imagen.testing.comfyui import ComfyUIDouble
from imagen.testing.replicate import ReplicateDouble
from ledger import open_store
from tests.support.inprocess import ManualTime, drive, environment, prepared

TOKEN = "r8_inprocess_secret_token_0123456789"


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
    with ReplicateDouble(token=TOKEN) as rep:
        rep.fail_next("create", status=429, retry_after=3)
        envt = environment({"REPLICATE_API_TOKEN": TOKEN}, time)
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
    with ComfyUIDouble() as comfy:
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


class ShownProgress:
    """A reporter noting what the progress display would show."""

    def __init__(self) -> None:
        self.shown: list[tuple[int | None, int | None, str]] = []

    def event(self, state: Any, rec: Any) -> None:
        pass

    def progress(self, step: int | None, total: int | None, label: str = "") -> None:
        self.shown.append((step, total, label))


def test_comfyui_progress_is_what_a_user_sees(tmp_path: Path, store: Any) -> None:
    from imagen.runner.loop import Runner

    reporter = ShownProgress()
    with ComfyUIDouble() as comfy:
        envt = environment({})
        job = prepared(
            tmp_path / "out",
            "comfyui",
            {"url": comfy.url},
            GenerateInputs("a kite", seed=5, size=(256, 256), steps=6),
            envt,
        )
        runner = Runner(store, envt, reporter)
        runner.submit(job.job_id, job.request)
        state = runner.run(job.job_id)
    assert state.status == "succeeded", state.terminal
    assert reporter.shown[0] == (None, None, "queued in ComfyUI")
    bar = [(step, total) for step, total, label in reporter.shown if label == "KSampler" and total]
    assert bar[0] == (1, 6) and bar[-1] == (6, 6)  # the sampler's steps, to the end
    labels = {label for _, total, label in reporter.shown if total is None}
    assert {"UNETLoader", "VAEDecode", "SaveImage"} <= labels  # nodes without steps by name
    assert not any("HTTP" in label or "system_stats" in label for *_, label in reporter.shown)
