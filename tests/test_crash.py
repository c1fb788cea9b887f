"""One crash suite: kill -9 right after every kind of event a job records, then `imagen
resume`, on every paying or executing backend (Replicate, ComfyUI).

The runner kills itself (SIGKILL) right after committing the n-th event of a type
(IMAGEN_CRASH_AFTER=<Type>[:n], honoured only with IMAGEN_TESTING=1). Each crash point runs in
the scenario that records that event: success (with a retry and a poll), a lost reply (lookup),
a backend failure, a timeout (cancel), SIGTERM (interrupt), an ambiguous create (force-new).
After the resume the doubles are asked what was paid or executed: one prediction, one prompt;
the ledger's chain verifies; a succeeded job has its image and a sidecar that matches it.
A ComfyUI pool (two members and an overflow Replicate backend) adds the placement events.
"""

from __future__ import annotations

import hashlib
import json
import signal
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from imagen.core.events import CATALOGUE, TERMINAL_TYPES
from imagen.testing.comfyui import ComfyUIDouble
from imagen.testing.replicate import ReplicateDouble
from tests.support.cli import Sandbox
from tests.support.doubles import TOKEN, TOKEN_ENV, comfyui_double, replicate_double

SCHNELL = "black-forest-labs/flux-schnell"


@dataclass
class World:
    """One test's doubles, sandbox and manual clock (for the Replicate double)."""

    kind: str  # "replicate", "comfyui" or "pool"
    box: Sandbox
    rep: ReplicateDouble | None = None
    comfy: ComfyUIDouble | None = None
    shift: list[timedelta] | None = None  # how far the Replicate double's clock is ahead
    members: tuple[ComfyUIDouble, ...] = ()  # a pool's (rep is its overflow backend)

    def _comfys(self) -> list[ComfyUIDouble]:
        return [*([self.comfy] if self.comfy is not None else []), *self.members]

    def paid(self) -> int:
        """Replicate: predictions billed. ComfyUI: prompts queued (a re-post would execute
        the graph again). A pool: both, over its members and its overflow backend."""
        billed = self.rep.billed if self.rep is not None else 0
        return billed + sum(c.submitted for c in self._comfys())

    def made(self) -> int:
        """Images made: ComfyUI executions, plus a pool's overflow predictions."""
        overflowed = self.rep.billed if self.members and self.rep is not None else 0
        return sum(c.executed for c in self._comfys()) + overflowed

    def crash(self, point: str, *args: str) -> Any:
        return self.box.run(*args, env={"IMAGEN_CRASH_AFTER": point})


@dataclass(frozen=True)
class Scenario:
    """How to get a job to record the crash point, and how the resumed job must end."""

    arrange: Callable[[World], None]  # script the double before the run
    run: Callable[[World, str], Any]  # the run that crashes (returns CompletedProcess)
    ends: str  # the terminal event type after the resume
    exit_code: int  # of the resume
    paid: int = 1
    before_resume: Callable[[World], None] = lambda w: None


def _generate(w: World, point: str) -> Any:
    return w.crash(point, "generate", "crash test", "--size", "256x256")


def _popen_then(
    wait: Callable[[World], None],
    sig: signal.Signals | None = None,
    then: Callable[[World], None] | None = None,
) -> Callable[[World, str], Any]:
    """Start generate, wait until the double shows the job in flight, then signal it or
    disturb the double; the process then dies at the crash point."""

    def run(w: World, point: str) -> Any:
        proc = w.box.popen(
            "generate", "crash test", "--size", "256x256", env={"IMAGEN_CRASH_AFTER": point}
        )
        try:
            wait(w)
            if sig is not None:
                proc.send_signal(sig)
            if then is not None:
                then(w)
            out, err = proc.communicate(timeout=60)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.communicate(timeout=30)
        return _Done(proc.returncode, out, err)

    return run


@dataclass
class _Done:
    returncode: int
    stdout: str
    stderr: str


def _force_new(w: World, point: str) -> Any:
    halted = w.box.run("generate", "crash test")
    assert halted.returncode == 5 and "--force-new" in halted.stderr, halted.stderr
    return w.crash(point, "resume", w.box.only_job(), "--force-new")


def _rep(w: World) -> ReplicateDouble:
    assert w.rep is not None
    return w.rep


def _comfy(w: World) -> ComfyUIDouble:
    assert w.comfy is not None
    return w.comfy


def _advance(w: World) -> None:
    """Move the Replicate double's clock past the prediction's run time."""
    assert w.shift is not None
    w.shift[0] += timedelta(seconds=120)


def _poll_seen(w: World) -> None:
    _rep(w).wait_for_request(lambda r: r[0] == "GET" and "/v1/predictions/" in r[1], timeout=30)


def _polled(w: World) -> None:
    _comfy(w).reject_websockets = True
    _comfy(w).step_time = 0.1  # 4 steps: the first /history polls find nothing yet


def _held(w: World) -> None:
    _comfy(w).wait_until(lambda c: c.held is not None, timeout=30)


REPLICATE: dict[str, Scenario] = {
    # create → 503 on the first poll (a retry) → poll → download
    "success": Scenario(
        lambda w: (_rep(w).behaviour(polls=1), _rep(w).fail_next("get", status=503)) and None,
        _generate,
        "JobSucceeded",
        0,
    ),
    "lost reply": Scenario(lambda w: _rep(w).reset_after_create(), _generate, "JobSucceeded", 0),
    "failure": Scenario(
        lambda w: _rep(w).behaviour(fail_with="CUDA out of memory"), _generate, "JobFailed", 1
    ),
    "timeout": Scenario(
        lambda w: _rep(w).behaviour(never_finish=True), _generate, "JobCancelled", 1
    ),
    "sigterm": Scenario(
        lambda w: _rep(w).behaviour(duration=60),
        _popen_then(_poll_seen, signal.SIGTERM),
        "JobSucceeded",
        0,
        before_resume=_advance,
    ),
    # The create's reply is lost and the lookup fails 3 times: imagen halts; the user forces a
    # new prediction (the first was billed too, so two in all, never three).
    "force new": Scenario(
        lambda w: (_rep(w).reset_after_create(), _rep(w).fail_next("list", 500, times=3)) and None,
        _force_new,
        "JobSucceeded",
        0,
        paid=2,
    ),
}

COMFYUI: dict[str, Scenario] = {
    "success": Scenario(lambda w: None, _generate, "JobSucceeded", 0),
    "retry": Scenario(lambda w: _comfy(w).fail_next("prompt", 500), _generate, "JobSucceeded", 0),
    "lost reply": Scenario(
        lambda w: _comfy(w).fail_next("prompt", 502, after=True), _generate, "JobSucceeded", 0
    ),
    "failure": Scenario(lambda w: _comfy(w).execution_error(), _generate, "JobFailed", 1),
    # A proxy without websocket support: /history is polled, repeats summarised.
    "polled": Scenario(_polled, _generate, "JobSucceeded", 0),
    "timeout": Scenario(lambda w: _comfy(w).hold_next(), _generate, "JobCancelled", 1),
    # The network to ComfyUI drops while the prompt runs: the stream closes, reconnects fail.
    "offline": Scenario(
        lambda w: _comfy(w).hold_next(),
        _popen_then(_held, then=lambda w: _comfy(w).go_offline()),
        "JobSucceeded",
        0,
        before_resume=lambda w: (_comfy(w).go_online(), _comfy(w).release()) and None,
    ),
    # The prompt is held and the stream says nothing: after its quiet spell (5 s) imagen asks
    # /queue (issue #25 defect 2).
    "quiet": Scenario(
        lambda w: _comfy(w).hold_next(),
        _generate,
        "JobSucceeded",
        0,
        before_resume=lambda w: _comfy(w).release(),
    ),
    "sigterm": Scenario(
        lambda w: _comfy(w).hold_next(),
        _popen_then(_held, signal.SIGTERM),
        "JobSucceeded",
        0,
        before_resume=lambda w: _comfy(w).release(),
    ),
}


def _member(w: World, n: int) -> ComfyUIDouble:
    return w.members[n]


def _kill_members(w: World) -> None:
    for m in w.members:
        m.kill()


# A pool of two members (both idle: a job is placed on the first) with an overflow backend.
POOL: dict[str, Scenario] = {
    "placed": Scenario(lambda w: None, _generate, "JobSucceeded", 0),
    # The first member dies while it holds the prompt: no answer for the grace period, the job
    # moves and runs on the second (the first's prompt was queued there too, and lost with it).
    "moved": Scenario(
        lambda w: _member(w, 0).hold_next(),
        _popen_then(
            lambda w: _member(w, 0).wait_until(lambda c: c.held is not None, timeout=30),
            then=lambda w: _member(w, 0).kill(),
        ),
        "JobSucceeded",
        0,
        paid=2,
    ),
    # Every member down past the grace period: one paid prediction on the overflow backend.
    "overflow": Scenario(_kill_members, _generate, "JobSucceeded", 0),
}

# (scenario, crash point). Points with :n name the n-th event of the type in that run.
REPLICATE_POINTS = [
    *[
        ("success", p)
        for p in (
            "JobRequested",
            "RunnerClaimed",
            "RequestSent",
            "ResponseReceived",
            "RemoteJobAccepted",
            "RequestSent:2",
            "RequestSent:3",
            "ResponseReceived:2",
            "ResponseReceived:3",
            "RetryScheduled",
            "ImageStored",
            "JobSucceeded",
        )
    ],
    ("lost reply", "RequestFailed"),
    ("lost reply", "LookupConcluded"),
    ("lost reply", "RemoteIdsHeld"),
    ("failure", "JobFailed"),
    ("timeout", "CancelRequested"),
    ("timeout", "JobCancelled"),
    ("sigterm", "JobInterrupted"),
    ("force new", "ForceNewRequested"),
]
COMFYUI_POINTS = [
    *[
        ("success", p)
        for p in (
            "JobRequested",
            "RunnerClaimed",
            "RequestSent",
            "ResponseReceived",
            "StreamOpened",
            "RequestSent:2",
            "ResponseReceived:2",
            "RemoteJobAccepted",
            "ProgressObserved",
            "StreamMessage",
            "RequestSent:4",
            "ResponseReceived:4",
            "ImageStored",
            "JobSucceeded",
        )
    ],
    ("retry", "RetryScheduled"),
    ("lost reply", "LookupConcluded"),
    ("failure", "JobFailed"),
    ("timeout", "CancelRequested"),
    ("timeout", "JobCancelled"),
    ("offline", "StreamClosed"),
    ("polled", "PollsUnchanged"),
    ("quiet", "StreamQuiet"),
    ("offline", "RequestFailed"),
    ("sigterm", "JobInterrupted"),
]
# The ComfyUI adapter's pool part: its events are crash points of the ComfyUI adapter too.
POOL_POINTS = [
    ("placed", "MembersProbed"),
    ("placed", "JobPlaced"),
    ("moved", "JobMoved"),
    ("overflow", "JobOverflowed"),
]

RENEWED = (
    "a lease is renewed after 40 s of driving; a crash after it is a crash after a claim "
    "(RunnerClaimed)"
)
# Event types a backend's paths never record, and why; every other type must be a crash point.
BUDGETS = "budget events belong to the $budgets stream, never to a job (tests/test_budgets.py)"
NOT_RECORDED = {
    "replicate": {
        "BudgetSet": BUDGETS,
        "BudgetRemoved": BUDGETS,
        "StreamOpened": "Replicate has no progress stream",
        "StreamMessage": "Replicate has no progress stream",
        "StreamClosed": "Replicate has no progress stream",
        "StreamQuiet": "Replicate has no progress stream",
        "ProgressObserved": "Replicate has no progress stream",
        "RunnerRenewed": RENEWED,
        "PollsUnchanged": "Replicate's polls are Prefer: wait requests, each recorded",
        **dict.fromkeys(
            ("MembersProbed", "JobPlaced", "JobMoved", "JobOverflowed"),
            "placement is a ComfyUI pool's (an overflowed job's Replicate part starts after it)",
        ),
    },
    "comfyui": {
        "BudgetSet": BUDGETS,
        "BudgetRemoved": BUDGETS,
        "ForceNewRequested": "ComfyUI never halts for --force-new: a lost prompt is looked up "
        "or, being free, queued again",
        "RemoteIdsHeld": "a lost ComfyUI prompt is found by this job's own client id, which no "
        "other job uses, so no ledger check is needed",
        "RunnerRenewed": RENEWED,
    },
}
SCENARIOS = {"replicate": REPLICATE, "comfyui": COMFYUI, "pool": POOL}
POINTS = {"replicate": REPLICATE_POINTS, "comfyui": COMFYUI_POINTS, "pool": POOL_POINTS}
ADAPTER_POINTS = {"replicate": REPLICATE_POINTS, "comfyui": COMFYUI_POINTS + POOL_POINTS}


@pytest.mark.parametrize("backend", ["replicate", "comfyui"])
def test_every_event_type_is_a_crash_point(backend: str) -> None:
    covered = {point.partition(":")[0] for _, point in ADAPTER_POINTS[backend]}
    assert covered | set(NOT_RECORDED[backend]) == set(CATALOGUE), sorted(
        set(CATALOGUE) - covered - set(NOT_RECORDED[backend])
    )
    assert not covered & set(NOT_RECORDED[backend])


@pytest.fixture
def world(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[World]:
    backend = request.param
    if backend == "replicate":
        shift = [timedelta(0)]
        with replicate_double(clock=lambda: datetime.now(UTC) + shift[0]) as rep:
            box = Sandbox(tmp_path, env=dict(TOKEN_ENV))
            box.write_backend(
                "rep",
                "replicate",
                model=SCHNELL,
                base_url=rep.url,
                poll_interval_s=0.05,
                retry_base_s=0.01,
                wait_s=1,
                timeout_s=_TIMEOUT.get(request.node.callspec.params["case"][0], 60),
            )
            yield World(backend, box, rep=rep, shift=shift)
    elif backend == "pool":
        with comfyui_double() as a, comfyui_double() as b, replicate_double() as rep:
            box = Sandbox(tmp_path, env=dict(TOKEN_ENV))
            box.write_config(
                'default_backend = "pool"\n[backends.pool]\ntype = "comfyui"\n'
                f'urls = {json.dumps([a.url, b.url])}\noverflow = "paid"\n'
                "member_grace_s = 0.2\npoll_interval_s = 0.05\nretry_base_s = 0.01\n"
                f'[backends.paid]\ntype = "replicate"\nmodel = "{SCHNELL}"\n'
                f'base_url = "{rep.url}"\nretry_base_s = 0.01\npoll_interval_s = 0.05\n'
                f'[output]\ndirectory = "{box.out}"\n'
            )
            yield World(backend, box, rep=rep, members=(a, b))
    else:
        with comfyui_double() as comfy:
            box = Sandbox(tmp_path)
            box.write_backend(
                "local",
                "comfyui",
                url=comfy.url,
                poll_interval_s=0.05,
                retry_base_s=0.01,
                timeout_s=_TIMEOUT.get(request.node.callspec.params["case"][0], 300),
            )
            try:
                yield World(backend, box, comfy=comfy)
            finally:
                comfy.release()


_TIMEOUT = {"timeout": 1}


def _cases(backend: str, name: str | None = None) -> list[Any]:
    return [
        pytest.param(backend, (scenario, point), id=f"{name or backend}-{scenario}-{point}")
        for scenario, point in POINTS[backend]
    ]


@pytest.mark.parametrize(
    ("world", "case"),
    _cases("replicate") + _cases("comfyui") + _cases("pool", "comfyui-pool"),
    indirect=["world"],
)
def test_kill_9_after_the_event_then_resume(world: World, case: tuple[str, str]) -> None:
    scenario_name, point = case
    scenario = SCENARIOS[world.kind][scenario_name]
    scenario.arrange(world)
    crashed = scenario.run(world, point)
    assert crashed.returncode == -signal.SIGKILL, (crashed.returncode, crashed.stderr)
    box = world.box
    job_id = box.only_job()
    kind, _, n = point.partition(":")
    # Died right after the append that recorded it (an append may record several events).
    assert box.types(job_id).count(kind) == int(n or 1), box.types(job_id)
    scenario.before_resume(world)
    resumed = box.run("resume", job_id)
    assert resumed.returncode == scenario.exit_code, resumed.stderr
    types = box.types(job_id)
    assert [t for t in types if t in TERMINAL_TYPES] == [scenario.ends], types
    assert world.paid() == scenario.paid
    if world.kind != "replicate" and scenario.ends == "JobSucceeded":
        assert world.made() == 1  # one execution, or one overflow prediction: never both
    if world.rep is not None and scenario.ends == "JobCancelled":
        [prediction] = world.rep.predictions.values()
        assert prediction["status"] == "canceled"  # billing stopped
    assert box.store().verify().ok
    assert TOKEN not in box.ledger_text()
    if scenario.ends == "JobSucceeded":
        image = Path(resumed.stdout.strip())
        sidecar = json.loads(Path(f"{image}.json").read_text())
        assert sidecar["job_id"] == job_id
        assert sidecar["image"]["sha256"] == hashlib.sha256(image.read_bytes()).hexdigest()
        if world.members and world.rep is not None and not world.rep.billed:
            # Made on the member it was last placed on, not wherever the resume would post.
            placed = _placed_on(box, job_id)
            assert sidecar["server"] == placed, sidecar
            assert {m.url: m.executed for m in world.members}[placed] == 1


def _placed_on(box: Sandbox, job_id: str) -> str:
    last = [e for e in box.events(job_id) if e.type == "JobPlaced"][-1]
    return str(json.loads(last.data_json)["server"])
