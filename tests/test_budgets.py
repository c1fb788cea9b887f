"""Budgets: set/list/remove, enforcement before money moves (the Replicate double counts what
was created, i.e. billed), what counts as spent, windows at their edges, and the race of 8
processes against one budget on both engines."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from imagen.app import budgets
from imagen.core import budgets as rules
from imagen.core.events import BudgetPeriod
from imagen.testing.replicate import ReplicateDouble
from tests.support.cli import Sandbox
from tests.support.doubles import SCHNELL, TOKEN

DEV = "black-forest-labs/flux-dev"  # 0.025 per image (SCHNELL: 0.003)


def make_box(root: Path, rep: ReplicateDouble, ledger_url: str = "", caller: str = "agent-1"):  # type: ignore[no-untyped-def]
    root.mkdir(parents=True, exist_ok=True)
    box = Sandbox(
        root, ledger_url=ledger_url, env={"REPLICATE_API_TOKEN": TOKEN, "MAI_FROM_ID": caller}
    )
    common = f'base_url = "{rep.url}"\npoll_interval_s = 0.05\nretry_base_s = 0.01\n'
    box.write_config(
        f'default_backend = "rep"\n[backends.rep]\ntype = "replicate"\nmodel = "{SCHNELL}"\n'
        f'{common}[backends.dev]\ntype = "replicate"\nmodel = "{DEV}"\n{common}'
        f'[output]\ndirectory = "{root / "out"}"\n'
    )
    return box


@pytest.fixture
def box(tmp_path: Path, rep: ReplicateDouble) -> Sandbox:
    return make_box(tmp_path / "box", rep)


def gen(box: Sandbox, caller: str = "agent-1", *args: str) -> subprocess.CompletedProcess[str]:
    return box.run("generate", "a fox", "--size", "256x256", *args, env={"MAI_FROM_ID": caller})


def budget(box: Sandbox, *args: str) -> subprocess.CompletedProcess[str]:
    return box.run("budget", *args)


def setb(box: Sandbox, caller: str, amount: str, per: str, backend: str | None = None) -> None:
    """Set a budget in-process (as `imagen budget set` does, without a process start)."""
    store = box.store()
    try:
        budgets.set_budget(store, caller, amount, per, backend, "test")
    finally:
        store.close()


def listed(box: Sandbox) -> list[dict]:  # type: ignore[type-arg]
    result = box.run("budget", "list", "--json")
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


# -- enforcement -------------------------------------------------------------------------------


def test_a_request_past_the_budget_is_not_sent_and_is_recorded_as_failed(
    box: Sandbox, rep: ReplicateDouble
) -> None:
    assert budget(box, "set", "agent-1", "0.006", "--per", "day").returncode == 0
    assert gen(box).returncode == 0 and gen(box).returncode == 0
    refused = gen(box)
    assert refused.returncode == 9, refused.stderr
    [line] = [x for x in refused.stderr.splitlines() if "error" in x]
    assert "over budget: agent-1 per day is $0.006000" in line
    assert "spent $0.006000, $0.000000 left" in line and "nothing was sent" in line
    assert rep.billed == 2
    job = box.job_ids()[-1]
    assert box.types(job) == ["JobRequested", "JobFailed"]  # no claim, no request sent
    assert box.events(job)[-1].data["category"] == "budget"
    jobs = json.loads(box.run("jobs", "--json").stdout)
    assert [j["status"] for j in jobs if j["job_id"] == job] == ["failed"]
    [row] = listed(box)
    assert (row["spent"], row["left"]) == ("0.006000", "0.000000")


def test_the_default_governs_callers_without_a_budget_of_their_own(
    box: Sandbox, rep: ReplicateDouble
) -> None:
    setb(box, "*", "0.003", "week")
    setb(box, "alice", "1", "day")
    # bob and carol each get the default's allowance: one image each.
    assert gen(box, "bob").returncode == 0
    assert gen(box, "bob").returncode == 9
    assert gen(box, "carol").returncode == 0
    # alice has a budget of her own: the default does not apply to her.
    assert [gen(box, "alice").returncode for _ in range(2)] == [0, 0]
    assert rep.billed == 4
    rows = {r["caller"]: r for r in listed(box)}
    assert rows["alice"]["spent"] == "0.006000"
    default = rows["*"]
    assert default["spent"] is None
    assert {c["caller"]: (c["spent"], c["left"]) for c in default["callers"]} == {
        "bob": ("0.003000", "0.000000"),
        "carol": ("0.003000", "0.000000"),
    }


def test_a_per_backend_budget_caps_only_that_backend(box: Sandbox, rep: ReplicateDouble) -> None:
    assert (
        budget(box, "set", "agent-1", "0.03", "--per", "month", "--backend", "dev").returncode == 0
    )
    assert gen(box, "agent-1", "--backend", "dev").returncode == 0  # 0.025
    refused = gen(box, "agent-1", "--backend", "dev")
    assert refused.returncode == 9 and "on dev" in refused.stderr
    assert [gen(box).returncode for _ in range(3)] == [0, 0, 0]  # schnell on rep: not capped
    assert rep.billed == 4


def test_a_multi_image_request_is_priced_for_every_image(
    box: Sandbox, rep: ReplicateDouble
) -> None:
    setb(box, "agent-1", "0.009", "total")
    assert gen(box, "agent-1", "--per-job", "4").returncode == 9  # 0.012 > 0.009
    assert gen(box, "agent-1", "--per-job", "3").returncode == 0
    assert rep.billed == 1


def test_list_json_and_usage_show_spent_and_left(box: Sandbox, rep: ReplicateDouble) -> None:
    setb(box, "agent-1", "1", "month", "rep")
    setb(box, "*", "0.5", "total")
    assert gen(box).returncode == 0 and gen(box, "bob").returncode == 0
    own, default = listed(box)
    assert set(own) == {
        "caller", "per", "backend", "amount", "window_start", "window_end", "spent", "left",
        "set_by", "set_at", "zone",
    }  # fmt: skip
    assert (own["caller"], own["per"], own["backend"], own["amount"]) == (
        "agent-1",
        "month",
        "rep",
        "1.000000",
    )
    assert (own["spent"], own["left"], own["set_by"]) == ("0.003000", "0.997000", "test")
    assert own["window_start"].startswith(datetime.now(UTC).strftime("%Y-%m"))  # local 1st
    assert default["window_start"] is None and default["window_end"] is None
    assert default["callers"] == [{"caller": "bob", "spent": "0.003000", "left": "0.497000"}]
    rows = json.loads(box.run("usage", "--by", "caller", "--json").stdout)
    assert {
        r["caller"]: [(b["spent"], b["amount"], b["default"]) for b in r["budgets"]] for r in rows
    } == {
        "agent-1": [("0.003000", "1.000000", False)],
        "bob": [("0.003000", "0.500000", True)],
    }
    piped = box.run("usage", "--by", "caller").stdout.splitlines()
    assert piped[0].split("\t")[-1] == "budgets"
    assert "0.003000 of 1.000000 per month on rep" in piped[1]


@pytest.mark.parametrize(
    ("text", "micros"), [("5", 5_000_000), ("0.25", 250_000), ("$1.000001", 1_000_001), ("0", 0)]
)
def test_amounts_are_exact_micro_dollars(text: str, micros: int) -> None:
    assert rules.parse_amount(text) == micros


@pytest.mark.parametrize(
    "text", ["-1", "NaN", "inf", "1e3", "0.0000001", "five", "", "1,5", "1234567890123", " . "]
)
def test_amounts_that_are_not_plain_money_are_refused(text: str) -> None:
    with pytest.raises(rules.BadBudget, match="plain decimal"):
        rules.parse_amount(text)


@pytest.mark.parametrize("caller", ["", "  ", "a\nb", "x" * 201])
def test_callers_must_be_printable_names(caller: str) -> None:
    with pytest.raises(rules.BadBudget, match="caller"):
        rules.check_caller(caller)


def test_bad_budget_input_is_one_line_exit_2_and_nothing_recorded(box: Sandbox) -> None:
    for args, wanted in [
        (["agent-1", "-1", "--per", "day"], "amount '-1'"),
        (["agent-1", "1", "--per", "year"], "--per"),
        (["agent-1", "1", "--per", "day", "--backend", "nope"], "no such backend"),
    ]:
        result = budget(box, "set", *args)
        assert result.returncode == 2
        [line] = result.stderr.strip().splitlines()
        assert line.startswith("imagen: error:") and wanted in line, line
    assert listed(box) == []
    assert [e.stream_id for e in box.events()] == []  # not even the ledger's identity


def test_remove_by_period_and_backend(box: Sandbox) -> None:
    for per in ("day", "week"):
        setb(box, "a", "1", per)
    setb(box, "a", "1", "day", "dev")
    store = box.store()
    gone = budgets.remove_budgets(store, "a", "day", "dev", "test")
    assert [(b.per.value, b.backend) for b in gone] == [("day", "dev")]
    assert sorted(k for k in budgets.in_force(store)) == [("a", "day", ""), ("a", "week", "")]
    store.close()
    assert budget(box, "remove", "a").returncode == 0  # every budget of a's
    missing = budget(box, "remove", "a")
    assert missing.returncode == 2 and "no budget matches a" in missing.stderr
    # Who set and removed what, and when: in the ledger.
    kinds = [
        (e.type, e.data["removed_by" if e.type == "BudgetRemoved" else "set_by"])
        for e in box.events()
        if e.stream_id == "$budgets"
    ]
    assert (
        kinds
        == [("BudgetSet", "test")] * 3
        + [("BudgetRemoved", "test")]
        + [("BudgetRemoved", "agent-1")] * 2
    )


# -- what counts as spent ----------------------------------------------------------------------


def test_requests_the_provider_refused_are_not_counted(box: Sandbox, rep: ReplicateDouble) -> None:
    setb(box, "agent-1", "0.003", "day")
    for status in (401, 402, 422):
        rep.fail_next("create", status=status)
        assert gen(box).returncode in (3, 8)
    assert rep.billed == 0
    assert gen(box).returncode == 0  # the refused requests left the whole budget
    assert rep.billed == 1


def test_a_refused_connection_is_not_counted(tmp_path: Path, rep: ReplicateDouble) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        closed = s.getsockname()[1]  # nothing listens here once closed
    box = make_box(tmp_path / "box", rep)
    text = (tmp_path / "box" / "config.toml").read_text()
    (tmp_path / "box" / "config.toml").write_text(
        text.replace(f'base_url = "{rep.url}"', f'base_url = "http://127.0.0.1:{closed}"', 1)
    )
    setb(box, "agent-1", "0.003", "day")
    assert gen(box).returncode == 3
    [row] = listed(box)
    assert row["spent"] == "0.000000"


def test_a_prediction_that_failed_after_being_billed_counts(
    box: Sandbox, rep: ReplicateDouble
) -> None:
    setb(box, "agent-1", "0.003", "day")
    rep.behaviour(fail_with="All generated images contained NSFW content.")
    assert gen(box).returncode == 1
    assert rep.billed == 1
    rep.behaviour()
    refused = gen(box)
    assert refused.returncode == 9 and "spent $0.003000, $0.000000 left" in refused.stderr
    assert rep.billed == 1


def test_a_price_below_imagens_table_neither_frees_a_known_model_nor_lifts_a_budget(
    tmp_path: Path, rep: ReplicateDouble
) -> None:
    """`price_usd = 0` in the config the caller chooses, on flux-dev (in imagen's table at
    $0.025): the table is the floor, so the request is priced $0.025 and an exhausted budget
    still refuses it (on main it was free and passed)."""
    box = make_box(tmp_path / "box", rep)
    text = (tmp_path / "box" / "config.toml").read_text()
    (tmp_path / "box" / "config.toml").write_text(
        text.replace("[output]", "price_usd = 0\n[output]")
    )
    setb(box, "agent-1", "0.03", "day")
    made = gen(box, "agent-1", "--backend", "dev")
    assert made.returncode == 0, made.stderr
    assert "price_usd 0 is below imagen's rate" in made.stderr
    [job] = box.job_ids()
    assert box.events(job)[0].data["price_usd"] == 0.025
    refused = gen(box, "agent-1", "--backend", "dev")
    assert refused.returncode == 9 and "spent $0.025000" in refused.stderr
    assert rep.billed == 1


def test_a_model_outside_the_table_keeps_its_configured_price() -> None:
    from imagen.core.pricing import below_table, price_for

    assert price_for("someone/local-model", 0) == 0.0  # free: never refused by a budget
    assert price_for("someone/local-model") is None
    assert price_for(DEV, 0) == price_for(DEV, 0.001) == 0.025
    assert price_for(DEV + ":abc123", 0.05) == 0.05  # dearer than the table: kept
    assert below_table(DEV, 0) == 0.025 and below_table(DEV, 0.03) is None


# -- windows (local calendar; clocks injected) -------------------------------------------------

PARIS = ZoneInfo("Europe/Paris")


def local(*args: int) -> datetime:
    return datetime(*args, tzinfo=PARIS)  # type: ignore[misc]


@pytest.mark.parametrize(
    ("per", "now", "start", "end"),
    [
        # A DST day (23 hours long) is still one calendar day, midnight to midnight.
        ("day", local(2026, 3, 29, 12), local(2026, 3, 29), local(2026, 3, 30)),
        ("day", local(2026, 3, 29, 23, 59, 59, 999999), local(2026, 3, 29), local(2026, 3, 30)),
        ("day", local(2026, 3, 30), local(2026, 3, 30), local(2026, 3, 31)),
        # ISO weeks: Sunday's last instant is in the week that began on Monday.
        ("week", local(2026, 11, 29, 23, 59, 59, 999999), local(2026, 11, 23), local(2026, 11, 30)),
        ("week", local(2026, 11, 30), local(2026, 11, 30), local(2026, 12, 7)),
        ("month", local(2026, 1, 31, 23, 59, 59, 999999), local(2026, 1, 1), local(2026, 2, 1)),
        ("month", local(2026, 12, 1), local(2026, 12, 1), local(2027, 1, 1)),
        ("total", local(2026, 12, 1), None, None),
    ],
)
def test_windows_follow_the_local_calendar(
    per: str, now: datetime, start: datetime | None, end: datetime | None
) -> None:
    period = BudgetPeriod(per)
    # The clock gives UTC; the window is taken in the local zone.
    assert rules.window_start(period, now.astimezone(UTC), PARIS) == start
    assert rules.window_end(period, now.astimezone(UTC), PARIS) == end


def test_the_day_window_hours_are_local_ones() -> None:
    start = rules.window_start(BudgetPeriod.DAY, datetime(2026, 3, 29, 12, tzinfo=UTC), PARIS)
    assert start is not None and start.astimezone(UTC) == datetime(2026, 3, 28, 23, tzinfo=UTC)


class Clock:
    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now


def _record_job(store, job_id: str, caller: str, *, end: str | None = "JobSucceeded") -> None:  # type: ignore[no-untyped-def]
    from ledger import NewEvent

    request = {
        "backend": "rep",
        "backend_type": "replicate",
        "model": SCHNELL,
        "prompt": "p",
        "params": {"count": 1},
        "backend_config": {},
        "output_path": f"/tmp/{job_id}.png",
        "caller": caller,
        "price_usd": 0.003,
    }
    events = [NewEvent("JobRequested", request)]
    if end is not None:
        events.append(NewEvent("RemoteJobAccepted", {"remote_id": f"r-{job_id}"}))
        image = {"path": f"/tmp/{job_id}.png", "sha256": "0" * 64, "bytes": 1, "format": "png"}
        events.append(NewEvent("ImageStored", {**image, "width": 1, "height": 1}))
        events.append(NewEvent(end, {}))
    store.append(job_id, events, 0)


def test_spend_ended_before_midnight_leaves_the_day_window(tmp_path: Path) -> None:
    from ledger import open_store

    clock = Clock(local(2026, 11, 24, 23, 59, 59, 999999).astimezone(UTC))
    store = open_store(f"sqlite:///{tmp_path / 'l.db'}", clock=clock)
    budgets.set_budget(store, "a", "0.003", "day", None, "test")
    _record_job(store, "j1", "a")  # ended at the day's last instant
    clock.now = local(2026, 11, 25).astimezone(UTC)
    [(_, [before])] = budgets.standings(store, clock.now - timedelta(microseconds=1), PARIS)
    assert before.spent == 3000
    [(_, [after])] = budgets.standings(store, clock.now, PARIS)
    assert after.spent == 0
    _record_job(store, "j2", "a")  # ended at midnight: today's
    [(_, [today])] = budgets.standings(store, clock.now, PARIS)
    assert today.spent == 3000
    # A job still under way holds its price in every current window, whenever it was asked.
    _record_job(store, "j3", "b", end=None)
    clock.now += timedelta(days=40)
    budgets.set_budget(store, "b", "1", "day", None, "test")
    standing = dict((b.caller, rows) for b, rows in budgets.standings(store, clock.now, PARIS))
    assert [s.spent for s in standing["b"]] == [3000]
    assert [s.spent for s in standing["a"]] == [0]


def test_the_guard_folds_the_chain_alike_cold_warm_and_whatever_the_table(tmp_path: Path) -> None:
    """The guard's figure is folded from the events: the same from nothing (a new process),
    from its cache after more appends (read in small batches), for one caller or all, and
    whether the spend table is missing, behind or current."""
    from imagen.projections import spend
    from ledger import open_store

    store = open_store(f"sqlite:///{tmp_path / 'l.db'}")
    filters = [spend.Filter("a"), spend.Filter("a", "other"), spend.Filter("b")]
    warm = spend.ChainSpend()
    warm_a = spend.ChainSpend(frozenset(["a"]))

    def sums() -> list[int]:
        with store.snapshot() as view:
            cold = spend.ChainSpend()
            cold.advance(view, batch=2)
            warm.advance(view, batch=2)
            warm_a.advance(view, batch=3)
            assert warm.committed(filters) == cold.committed(filters)
            assert warm_a.committed(filters[:2]) == cold.committed(filters[:2])
            # The running sums are the plain sums of each row's contribution.
            rows = cold.rows.values()
            assert cold.committed(filters) == [
                sum(spend._contribution(r, f) for r in rows) for f in filters
            ]
            return cold.committed(filters)

    for n in range(3):
        _record_job(store, f"a{n}", "a")
    _record_job(store, "b0", "b", end=None)
    assert sums() == [9000, 0, 3000]  # no table yet
    spend.catch_up(store)
    _record_job(store, "a3", "a", end=None)
    store.append("a0", [_job_failed()], None)  # a second end: still one job's cost
    assert sums() == [12000, 0, 3000]  # table behind
    spend.catch_up(store)
    assert sums() == [12000, 0, 3000]


def _job_failed():  # type: ignore[no-untyped-def]
    from ledger import NewEvent

    return NewEvent("JobFailed", {"reason": "x", "message": "x", "category": "unexpected"})


# -- the race ----------------------------------------------------------------------------------

# Each racer blocks on one stdin line (the barrier), then runs one real `imagen generate`.
RACER = """
import subprocess, sys
sys.stdin.readline()
r = subprocess.run([sys.executable, "-m", "imagen", "generate", "a racing fox", "--size",
                    "256x256"], capture_output=True, text=True)
sys.stderr.write(r.stderr)
sys.exit(r.returncode)
"""


@pytest.mark.slow
@pytest.mark.parametrize("engine", ["sqlite", "postgres"])
def test_eight_processes_against_a_budget_worth_four_images_pay_for_four(
    tmp_path: Path, rep: ReplicateDouble, request: pytest.FixtureRequest, engine: str
) -> None:
    url = "" if engine == "sqlite" else request.getfixturevalue("pg_url")
    box = make_box(tmp_path / "box", rep, url, caller="racer")
    setb(box, "racer", "0.012", "day")
    rep.behaviour(duration=0.3)  # all eight are under way at once, none has ended
    racers = [
        subprocess.Popen(
            [sys.executable, "-c", RACER],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=box.env,
            cwd=box.root,
        )
        for _ in range(8)
    ]
    for r in racers:
        assert r.stdin is not None
        r.stdin.write("\n")
        r.stdin.flush()
    results = [(r.communicate(timeout=300)[1], r.returncode) for r in racers]
    codes = sorted(code for _, code in results)
    assert codes == [0, 0, 0, 0, 9, 9, 9, 9], results
    assert rep.billed == 4 and len(rep.predictions) == 4  # created predictions: paid for
    [row] = listed(box)
    assert (row["spent"], row["left"]) == ("0.012000", "0.000000")
    assert box.store().verify().ok


def test_rebuild_restores_an_edited_spend_table(tmp_path: Path) -> None:
    import sqlite3

    from imagen.projections import spend
    from ledger import open_store

    store = open_store(f"sqlite:///{tmp_path / 'l.db'}")
    _record_job(store, "j1", "a")
    spend.catch_up(store)
    with sqlite3.connect(tmp_path / "l.db") as conn:  # whoever can write the file
        conn.execute(f"UPDATE {spend.TABLE} SET spent_micros = 0")
    chain = spend.ChainSpend()
    with store.snapshot() as view:
        chain.advance(view)
    assert chain.committed([spend.Filter("a")]) == [3000]  # the table is not what counts
    assert spend.rebuild(store) == ["spend: row j1 differed and was rebuilt"]
    assert store.query(f"SELECT spent_micros FROM {spend.TABLE}") == [(3000,)]


def test_exit_code_9_is_documented_and_ranked_as_resume_all_ranks_it() -> None:
    import re

    from imagen.app.exit_codes import SEVERITY

    text = (Path(__file__).parents[1] / "docs" / "usage.md").read_text()
    assert "| 9 | the job is recorded as failed: its price would take the caller past" in text
    order = re.search(r"in this order: ([\d, ]+)\.", text)
    assert order is not None
    assert [int(c) for c in order.group(1).split(",")] == [int(c) for c in SEVERITY]


def test_a_batch_pays_only_for_what_the_budget_allows(box: Sandbox, rep: ReplicateDouble) -> None:
    """Members are recorded together in one transaction; each one's check sees the members
    recorded before it, so a batch of 5 against a budget worth 3 images pays for 3."""
    setb(box, "agent-1", "0.009", "day")
    result = box.run("generate", "a fox", "-n", "5", "--size", "256x256", "--json")
    assert result.returncode == 9, result.stderr
    lines = [json.loads(x) for x in result.stdout.splitlines()]
    assert len(lines) == 5
    assert rep.billed == 3
    ended = [box.events(j)[-1] for j in box.job_ids()]
    assert sorted(e.type for e in ended) == ["JobFailed", "JobFailed"] + ["JobSucceeded"] * 3
    assert {e.data["category"] for e in ended if e.type == "JobFailed"} == {"budget"}


def test_a_refused_request_ending_in_a_later_tail_batch_costs_nothing(tmp_path: Path) -> None:
    """The tail is read in batches: a request priced from its JobRequested in one batch is
    taken from its whole stream once its end shows up in a later one (refused: nothing)."""
    from imagen.projections import spend
    from ledger import NewEvent, open_store

    store = open_store(f"sqlite:///{tmp_path / 'l.db'}")
    _record_job(store, "r0", "a", end=None)
    warm = spend.ChainSpend(frozenset(["a"]))
    with store.snapshot() as view:
        warm.advance(view, batch=1)
    assert warm.committed([spend.Filter("a")]) == [3000]  # under way: its full price
    failed = {"reason": "unauthorized", "message": "401", "category": "unauthorized"}
    store.append("r0", [NewEvent("JobFailed", failed)], 1)
    chain = spend.ChainSpend(frozenset(["a"]))
    with store.snapshot() as view:
        chain.advance(view, batch=1)
        warm.advance(view, batch=1)
    assert chain.committed([spend.Filter("a")]) == warm.committed([spend.Filter("a")]) == [0]


def test_a_zeroed_spend_table_lifts_no_budget_and_audit_names_it(
    box: Sandbox, rep: ReplicateDouble
) -> None:
    """Whoever can write the ledger's database zeroes the spend table with plain SQL: the
    guard's figure comes from the events, so the next request past the budget is still refused,
    `budget list` still shows it spent, and `imagen audit` reports the edited table."""
    import sqlite3

    from imagen.projections import spend

    setb(box, "agent-1", "0.006", "day")
    assert gen(box).returncode == 0 and gen(box).returncode == 0
    store = box.store()
    spend.catch_up(store)
    store.close()
    with sqlite3.connect(box.root / "ledger.db") as conn:
        conn.execute(f"update {spend.TABLE} set reserved_micros=0, spent_micros=0")
    refused = gen(box)
    assert refused.returncode == 9, refused.stderr
    assert "agent-1 has spent $0.006000" in refused.stderr
    assert rep.billed == 2
    [row] = listed(box)
    assert (row["spent"], row["left"]) == ("0.006000", "0.000000")
    audit = box.run("audit", "--json")
    assert audit.returncode != 0, audit.stdout
    found = [p for p in json.loads(audit.stdout)["problems"] if p.get("projection") == "spend"]
    assert len(found) == 2 and all("the spend table disagrees" in p["message"] for p in found)


def test_a_day_window_stays_in_the_zone_the_budget_was_set_in(tmp_path: Path) -> None:
    """Set in UTC; checked at 22:00 UTC by a process whose TZ is Etc/GMT-2 (UTC+2, where it
    is already tomorrow): the day is still the UTC day, so what was spent today still counts.
    A budget recorded before zones were (no zone) keeps following the checker's zone."""
    from ledger import open_store

    at_nine = datetime(2026, 5, 1, 21, tzinfo=UTC)
    store = open_store(f"sqlite:///{tmp_path / 'l.db'}", clock=lambda: at_nine)
    _record_job(store, "j1", "a")  # spent at 21:00 UTC
    now = datetime(2026, 5, 1, 22, tzinfo=UTC)
    plus_two = ZoneInfo("Etc/GMT-2")
    budgets.set_budget(
        store, "a", "0.003", "day", None, "t", budgets.zone_name(ZoneInfo("UTC"), now)
    )
    [(b, [s])] = budgets.standings(store, now, plus_two)
    assert b.zone == "UTC" and s.spent == 3000 and s.start == datetime(2026, 5, 1, tzinfo=UTC)
    request = _request_for("a")
    check = budgets.Budgets(store, lambda: now, plus_two).guard(request)
    assert check is not None
    with pytest.raises(budgets.OverBudget), store.snapshot() as view:
        check(view)
    # No zone recorded (set by an older imagen): the checker's zone, as before.
    budgets.set_budget(store, "a", "0.003", "day", None, "t", "")
    [(b, [s])] = budgets.standings(store, now, plus_two)
    assert b.zone == "" and s.spent == 0
    with store.snapshot() as view:
        check(view)  # passes: a fresh day in the checker's zone
    store.close()


def test_zone_names_and_fixed_offsets_are_recorded_and_read_back() -> None:
    from datetime import timezone

    now = datetime(2026, 5, 1, 22, tzinfo=UTC)
    assert budgets.zone_name(ZoneInfo("Europe/Paris"), now) == "Europe/Paris"
    fixed = timezone(timedelta(hours=5, minutes=30))
    assert budgets.zone_name(fixed, now) == "+05:30"
    assert budgets.zone_name(timezone(-timedelta(hours=3)), now) == "-03:00"
    b = rules.Budget("a", BudgetPeriod.DAY, 1, zone="+05:30")
    assert budgets.zone_of(b, UTC).utcoffset(now) == timedelta(hours=5, minutes=30)
    assert budgets.zone_of(rules.Budget("a", BudgetPeriod.DAY, 1, zone="Nowhere/Land"), UTC) is UTC


def _request_for(caller: str):  # type: ignore[no-untyped-def]
    from imagen.core.events import JobRequested

    return JobRequested(
        "rep", "replicate", SCHNELL, "p", {"count": 1}, {}, "/tmp/x.png", caller=caller,
        price_usd=0.003,
    )  # fmt: skip


def test_ended_spend_sums_by_window_whatever_order_jobs_end_in() -> None:
    from imagen.projections.spend import _Ended

    ended = _Ended()
    ended.add("a", "2026-05-01T10:00:00Z", 1)
    ended.add("b", "2026-05-02T10:00:00Z", 10)
    assert ended.since("2026-05-02") == 10 and ended.since(None) == 11
    ended.add("c", "2026-05-01T12:00:00Z", 100)  # out of order (another machine's clock)
    assert ended.since("2026-05-01T11") == 110 and ended.since(None) == 111
    ended.remove("b")
    ended.add("b", "2026-04-30T00:00:00Z", 1000)  # the same job, folded again
    assert ended.since("2026-05-01") == 101 and ended.since(None) == 1101


def _end_recording(job_id: str, caller: str, spent: int, end: str = "JobSucceeded"):  # type: ignore[no-untyped-def]
    from ledger import NewEvent

    figure = {"caller": caller, "backend": "rep", "reserved_micros": 3000, "spent_micros": spent}
    return NewEvent(end, {"spend": figure})


def test_a_cold_fold_sums_recorded_ends_and_folds_the_rest_alike(tmp_path: Path) -> None:
    """A process's first budget check takes an ended job's figure from its terminal event
    (SPEND_AT_END) when that event is the job's last; jobs ended by an older imagen (no figure),
    jobs under way and jobs with an event after their end are folded whole. Both give the sums
    a full fold gives."""
    from imagen.projections import spend
    from ledger import NewEvent, open_store

    store = open_store(f"sqlite:///{tmp_path / 'l.db'}")
    _record_job(store, "old", "a")  # no figure: folded
    _record_job(store, "open", "a", end=None)  # under way: folded
    for jid in ("new1", "new2"):
        _record_job(store, jid, "a", end=None)
        store.append(jid, [NewEvent("RemoteJobAccepted", {"remote_id": f"r-{jid}"})], None)
        image = {"path": f"/tmp/{jid}.png", "sha256": "0" * 64, "bytes": 1, "format": "png"}
        store.append(jid, [NewEvent("ImageStored", {**image, "width": 1, "height": 1})], None)
        store.append(jid, [_end_recording(jid, "a", 3000)], None)
    store.append("new2", [_job_failed()], None)  # an event after its end: folded whole
    filters = [spend.Filter("a")]
    with store.snapshot() as view:
        cold, full = spend.ChainSpend(), spend.ChainSpend()
        cold.advance(view)
        full.advance(view, trust_ends=False)
        assert cold.committed(filters) == full.committed(filters) == [12000]
        assert spend.recorded_differences(view, full.position, full.rows) == []


def test_a_false_figure_recorded_in_an_end_is_an_audit_finding(
    box: Sandbox, rep: ReplicateDouble
) -> None:
    """A writer appends an end to its own paid job recording that it spent nothing: a new
    process's budget check would sum that figure instead of folding the job, so `imagen audit`
    folds every job and names the end whose figure its events contradict."""
    from imagen.projections import spend

    assert gen(box).returncode == 0
    store = box.store()
    try:
        [jid] = [j for j in box.job_ids()]
        with store.snapshot() as view:
            full = spend.ChainSpend()
            full.advance(view, trust_ends=False)
            assert spend.recorded_differences(view, full.position, full.rows) == []
        # Forged: an end with a false figure appended after the real one (the last end counts).
        store.append(jid, [_end_recording(jid, "agent-1", 0)], None)
    finally:
        store.close()
    audit = box.run("audit", "--json")
    assert audit.returncode == 4, audit.stderr
    found = [p for p in json.loads(audit.stdout)["problems"] if p["kind"] == "spend_recorded"]
    assert [p["job_id"] for p in found] == [jid] and "spent_micros" in found[0]["columns"]
