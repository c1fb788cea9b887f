"""Budgets: the cost of recording a paid job when its caller has budgets (the check runs under
the write lock, in the append's transaction), on a ledger of 20,000 ended jobs by that caller,
beside the same step for a caller without budgets in the same ledger and the same run.

The step measured is `Runner.submit`: JobRequested + RunnerClaimed in one append, the guard
(reading the budgets, and folding the events since the process's previous check) included.
A process's first paid create also folds the chain once (outside the write lock): measured
apart, on a store opened afresh (a new `imagen generate`), beside the same for the free caller."""

from __future__ import annotations

import tempfile
from datetime import UTC, datetime
from pathlib import Path

from imagen.app import budgets
from imagen.app.runners import new_runner
from imagen.core.events import JobRequested
from imagen.projections import spend
from imagen.projections.jobs import table as jobs_table
from imagen.projections.usage import table as usage_table
from imagen.runner.environment import Environment
from ledger import NewEvent, open_store
from tests.benchmarks.report import line, timed

JOBS = 20_000
PER_COMMIT = 500
ROUNDS, PER_ROUND = 10, 30


def _request(caller: str) -> JobRequested:
    return JobRequested(
        backend="rep",
        backend_type="replicate",
        model="black-forest-labs/flux-schnell",
        prompt="a fox",
        params={"count": 1, "seed": 1},
        backend_config={},
        output_path="/tmp/bench-budget.png",
        caller=caller,
        price_usd=0.003,
    )


def _fill(store, jobs: int, caller: str) -> None:  # type: ignore[no-untyped-def]
    data = _request(caller).to_data()
    image = {"path": "/tmp/x.png", "sha256": "0" * 64, "bytes": 1, "format": "png"}
    # As the runner records an end: with the job's spend row (core/events.py SPEND_AT_END).
    end = {
        "spend": {"caller": caller, "backend": "rep", "reserved_micros": 3000, "spent_micros": 3000}
    }
    for start in range(0, jobs, PER_COMMIT):
        with store.transaction() as conn:
            for n in range(start, min(start + PER_COMMIT, jobs)):
                events = [
                    NewEvent("JobRequested", data),
                    NewEvent("RemoteJobAccepted", {"remote_id": f"r{n}"}),
                    NewEvent("ImageStored", {**image, "width": 1, "height": 1}),
                    NewEvent("JobSucceeded", end),
                ]
                store.append(f"job{n:06d}", events, 0, conn=conn)


def run() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        url = f"sqlite:///{Path(tmp) / 'ledger.db'}"
        store = open_store(url, durability="full")
        _fill(store, JOBS, "agent")
        for catch_up in (jobs_table.catch_up, usage_table.catch_up, spend.catch_up):
            catch_up(store)
        # Generous budgets: every create passes; "total" sums all 20,000 of the caller's jobs.
        for per in ("day", "week", "month", "total"):
            budgets.set_budget(store, "agent", "1000000", per, None, "bench")
        env = Environment(clock=lambda: datetime.now(UTC))
        first = {}
        for caller in ("agent", "free"):
            fresh = open_store(url, durability="full")  # a new process's store: nothing cached
            first[caller] = timed(
                lambda c=caller, s=fresh: new_runner(s, env).submit(f"first-{c}", _request(c))
            )
            fresh.close()
        line(
            f"first paid create of a process, {JOBS:,} jobs",
            first["agent"] * 1000,
            first["free"] * 1000,
            "ms",
            higher_is_better=False,
            target="baseline: a caller without budgets, same ledger",
        )
        runner = new_runner(store, env)
        runner.submit("warm-agent", _request("agent"))  # this process's fold, measured above
        spent = {"agent": 0.0, "free": 0.0}
        made = 0
        for r in range(ROUNDS):
            for caller in ("agent", "free") if r % 2 == 0 else ("free", "agent"):

                def submits(caller: str = caller, first: int = made) -> None:
                    for k in range(PER_ROUND):
                        runner.submit(f"new{first + k:06d}", _request(caller))

                spent[caller] += timed(submits)
                made += PER_ROUND
        n = ROUNDS * PER_ROUND
        line(
            f"paid create recorded, 4 budgets, {JOBS:,} jobs",
            spent["agent"] / n * 1000,
            spent["free"] / n * 1000,
            "ms",
            higher_is_better=False,
            target="baseline: a caller without budgets, same ledger",
        )
        standing = budgets.standings(store, datetime.now(UTC), UTC)
        assert all(
            s.spent >= JOBS * 3000 for b, rows in standing for s in rows if b.per.value == "total"
        )
        store.close()
