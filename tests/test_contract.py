"""The job contract end to end: a trivial adapter, the real runner, the real CLI and ledger."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from imagen.core.actions import HttpRequest, Record, StoreImage
from imagen.core.events import (
    ImageStored,
    JobRequested,
    JobSucceeded,
    RequestFailed,
    RequestSent,
    ResponseReceived,
    RetryScheduled,
)
from imagen.core.job import JobState, Recorded, evolve
from tests.support import echo_backend as echo
from tests.support.cli import Sandbox
from tests.support.echo import TOKEN, EchoServer


def test_generate_runs_the_contract_end_to_end(sandbox: Sandbox, echo_server: EchoServer) -> None:
    result = sandbox.run("generate", "a red square", "--seed", "7")
    assert result.returncode == 0, result.stderr
    image = Path(result.stdout.strip())
    assert image.exists() and image.name.endswith("-a-red-square-7.png")
    [job_id] = sandbox.job_ids()
    assert sandbox.types(job_id) == [
        "JobRequested",
        "RunnerClaimed",
        "RequestSent",
        "ResponseReceived",
        "RequestSent",
        "ResponseReceived",
        "ImageStored",
        "JobSucceeded",
    ]
    sidecar = json.loads(Path(f"{image}.json").read_text())
    assert (
        sidecar["job_id"] == job_id and sidecar["seed"] == 7 and sidecar["prompt"] == "a red square"
    )
    assert echo_server.auth == [f"Bearer {TOKEN}"]
    assert TOKEN not in sandbox.ledger_text() and TOKEN not in Path(f"{image}.json").read_text()
    assert sandbox.store().verify().ok


def test_a_transient_failure_is_retried_as_an_event(
    sandbox: Sandbox, echo_server: EchoServer
) -> None:
    echo_server.fail = 1
    result = sandbox.run("generate", "retry me", "--seed", "1")
    assert result.returncode == 0, result.stderr
    [job_id] = sandbox.job_ids()
    types = sandbox.types(job_id)
    assert types.count("RetryScheduled") == 1 and types.count("JobSucceeded") == 1


def test_two_failures_fail_the_job_with_exit_1(sandbox: Sandbox, echo_server: EchoServer) -> None:
    echo_server.fail = 2
    result = sandbox.run("generate", "fail me")
    assert result.returncode == 1
    assert "render failed: HTTP 503" in result.stderr
    # Nothing written anywhere in the sandbox (where a success writes its image and sidecar),
    # and the ledger agrees.
    assert not [p for p in sandbox.root.rglob("*") if p.suffix in (".png", ".json")]
    assert "ImageStored" not in sandbox.types(sandbox.only_job())


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["generate", ""], "prompt is empty"),
        (["generate", "x", "--size", "big"], "WIDTHxHEIGHT"),
        (["generate", "x", "--backend", "nope"], "unknown backend 'nope'"),
        (["generate", "x", "-o", "=3"], "key=value"),
    ],
)
def test_bad_input_exits_2_and_records_nothing(
    sandbox: Sandbox, args: list[str], message: str
) -> None:
    result = sandbox.run(*args)
    assert result.returncode == 2, result.stderr
    assert message in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert sandbox.job_ids() == []


def test_missing_token_is_bad_input(sandbox: Sandbox) -> None:
    result = sandbox.run("generate", "x", env={"ECHO_TOKEN": ""})
    assert result.returncode == 2 and "set ECHO_TOKEN" in result.stderr


def test_existing_output_is_refused_without_force(sandbox: Sandbox, tmp_path: Path) -> None:
    target = tmp_path / "keep.png"
    target.write_bytes(b"precious")
    assert sandbox.run("generate", "x", "--output", str(target)).returncode == 2
    assert target.read_bytes() == b"precious"
    assert sandbox.run("generate", "x", "--output", str(target), "--force").returncode == 0
    assert target.read_bytes().startswith(b"\x89PNG")


# -- the adapter is a pure function of the events ---------------------------------------------

T0 = datetime(2026, 11, 24, 12, tzinfo=UTC)


def _state(*events: object) -> JobState:
    state = JobState("j")
    for i, e in enumerate(events, start=1):
        state = evolve(state, Recorded(e, i, T0 + timedelta(seconds=i)))  # type: ignore[arg-type]
    return state


REQ = JobRequested(
    "echo",
    "echo",
    "echo",
    "p",
    {"seed": 1, "width": 64, "height": 64},
    {"url": "http://x/render"},
    "/tmp/o.png",
)


def test_decide_is_pure_and_follows_the_events() -> None:
    first = echo.decide(_state(REQ))
    assert isinstance(first, HttpRequest) and first.url == "http://x/render?seed=1&w=64&h=64"
    assert echo.decide(_state(REQ)) == first  # same events, same decision
    sent = RequestSent(first.request_id, "render", "GET", first.url)
    failed = RequestFailed(first.request_id, "render", "refused", "nope")
    retry = echo.decide(_state(REQ, sent, failed))
    assert isinstance(retry, Record) and isinstance(retry.events[0], RetryScheduled)
    ok = ResponseReceived(first.request_id, "render", 200, body={"image": "data:,x"})
    store = echo.decide(_state(REQ, sent, ok))
    assert isinstance(store, StoreImage) and store.dest == "/tmp/o.png"
    # A request recorded as sent but never answered: the process died; rendering is free.
    assert isinstance(echo.decide(_state(REQ, sent)), HttpRequest)
    # Success is recorded only once the image is stored, never on the render's answer alone.
    for history in ((REQ,), (REQ, sent), (REQ, sent, failed), (REQ, sent, ok)):
        action = echo.decide(_state(*history))
        assert not isinstance(action, Record) or not any(
            isinstance(e, JobSucceeded) for e in action.events
        ), history
    stored = ImageStored("/tmp/o.png", "ab" * 32, 10, "png", 64, 64)
    assert echo.decide(_state(REQ, sent, ok, stored)) == Record(
        (JobSucceeded({"path": "/tmp/o.png", "sha256": "ab" * 32}),)
    )
