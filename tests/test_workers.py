"""`generate --detach`, `imagen wait` and `imagen worker`, as processes against the Replicate
double: on SQLite (the detached worker), and two workers on one PostgreSQL ledger standing in
for two machines (IMAGEN_HOST), one of them killed with -9 mid-batch.

Readiness is read from the ledger (events), never slept for; the double's clock is injected,
so a prediction finishes when the test says, not when a machine is fast enough."""

from __future__ import annotations

import io
import json
import signal
import subprocess
import time
from collections import Counter
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from imagen.app.budgets import set_budget
from imagen.app.exit_codes import ExitCode
from imagen.app.session import Session
from imagen.cli import context
from imagen.cli.worker import wait as cli_wait
from imagen.runner.environment import Environment
from imagen.testing.replicate import ReplicateDouble
from tests.support.cli import Sandbox
from tests.support.doubles import FAST, SCHNELL, TOKEN_ENV, rep_box, replicate_double


def _until(
    what: str, check: Callable[[], object], rep: ReplicateDouble, timeout: float = 60.0
) -> object:
    """Read the ledger until `check` holds, re-reading after each request the double receives
    (what a worker records follows its talk with the double: it keeps polling the running
    predictions); the 1 s bound only re-reads after a last request's append."""
    end = time.monotonic() + timeout
    seen = 0
    while True:
        got = check()
        if got:
            return got
        if time.monotonic() > end:
            raise AssertionError(f"timed out waiting for {what}")
        seen = rep.wait_for_more_requests(seen, timeout=1.0)


def _claims(box: Sandbox) -> dict[str, list[dict]]:
    out: dict[str, list[dict]] = {}
    for e in box.events():
        if e.type in ("RunnerClaimed", "RunnerRenewed", "RemoteJobAccepted"):
            out.setdefault(e.stream_id, []).append({"type": e.type, **e.data, "at": e.recorded_at})
    return out


class _Clock:
    """The double's clock, moved by the test (thread-safe enough: one writer)."""

    def __init__(self) -> None:
        self.now = datetime.now(UTC)

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)


def test_detach_then_wait_on_sqlite_under_the_callers_budget(tmp_path: Path) -> None:
    clock = _Clock()
    with replicate_double(clock=clock) as rep:
        rep.behaviour(duration=30)  # on the double's clock: nothing finishes until it moves
        box = rep_box(tmp_path, rep, wait_s=1)
        session = Session(Environment(env=box.env, stdout=io.StringIO(), stderr=io.StringIO()))
        set_budget(session.store(), "agent-7", "0.003", "day", None, "test")  # one image's worth
        r = box.run("generate", "a fox", "an owl", "--detach", env={"MAI_FROM_ID": "agent-7"})
        # The budget is the job's caller's: the second image is refused as it is recorded, as
        # in the foreground (exit 9), and never handed to the worker.
        assert r.returncode == ExitCode.OVER_BUDGET, r.stderr
        ids = r.stdout.split()
        assert len(ids) == 2 and "imagen wait" in r.stderr
        # `imagen wait` with a timeout, in this process: the worker's job is still running.
        context._session = session
        assert cli_wait(*ids, timeout=0.2) == ExitCode.STILL_RUNNING
        assert "they go on" in session.env.stderr.getvalue()  # type: ignore[attr-defined]

        def accepted() -> bool:
            return any(e["type"] == "RemoteJobAccepted" for e in _claims(box).get(ids[0], []))

        _until("the prediction made", accepted, rep)
        clock.advance(40)
        w = box.run("wait", *ids, "--json", "--timeout", "60")
        assert w.returncode == ExitCode.OVER_BUDGET, w.stderr
        jobs = {j["job_id"]: j for j in map(json.loads, w.stdout.splitlines())}
        assert sorted(j["status"] for j in jobs.values()) == ["failed", "succeeded"]
        [done] = [j for j in jobs.values() if j["status"] == "succeeded"]
        assert Path(done["image"]).stat().st_size > 0
        # Recorded unclaimed, then taken once by the detached worker (not a resume);
        # one create at the double, for the caller's one admitted job.
        claims = [e for e in box.events(done["job_id"]) if e.type == "RunnerClaimed"]
        assert len(claims) == 1 and claims[0].data["resumed"] is False
        assert box.types(done["job_id"])[:2] == ["JobRequested", "RunnerClaimed"]
        assert len(rep.predictions) == 1
        assert list((tmp_path / "logs").glob("worker-*.log"))


@pytest.mark.postgres
def test_two_workers_drain_a_detached_batch_and_outlive_a_kill_9(
    tmp_path: Path, pg_url: str
) -> None:
    clock = _Clock()
    with replicate_double(clock=clock) as rep:
        rep.behaviour(duration=30)  # on the double's clock: nothing finishes until it moves
        box = Sandbox(tmp_path, ledger_url=pg_url, env=dict(TOKEN_ENV))
        box.write_backend("rep", "replicate", model=SCHNELL, base_url=rep.url, wait_s=1, **FAST)
        r = box.run("generate", "a fox", "-n", "10", "--detach")
        assert r.returncode == 0, r.stderr
        ids = r.stdout.split()
        assert len(ids) == 10 and "imagen worker" in r.stderr  # nobody started here
        workers = {}
        for host in ("machine-a", "machine-b"):
            log = open(tmp_path / f"{host}.log", "w")  # noqa: SIM115 - closed below
            workers[host] = (
                subprocess.Popen(
                    box.cmd("worker", "--max", "2"),
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    env={**box.env, "IMAGEN_HOST": host, "IMAGEN_LEASE_SECONDS": "2"},
                    cwd=tmp_path,
                ),
                log,
            )

        def accepted_by(host: str) -> set[str]:
            owner: dict[str, str] = {}
            got = set()
            for job, events in _claims(box).items():
                for e in events:
                    if e["type"] == "RunnerClaimed":
                        owner[job] = e["host"]
                    elif e["type"] == "RemoteJobAccepted" and owner.get(job) == host:
                        got.add(job)
            return got

        try:
            # Each worker holds two jobs, their predictions running at the double.
            _until(
                "both workers busy",
                lambda: all(len(accepted_by(h)) == 2 for h in workers),
                rep,
            )
            a_jobs = accepted_by("machine-a")
            workers["machine-a"][0].kill()  # -9: no JobInterrupted, its lease just stops
            workers["machine-a"][0].wait(30)
            rep.behaviour(duration=0)
            clock.advance(40)  # every prediction made so far is done
            waited = box.run("wait", *ids, "--json", "--timeout", "120")
            assert waited.returncode == 0, waited.stderr
            b, log = workers["machine-b"]
            b.send_signal(signal.SIGTERM)
            assert b.wait(30) == 0
        finally:
            for proc, log in workers.values():
                if proc.poll() is None:
                    proc.kill()
                    proc.wait(30)
                log.close()
        jobs = [json.loads(line) for line in waited.stdout.splitlines()]
        assert sorted(j["job_id"] for j in jobs) == sorted(ids)
        assert {j["status"] for j in jobs} == {"succeeded"}
        # 0 executed twice: one create per job at the double, ten in all.
        creates = Counter(
            e.stream_id
            for e in box.events()
            if e.type == "RequestSent" and e.data["purpose"] == "create"
        )
        assert creates == Counter({jid: 1 for jid in ids})
        assert len(rep.predictions) == 10
        claims = _claims(box)
        for jid in ids:
            hosts = [e["host"] for e in claims[jid] if e["type"] == "RunnerClaimed"]
            if jid in a_jobs:
                # machine-a's jobs went to machine-b once its lease had lapsed.
                assert hosts == ["machine-a", "machine-b"]
                held = claims[jid]
                b_at = next(n for n, e in enumerate(held) if e.get("host") == "machine-b")
                # machine-a's last claim or renewal: what its lease runs from (an acceptance
                # recorded after it does not renew it)
                last_a = next(
                    e["at"]
                    for e in reversed(held[:b_at])
                    if e["type"] in ("RunnerClaimed", "RunnerRenewed")
                )
                assert (_at(held[b_at]["at"]) - _at(last_a)).total_seconds() >= 2.0
            else:
                assert len(hosts) == 1  # driven by exactly one worker
        assert sum(1 for j in ids if j not in a_jobs) == 8


def _at(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))
