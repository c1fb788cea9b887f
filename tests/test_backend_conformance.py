"""One conformance suite, written once and run against every registered backend (and the echo
test adapter the tests register): the contract is declared, decide is a pure, total function
of the recorded history, and every path (success, failure, cancel) ends in a terminal event.

Histories come from real runs: the real app layer and Runner in this process, against the
protocol doubles on 127.0.0.1 (tests/support/inprocess.py). A backend added to the registry
without a harness here fails `test_every_registered_backend_has_a_harness`.
"""

from __future__ import annotations

import dataclasses
import inspect
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, get_args

import pytest

from imagen import backends
from imagen.app.runners import new_runner
from imagen.backends.contract import Backend, Option
from imagen.core.actions import (
    Action,
    FollowStream,
    HttpRequest,
    OpenStream,
    Record,
    StoreImage,
)
from imagen.core.events import (
    TERMINAL_TYPES,
    CancelRequested,
    Event,
    ImageStored,
    JobCancelled,
    JobRequested,
    ProgressObserved,
    RequestFailed,
    RequestSent,
    ResponseReceived,
    RunnerClaimed,
    RunnerRenewed,
    StreamClosed,
    StreamMessage,
    StreamOpened,
)
from imagen.core.inputs import BadInput, GenerateInputs
from imagen.core.job import JobState, Recorded, fold
from imagen.runner.loop import NullReporter
from ledger import open_store
from tests.support.doubles import TOKEN, TOKEN_ENV, comfyui_double, replicate_double
from tests.support.echo import EchoServer
from tests.support.inprocess import environment, prepared

ACTION_TYPES = get_args(Action)
REQUESTS = (HttpRequest, StoreImage, OpenStream, FollowStream)


@dataclass
class Live:
    """A running double for one backend: the config that reaches it and how to break it."""

    options: dict[str, Any]
    env: dict[str, str]
    fail: Callable[[], None]  # make the next job fail on the backend's side


@dataclass(frozen=True)
class Harness:
    serve: Callable[[], Any]  # a context manager yielding Live
    inputs: GenerateInputs


@contextmanager
def _replicate() -> Iterator[Live]:
    with replicate_double() as rep:
        rep.behaviour(polls=1)  # create, a poll, the download: every request kind
        yield Live(
            {"base_url": rep.url, "poll_interval_s": 0.05, "retry_base_s": 0.01, "wait_s": 1},
            dict(TOKEN_ENV),
            lambda: rep.behaviour(fail_with="CUDA out of memory"),
        )


@contextmanager
def _comfyui() -> Iterator[Live]:
    with comfyui_double() as comfy:
        yield Live(
            {"url": comfy.url, "poll_interval_s": 0.05, "retry_base_s": 0.01},
            {},
            lambda: comfy.execution_error(),
        )


@contextmanager
def _echo() -> Iterator[Live]:
    server = EchoServer()
    try:

        def fail() -> None:
            server.fail = 2

        yield Live({"url": server.url, "token_env": "ECHO_TOKEN"}, {"ECHO_TOKEN": TOKEN}, fail)
    finally:
        server.close()


HARNESSES: dict[str, Harness] = {
    "replicate": Harness(_replicate, GenerateInputs("a lighthouse", seed=11)),
    "comfyui": Harness(_comfyui, GenerateInputs("a lighthouse", seed=11, size=(256, 256))),
    "echo": Harness(_echo, GenerateInputs("a lighthouse", seed=11)),
}
NAMES = backends.names()  # the production registry plus what the tests registered (echo)


def test_the_suite_covers_the_production_registry_and_echo() -> None:
    assert {"replicate", "comfyui", "echo"} <= set(NAMES)


@pytest.mark.parametrize("name", NAMES)
def test_every_registered_backend_has_a_harness(name: str) -> None:
    assert name in HARNESSES, f"add a conformance harness for the {name!r} backend"


# -- the declared contract --------------------------------------------------------------------


def _protocol_members() -> tuple[set[str], dict[str, inspect.Signature]]:
    data = set(Backend.__annotations__)
    methods = {
        n: inspect.signature(f)
        for n, f in vars(Backend).items()
        if inspect.isfunction(f) and not n.startswith("_")
    }
    return data, methods


@pytest.mark.parametrize("name", NAMES)
def test_the_adapter_satisfies_the_contract(name: str) -> None:
    module = backends.load(name)
    data, methods = _protocol_members()
    assert data == {"CONFIG", "DEFAULT_MODEL", "FILE_OPTIONS", "RECORDED_HEADERS"}
    assert set(methods) >= {
        "decide",
        "interpret_frame",
        "normalise",
        "validate_request",
        "status",
        "probe_request",
        "probe_verdict",
    }
    for attr in data:
        assert hasattr(module, attr), f"{name} lacks {attr}"
    assert isinstance(module.CONFIG, Mapping) and all(
        isinstance(k, str) and isinstance(v, Option) for k, v in module.CONFIG.items()
    )
    assert isinstance(module.DEFAULT_MODEL, str) and module.DEFAULT_MODEL
    assert isinstance(module.FILE_OPTIONS, tuple)
    assert all(key in module.CONFIG for key in module.FILE_OPTIONS)
    assert isinstance(module.RECORDED_HEADERS, frozenset) and module.RECORDED_HEADERS
    assert all(h == h.lower() for h in module.RECORDED_HEADERS)
    assert not module.RECORDED_HEADERS & {"authorization", "set-cookie", "cookie"}
    for method, signature in methods.items():
        function = getattr(module, method, None)
        assert callable(function), f"{name} lacks {method}"
        wanted = [p for p in signature.parameters if p != "self"]
        assert list(inspect.signature(function).parameters) == wanted, (name, method)


@pytest.mark.parametrize("name", NAMES)
def test_status_and_probe_answer_in_words(name: str) -> None:
    module = backends.load(name)
    options = {"url": "http://127.0.0.1:9", "base_url": "http://127.0.0.1:9"}
    assert isinstance(module.status(options, {}), str)
    method, url, auth_env = module.probe_request(options)
    assert method in ("GET", "HEAD") and url.startswith("http://127.0.0.1:9")
    assert auth_env is None or isinstance(auth_env, str)
    for status, body in ((200, {}), (401, "no"), (500, "<html>"), (200, None), (204, [])):
        assert isinstance(module.probe_verdict(status, body), str)


BAD_INPUTS = [
    GenerateInputs("x", seed=1, output_format="bmp"),
    GenerateInputs("x", seed=1, aspect="7:5"),
    GenerateInputs("x", seed=1, steps=100_000),  # past ComfyUI's 10000 and every FLUX model
]


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("bad", BAD_INPUTS, ids=["format", "aspect", "steps"])
def test_normalise_rejects_bad_input_with_bad_input(name: str, bad: GenerateInputs) -> None:
    module = backends.load(name)
    with pytest.raises(BadInput) as raised:
        module.normalise(bad, {"model": module.DEFAULT_MODEL})
    assert str(raised.value) and "\n" not in str(raised.value)


@pytest.mark.parametrize("name", NAMES)
def test_normalise_accepts_the_harness_input(name: str) -> None:
    module = backends.load(name)
    params = module.normalise(HARNESSES[name].inputs, {"model": module.DEFAULT_MODEL})
    assert params["seed"] == 11 and params["output_format"] in ("png", "webp", "jpg")
    assert isinstance(params["width"], int) and isinstance(params["height"], int)


# -- decide over recorded histories -----------------------------------------------------------


class _InterruptAt(NullReporter):
    """A reporter that presses Ctrl-C (KeyboardInterrupt) once, right after the n-th event the
    run records: the runner's own path for a user's cancel."""

    def __init__(self, n: int | None) -> None:
        self.n = n
        self.seen = 0

    def event(self, state: JobState, rec: Recorded) -> None:
        self.seen += 1
        if self.n is not None and self.seen == self.n:
            raise KeyboardInterrupt


def _run(
    tmp_path: Path, name: str, *, fail: bool = False, interrupt_at: int | None = None
) -> tuple[JobState, list[Recorded]]:
    """Drive one job in-process; return its final state and its history read back."""
    harness = HARNESSES[name]
    store = open_store(f"sqlite:///{tmp_path / 'ledger.db'}")
    try:
        with harness.serve() as live:
            if fail:
                live.fail()
            envt = environment(live.env)
            job = prepared(tmp_path / "out", name, live.options, harness.inputs, envt)
            # submit records JobRequested + RunnerClaimed; count from the run's own events.
            runner = new_runner(
                store, envt, _InterruptAt(None if interrupt_at is None else interrupt_at + 2)
            )
            runner.submit(job.job_id, job.request)
            try:
                state = runner.run(job.job_id)
            except KeyboardInterrupt:
                # Only once the job has ended may Ctrl-C reach the caller.
                state = fold(job.job_id, _read(store, job.job_id))
                assert state.finished, "the runner let a Ctrl-C escape from a running job"
        history = list(fold(job.job_id, _read(store, job.job_id)).history)
    finally:
        store.close()
    return state, history


def _read(store: Any, job_id: str) -> list[Recorded]:
    from imagen.repository import to_recorded

    return [to_recorded(e) for e in store.read_stream(job_id)]


_RESULTS = (ResponseReceived, RequestFailed, ImageStored, StreamOpened)  # the runner's records
_STREAM_RESULTS = (ProgressObserved, StreamMessage, StreamClosed)


def _check_decisions(job_id: str, history: list[Recorded]) -> None:
    """At every point where the adapter made a decision, deciding again from the recorded
    prefix gives that same decision; at every point, decide returns an Action."""
    for k in range(1, len(history)):
        prefix = fold(job_id, history[:k])
        if prefix.finished:
            break
        action = backends.load(name_of(prefix)).decide(prefix)
        assert isinstance(action, ACTION_TYPES) and not isinstance(action, Event), action
        assert backends.load(name_of(prefix)).decide(fold(job_id, history[:k])) == action
        nxt = history[k].event
        if isinstance(nxt, (JobRequested, RunnerClaimed, RunnerRenewed, *_RESULTS)) or (
            isinstance(nxt, CancelRequested) and nxt.reason == "user"
        ):
            continue  # recorded by the runner (a result, a claim, Ctrl-C), not decided
        if isinstance(nxt, RequestSent) and nxt.purpose == "stream":
            assert isinstance(action, OpenStream) and action.url == nxt.url
        elif isinstance(nxt, RequestSent) and isinstance(action, StoreImage):
            assert action.request_id == nxt.request_id
        elif isinstance(nxt, RequestSent):
            assert isinstance(action, HttpRequest), (k, action)
            assert (action.request_id, action.method, action.url) == (
                nxt.request_id,
                nxt.method,
                nxt.url,
            )
        elif isinstance(nxt, _STREAM_RESULTS):
            assert isinstance(action, FollowStream), (k, action)
        else:
            assert isinstance(action, Record), (k, action)
            # The runner adds what an ended job commits against budgets to its end
            # (core/events.py SPEND_AT_END): the decision is the end without it.
            recorded = tuple(
                dataclasses.replace(r.event, spend=None) if hasattr(r.event, "spend") else r.event
                for r in history[k : k + len(action.events)]
            )
            assert action.events == recorded, k


def name_of(state: JobState) -> str:
    assert state.request is not None
    return state.request.backend_type


def _no_more_requests(state: JobState) -> None:
    """A job that has ended asks for nothing: no request, and no second terminal event."""
    assert state.finished
    assert backends.load(name_of(state)).decide(state) == Record(())


@pytest.mark.parametrize("name", NAMES)
def test_decide_on_a_fresh_request_asks_for_something(name: str, tmp_path: Path) -> None:
    with HARNESSES[name].serve() as live:
        envt = environment(live.env)
        job = prepared(tmp_path / "out", name, live.options, HARNESSES[name].inputs, envt)
    state = fold(job.job_id, [Recorded(job.request, 1, envt.clock())])
    action = backends.load(name).decide(state)
    assert isinstance(action, REQUESTS), action
    assert backends.load(name).decide(state) == action


@pytest.mark.parametrize("name", NAMES)
def test_happy_path_decisions_replay_and_the_end_asks_for_nothing(
    name: str, tmp_path: Path
) -> None:
    state, history = _run(tmp_path, name)
    assert state.status == "succeeded", state.terminal
    assert history[-1].event.type_name() == "JobSucceeded"
    _check_decisions(state.job_id, history)
    _no_more_requests(state)


@pytest.mark.parametrize("name", NAMES)
def test_a_backend_failure_ends_in_job_failed_and_asks_for_nothing(
    name: str, tmp_path: Path
) -> None:
    state, history = _run(tmp_path, name, fail=True)
    assert state.status == "failed", state.terminal
    _check_decisions(state.job_id, history)
    _no_more_requests(state)


def _cancel_points(name: str, tmp_path: Path) -> int:
    _, history = _run(tmp_path / "happy", name)
    return len(history) - 2  # the events the run records (after JobRequested, RunnerClaimed)


@pytest.mark.parametrize("name", NAMES)
def test_a_cancel_at_any_point_ends_in_a_terminal_event(name: str, tmp_path: Path) -> None:
    """Ctrl-C after each event a happy run records: the job always ends (cancelled, or done if
    the result was already in hand), and decide stays an Action all along."""
    for n in range(1, _cancel_points(name, tmp_path) + 1):
        state, history = _run(tmp_path / f"cancel-{n}", name, interrupt_at=n)
        assert state.finished and state.terminal is not None, (n, state.status)
        assert state.terminal.type_name() in TERMINAL_TYPES
        if state.image is not None:  # an image in hand is never thrown away
            assert state.status == "succeeded", (n, state.terminal)
        elif state.cancel is not None:
            assert isinstance(state.terminal, JobCancelled), (n, state.terminal)
        _check_decisions(state.job_id, history)
        _no_more_requests(state)


@pytest.mark.parametrize(
    "name",
    NAMES,
)
def test_a_cancel_once_the_result_exists_still_fetches_the_image(name: str, tmp_path: Path) -> None:
    """Ctrl-C right after the download was recorded (the backend has made, and on Replicate
    billed, the image): cancelling saves nothing, so the image must still be fetched."""
    _, happy = _run(tmp_path / "happy", name)
    [n] = [
        i - 1  # the run's own events: after JobRequested and RunnerClaimed
        for i, r in enumerate(happy)
        if isinstance(r.event, RequestSent) and r.event.purpose == "download"
    ][:1]
    state, _ = _run(tmp_path / "cancelled", name, interrupt_at=n)
    assert state.cancel is not None
    assert state.status == "succeeded", state.terminal
