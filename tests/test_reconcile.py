"""`imagen audit --provider`: the ledger's books against the Replicate double's list of
predictions, over real sockets. Jobs run through the real Runner (in-process, the clock moved
only by the audit's own waits) or the real CLI; predictions made outside imagen come from a raw
urllib3 POST and from the official `replicate` client with the same token."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import replicate
import urllib3

from imagen.app.config import parse_config
from imagen.app.reconcile import ProviderReport, audit_provider
from imagen.core.inputs import GenerateInputs
from imagen.runner.environment import Environment
from imagen.runner.http import Http
from imagen.testing.replicate import ReplicateDouble
from ledger import open_store
from tests.support.cli import Sandbox
from tests.support.doubles import SCHNELL, TOKEN, TOKEN_ENV, replicate_double
from tests.support.inprocess import ManualTime, drive, environment, prepared

OPTIONS = {"retry_base_s": 0.01, "poll_interval_s": 0.05}


@pytest.fixture
def time() -> ManualTime:
    return ManualTime()


@pytest.fixture
def rep(time: ManualTime) -> Iterator[ReplicateDouble]:
    with replicate_double(clock=time.clock, page_size=2) as double:
        yield double


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Any]:
    s = open_store(f"sqlite:///{tmp_path / 'ledger.db'}")
    yield s
    s.close()


@pytest.fixture
def envt(time: ManualTime) -> Environment:
    return environment(dict(TOKEN_ENV), time)


def generate(store: Any, rep: ReplicateDouble, envt: Environment, tmp: Path, seed: int) -> str:
    """One job through the real Runner; its prediction's id."""
    job = prepared(
        tmp / "out",
        "replicate",
        {"base_url": rep.url, **OPTIONS},
        GenerateInputs("fox", seed=seed),
        envt,
    )
    state = drive(store, job, envt)
    assert state.status == "succeeded", state.terminal
    assert state.remote_id is not None
    return state.remote_id


def audit(store: Any, rep: ReplicateDouble, envt: Environment, **kw: Any) -> ProviderReport:
    config = parse_config(
        {"default_backend": "b", "backends": {"b": {"type": "replicate", "base_url": rep.url}}},
        "test config",
        envt.env,
    )
    head = store.verify().head.position
    return audit_provider(store, config, envt, head=head, since=kw.pop("since", None), **kw)


def raw_post(rep: ReplicateDouble, prompt: str) -> str:
    """A prediction made outside imagen: a plain POST with the same token."""
    r = urllib3.request(
        "POST",
        f"{rep.url}/v1/models/{SCHNELL}/predictions",
        json={"input": {"prompt": prompt}},
        headers={"Authorization": f"Bearer {TOKEN}", "Prefer": "wait=5"},
        timeout=10,
    )
    assert r.status == 201
    return str(r.json()["id"])


def kinds(report: ProviderReport) -> list[tuple[str, str]]:
    return sorted((p["kind"], p.get("remote_id", "")) for p in report.problems)


def test_books_agree_across_pages(
    store: Any, rep: ReplicateDouble, envt: Environment, time: ManualTime, tmp_path: Path
) -> None:
    ids = []
    for seed in range(1, 6):
        ids.append(generate(store, rep, envt, tmp_path, seed))
        time.now += timedelta(seconds=1)
    report = audit(store, rep, envt)
    assert report.problems == [] and report.notes == []
    [account] = report.accounts
    # page_size 2: 5 predictions take 3 pages, each followed through its `next` cursor.
    assert account["pages"] == 3 and account["listed"] == 5 and account["complete"]
    lists = [t for m, t in rep.requests if m == "GET" and t.startswith("/v1/predictions?")]
    assert len(lists) == 2 and all("cursor=" in t for t in lists)


def test_outside_predictions_are_unknown(
    store: Any, rep: ReplicateDouble, envt: Environment, tmp_path: Path
) -> None:
    ours = generate(store, rep, envt, tmp_path, 1)
    raw = raw_post(rep, "made with urllib3")
    client = replicate.Client(api_token=TOKEN, base_url=rep.url)
    official = client.predictions.create(model=SCHNELL, input={"prompt": "made with replicate"}).id
    report = audit(store, rep, envt)
    assert kinds(report) == sorted([("provider_unknown", raw), ("provider_unknown", official)])
    assert ours not in json.dumps(report.problems)
    assert all("unknown to the ledger" in p["message"] for p in report.problems)


def test_billed_prediction_missing_upstream(
    store: Any, rep: ReplicateDouble, envt: Environment, tmp_path: Path
) -> None:
    gone = generate(store, rep, envt, tmp_path, 1)
    kept = generate(store, rep, envt, tmp_path, 2)
    rep.forget(gone)
    report = audit(store, rep, envt)
    assert kinds(report) == [("provider_missing", gone)]
    assert kept not in json.dumps(report.problems)


def test_status_and_output_count_that_differ(
    store: Any, rep: ReplicateDouble, envt: Environment, tmp_path: Path
) -> None:
    refunded = generate(store, rep, envt, tmp_path, 1)
    job = prepared(
        tmp_path / "out",
        "replicate",
        {"base_url": rep.url, **OPTIONS},
        GenerateInputs("two foxes", seed=2, count=2),
        envt,
    )
    state = drive(store, job, envt)
    assert state.status == "succeeded" and len(state.images) == 2
    assert state.remote_id is not None
    rep.amend(refunded, status="failed")
    rep.amend(state.remote_id, outputs=1)
    report = audit(store, rep, envt)
    assert kinds(report) == sorted(
        [("provider_status", refunded), ("provider_outputs", state.remote_id)]
    )
    by_kind = {p["kind"]: p for p in report.problems}
    assert (by_kind["provider_status"]["ledger"], by_kind["provider_status"]["provider"]) == (
        "succeeded",
        "failed",
    )
    assert (by_kind["provider_outputs"]["ledger"], by_kind["provider_outputs"]["provider"]) == (
        2,
        1,
    )


class ThrottleFrom:
    """The real client; before its `n`th request, the double is told to throttle (429) the
    next requests to the list, with these Retry-After values."""

    def __init__(self, rep: ReplicateDouble, n: int, retry_after: list[int]) -> None:
        self.real, self.rep, self.n, self.retry_after = Http(), rep, n, retry_after
        self.sent = 0

    def send(self, method: str, url: str, **kwargs: Any) -> Any:
        self.sent += 1
        if self.sent == self.n:
            for seconds in self.retry_after:
                self.rep.fail_next("list", status=429, retry_after=seconds)
        return self.real.send(method, url, **kwargs)


def test_429_mid_pagination_is_waited_out(
    store: Any, rep: ReplicateDouble, envt: Environment, time: ManualTime, tmp_path: Path
) -> None:
    for seed in range(1, 5):
        generate(store, rep, envt, tmp_path, seed)
    raw = raw_post(rep, "outside")
    slept = len(time.slept)
    # Page 1 answers; page 2 is throttled twice: Retry-After 7, then 90 (obeyed up to 60).
    report = audit(store, rep, envt, http=ThrottleFrom(rep, 2, [7, 90]))
    assert kinds(report) == [("provider_unknown", raw)]
    [account] = report.accounts
    assert account["complete"] and account["pages"] == 3
    assert [(r["page"], r["reason"], r["delay_s"]) for r in account["retries"]] == [
        (2, "HTTP 429", 7.0),
        (2, "HTTP 429", 60.0),
    ]
    assert time.slept[slept:] == [7.0, 60.0]


@pytest.mark.parametrize("skew_s", [30, 600, -600], ids=["near", "ahead", "behind"])
def test_since_window_is_measured_on_replicates_clock(
    store: Any, envt: Environment, time: ManualTime, tmp_path: Path, skew_s: int
) -> None:
    """Replicate's clock runs `skew_s` from ours (its Date header says so). Near ours, the
    window starts at `since` moved onto Replicate's clock. Further off, the header is not taken
    on trust: the window starts at the earlier of `since` on either clock (wider, never
    narrower), with a note saying the clocks are off."""
    skew = timedelta(seconds=skew_s)
    with replicate_double(clock=lambda: time.now + skew, page_size=2) as rep:
        for _ in range(6):
            raw_post(rep, "long before the window")
        time.now += timedelta(hours=2)
        since = time.now
        # The window's start on Replicate's clock, and how to make a prediction at a moment of it.
        start = since + (skew if abs(skew_s) <= 60 else min(skew, timedelta(0)))

        def at(moment: Any) -> None:
            time.now = moment - skew

        at(start - timedelta(seconds=20))
        raw_post(rep, "just before")
        at(start - timedelta(seconds=10))
        before = generate(store, rep, envt, tmp_path, 1)
        at(start)
        on_the_edge = raw_post(rep, "exactly at the start")
        at(start + timedelta(seconds=30))
        inside = generate(store, rep, envt, tmp_path, 2)
        at(start + timedelta(minutes=1))
        after = raw_post(rep, "inside")
        rep.forget(before)
        rep.forget(inside)
        time.now = since + timedelta(minutes=15)
        report = audit(store, rep, envt, since=since)
    assert kinds(report) == sorted(
        [
            ("provider_unknown", on_the_edge),
            ("provider_unknown", after),
            ("provider_missing", inside),
        ]
    )
    [account] = report.accounts
    assert account["clock_offset_s"] == pytest.approx(skew_s, abs=1)
    clock = [n for n in report.notes if n["kind"] == "provider_clock"]
    assert bool(clock) == (abs(skew_s) > 60)
    # The listing stops once a page is older than the window (less a margin): the six old
    # predictions' pages are not all read.
    assert account["complete"] and account["pages"] < 5


def test_hostile_next_is_refused_without_the_token(
    store: Any, rep: ReplicateDouble, envt: Environment, tmp_path: Path
) -> None:
    with replicate_double(token=None) as evil:
        ids = [generate(store, rep, envt, tmp_path, seed) for seed in range(1, 5)]
        rep.forget(ids[0])  # the oldest: it would be on page 2, which is never read
        rep.hostile_next(f"{evil.url}/v1/predictions?cursor=x")
        report = audit(store, rep, envt)
        assert evil.received == []
    [account] = report.accounts
    assert not account["complete"] and "another origin" in account["error"]
    # The list was not read whole: nothing may be called missing from it.
    assert report.problems == []


@pytest.mark.parametrize(
    "body",
    [
        {"results": "nope"},
        {"results": [{"id": "x" * 500, "status": "succeeded"}], "next": None},
        {"results": [None], "next": None},
        {"results": [], "next": 7},
        ["not", "a", "page"],
        "<html>gateway</html>",
        '{"results": [], "next": NaN}',
    ],
)
def test_malformed_page_is_a_one_line_error(
    store: Any, rep: ReplicateDouble, envt: Environment, body: Any
) -> None:
    raw_post(rep, "outside")
    rep.fail_next("list", status=200, body=body)
    report = audit(store, rep, envt)
    [account] = report.accounts
    assert account["error"].endswith("page 1 of the list is not a listing of predictions")
    assert not account["complete"] and report.problems == []


def test_spent_rate_limit_is_waited_for_not_hit(
    store: Any, envt: Environment, time: ManualTime
) -> None:
    """With 2 list requests left a minute, the audit waits for the reset Replicate announces
    (ratelimit-remaining 0) instead of being throttled."""
    with replicate_double(clock=time.clock, page_size=1, rate_limits={"other": 2}) as rep:
        for i in range(5):
            raw_post(rep, f"p{i}")
        report = audit(store, rep, envt)
        lists = [t for _m, t in rep.requests if t.startswith("/v1/predictions")]
    [account] = report.accounts
    assert account["complete"] and account["pages"] == 5 and account["listed"] == 5
    assert [r["reason"] for r in account["retries"]] == ["rate limit", "rate limit"]
    assert len(lists) == 5  # one request a page: none was refused


def test_cli_exit_codes_and_json(tmp_path: Path) -> None:
    with replicate_double(page_size=1) as rep, replicate_double(token=None) as evil:
        box = Sandbox(tmp_path, env=dict(TOKEN_ENV))
        box.write_backend("rep", "replicate", model=SCHNELL, base_url=rep.url, **OPTIONS)
        for seed in ("1", "2"):
            made = box.run("generate", "a fox", "--seed", seed)
            assert made.returncode == 0, made.stderr
        agree = box.run("audit", "--provider", "--json")
        assert agree.returncode == 0, agree.stdout + agree.stderr
        data = json.loads(agree.stdout)
        assert data["ok"] and data["problems"] == []
        [account] = data["provider"]
        assert account == {
            "backends": ["rep"],
            "origin": rep.url,
            "token_env": "REPLICATE_API_TOKEN",
            "since": None,
            "pages": 2,
            "listed": 2,
            "complete": True,
            "clock_offset_s": account["clock_offset_s"],
            "retries": [],
            "error": None,
        }
        assert abs(account["clock_offset_s"]) < 5

        # Without --provider, --since is an incremental audit from a checkpoint an audit
        # recorded by then: the audits above recorded theirs just now, not an hour ago.
        early = box.run("audit", "--since", "1h")
        assert early.returncode == 2 and "no audit recorded a verified checkpoint" in early.stderr
        assert box.run("audit", "--provider", "--since", "yesterday").returncode == 2

        rep.hostile_next(f"{evil.url}/v1/predictions?cursor=x")
        partial = box.run("audit", "--provider")
        assert partial.returncode == 3, partial.stdout + partial.stderr
        assert "links its next page to another origin" in partial.stdout
        assert evil.received == []
        rep.hostile_next(None)

        outside = raw_post(rep, "made outside imagen")
        found = box.run("audit", "--provider", "--since", "1h")
        assert found.returncode == 4, found.stdout + found.stderr
        [line] = [ln for ln in found.stdout.splitlines() if outside in ln]
        assert "unknown to the ledger" in line
        for result in (agree, partial, found):
            assert TOKEN not in result.stdout + result.stderr


def test_gateway_errors_and_resets_are_retried_then_given_up(
    store: Any, rep: ReplicateDouble, envt: Environment, time: ManualTime
) -> None:
    outside = raw_post(rep, "outside")
    rep.fail_next("list", status=502, html=True)
    rep.reset_next("list")
    report = audit(store, rep, envt)
    [account] = report.accounts
    assert account["complete"] and kinds(report) == [("provider_unknown", outside)]
    assert [(r["reason"], r["delay_s"]) for r in account["retries"]] == [
        ("HTTP 502", 0.5),
        ("network", 1.0),
    ]
    rep.fail_next("list", status=503, times=4)
    report = audit(store, rep, envt)
    [account] = report.accounts
    assert account["error"].endswith("page 1 could not be read (HTTP 503)")
    assert len(account["retries"]) == 3 and report.problems == []


@pytest.mark.parametrize(
    ("env", "error"),
    [
        ({}, "REPLICATE_API_TOKEN is not set"),
        ({"REPLICATE_API_TOKEN": "r8_wrong"}, "Replicate rejected the token (HTTP 401)"),
    ],
)
def test_no_usable_token_is_an_error_not_a_finding(
    store: Any, rep: ReplicateDouble, time: ManualTime, env: dict[str, str], error: str
) -> None:
    raw_post(rep, "outside")
    report = audit(store, rep, environment(env, time))
    [account] = report.accounts
    assert account["error"].startswith(f"b: {error}") and report.problems == []


def test_next_link_back_to_a_read_page_stops(
    store: Any, rep: ReplicateDouble, envt: Environment
) -> None:
    for i in range(3):
        raw_post(rep, f"p{i}")
    rep.hostile_next(f"{rep.url}/v1/predictions")
    report = audit(store, rep, envt)
    [account] = report.accounts
    assert account["pages"] == 1 and "links back to a page already read" in account["error"]


def test_a_create_in_flight_is_pending_not_unknown(
    tmp_path: Path, rep: ReplicateDouble, envt: Environment
) -> None:
    """An agent generates while the audit runs: its prediction exists at Replicate, its create
    has not been answered yet. The prediction echoes the job's input: a note, not a finding."""
    import threading

    url = f"sqlite:///{tmp_path / 'ledger.db'}"
    release = rep.hold_next("create")
    job = prepared(
        tmp_path / "out",
        "replicate",
        {"base_url": rep.url, **OPTIONS},
        GenerateInputs("fox", seed=9),
        envt,
    )

    def run() -> None:
        s = open_store(url)
        try:
            drive(s, job, envt)
        finally:
            s.close()

    worker = threading.Thread(target=run)
    worker.start()
    try:
        rep.wait_for_request(lambda r: r[0] == "POST")
        store = open_store(url)
        try:
            report = audit(store, rep, envt)
        finally:
            store.close()
    finally:
        release.set()
        worker.join(30)
    assert report.problems == []
    [note] = report.notes
    assert note["kind"] == "provider_pending" and note["job_id"] == job.job_id
    store = open_store(url)
    try:
        after = audit(store, rep, envt)  # the create was answered: the job holds it
    finally:
        store.close()
    assert after.problems == [] and after.notes == []


def test_an_unadopted_create_is_unknown_and_names_its_job(
    store: Any, rep: ReplicateDouble, envt: Environment
) -> None:
    """A job whose create timed out and which ended without finding its prediction: Replicate
    made (and bills) it, the ledger does not count it. Its echoed input names the job."""
    from imagen.core.events import JobFailed, JobRequested, RequestFailed, RequestSent
    from imagen.core.failures import Failure
    from ledger import NewEvent

    sent = {"prompt": "lost fox", "seed": 77}
    events = [
        JobRequested(
            "b", "replicate", SCHNELL, "lost fox", {"seed": 77}, {"base_url": rep.url}, "/x"
        ),
        RequestSent(
            "r1",
            "create",
            "POST",
            f"{rep.url}/v1/models/{SCHNELL}/predictions",
            {},
            {"input": sent},
        ),
        RequestFailed("r1", "create", "timeout", "no answer"),
        JobFailed("unreachable", "gave up", Failure.UNREACHABLE),
    ]
    store.append("job-lost", [NewEvent(e.type_name(), e.to_data()) for e in events], 0)
    r = urllib3.request(
        "POST",
        f"{rep.url}/v1/models/{SCHNELL}/predictions",
        json={"input": {**sent, "num_outputs": 1}},
        headers={"Authorization": f"Bearer {TOKEN}"},
        timeout=10,
    )
    made = str(r.json()["id"])
    report = audit(store, rep, envt)
    [found] = report.problems
    assert (found["kind"], found["remote_id"], found["job_id"]) == (
        "provider_unknown",
        made,
        "job-lost",
    )
    assert "paid but not counted" in found["message"]


class ThrottleEachPage:
    """The real client; each page of the list is throttled `times` times (Retry-After
    `seconds`, on the double) before it is answered: a server that keeps an audit for hours."""

    def __init__(self, rep: ReplicateDouble, times: int, seconds: int) -> None:
        self.real, self.rep, self.times, self.seconds = Http(), rep, times, seconds
        self.answered = True

    def send(self, method: str, url: str, **kwargs: Any) -> Any:
        if self.answered:
            self.rep.fail_next("list", status=429, retry_after=self.seconds, times=self.times)
        reply = self.real.send(method, url, **kwargs)
        self.answered = reply.status == 200
        return reply


def test_a_throttling_server_is_read_within_the_time_limit(
    store: Any, rep: ReplicateDouble, envt: Environment, time: ManualTime
) -> None:
    """5 pages, each throttled 5 times for 60 s: 25 minutes without a limit. The default limit
    (300 s) counts every wait and does not start one that would pass it."""
    for i in range(9):
        raw_post(rep, f"p{i}")
    slept = len(time.slept)
    report = audit(store, rep, envt, http=ThrottleEachPage(rep, 5, 60))
    [account] = report.accounts
    assert sum(time.slept[slept:]) <= 300
    assert time.slept[slept:] == [60.0] * 4  # a fifth wait would reach the limit
    assert not account["complete"] and account["pages"] == 0
    assert "time limit (300 s, --max-time)" in account["error"]
    assert "not read whole" in account["error"] and report.problems == []
    # With room for it, the same server is waited out and read whole.
    report = audit(store, rep, envt, http=ThrottleEachPage(rep, 2, 60), max_time_s=3600)
    [account] = report.accounts
    assert account["complete"] and account["pages"] == 5 and account["error"] is None


def test_a_provider_date_far_off_widens_the_window_and_says_so(
    store: Any, rep: ReplicateDouble, envt: Environment, time: ManualTime, tmp_path: Path
) -> None:
    """Replicate's Date header says a day later than its own created_at (a proxy or host with a
    wrong clock): measured on that header, `--since 1h` would start tomorrow and hide a
    prediction made a minute ago. The window starts at the earlier reading instead."""
    ours = generate(store, rep, envt, tmp_path, 1)
    time.now += timedelta(minutes=1)
    outside = raw_post(rep, "made outside imagen")
    rep.skew_date(timedelta(days=1))
    report = audit(store, rep, envt, since=time.now - timedelta(hours=1))
    assert kinds(report) == [("provider_unknown", outside)]
    assert ours not in json.dumps(report.problems)
    [clock] = [n for n in report.notes if n["kind"] == "provider_clock"]
    assert "clocks are off" in clock["message"] and "widened" in clock["message"]
    [account] = report.accounts
    assert account["clock_offset_s"] == pytest.approx(86400, abs=5)


def test_predictions_recorded_below_the_price_table_are_a_finding(
    store: Any, rep: ReplicateDouble, envt: Environment, tmp_path: Path
) -> None:
    """A job recorded a flux-dev prediction at $0 (a config's price_usd = 0): the spend is
    counted short. A job at the table's price is not named."""
    from imagen.core.events import JobRequested, RemoteJobAccepted, RequestSent, ResponseReceived
    from ledger import NewEvent

    fair = generate(store, rep, envt, tmp_path, 1)  # flux-schnell at the table's $0.003
    dev = "black-forest-labs/flux-dev"
    r = urllib3.request(
        "POST",
        f"{rep.url}/v1/models/{dev}/predictions",
        json={"input": {"prompt": "free fox"}},
        headers={"Authorization": f"Bearer {TOKEN}"},
        timeout=10,
    )
    made = r.json()
    url = f"{rep.url}/v1/models/{dev}/predictions"
    events = [
        JobRequested(
            "b", "replicate", dev, "free fox", {}, {"base_url": rep.url}, "/x", price_usd=0.0
        ),
        RequestSent("r1", "create", "POST", url, {}, {"input": {"prompt": "free fox"}}),
        ResponseReceived("r1", "create", 201, {}, made),
        RemoteJobAccepted(made["id"]),
    ]
    store.append("job-free", [NewEvent(e.type_name(), e.to_data()) for e in events], 0)
    report = audit(store, rep, envt)
    [found] = report.problems
    assert (found["kind"], found["job_id"], found["remote_id"]) == (
        "price_below_table",
        "job-free",
        made["id"],
    )
    assert (found["recorded_usd"], found["table_usd"]) == ("0.000000", "0.025000")
    assert "job-free" in found["message"] and "0.025" in found["message"]
    assert fair not in json.dumps(report.problems)


def test_cli_time_limit_and_clock_off(tmp_path: Path) -> None:
    """The real CLI: a throttling server past --max-time is exit 3 in one line, at once (its
    Retry-After is 60 s, the limit 2 s: no wait is started); a Date header a day off with
    --since is a finding, not "ok"."""
    with replicate_double(page_size=1) as rep:
        box = Sandbox(tmp_path, env=dict(TOKEN_ENV))
        box.write_backend("rep", "replicate", model=SCHNELL, base_url=rep.url, **OPTIONS)
        made = box.run("generate", "a fox", "--seed", "1")
        assert made.returncode == 0, made.stderr

        rep.fail_next("list", status=429, retry_after=60, times=50)
        slow = box.run("audit", "--provider", "--max-time", "2")
        assert slow.returncode == 3, slow.stdout + slow.stderr
        [line] = [ln for ln in slow.stdout.splitlines() if "--max-time" in ln]
        assert "not read whole" in line and slow.stdout.splitlines()[-1].startswith("INCOMPLETE")
        rep.fail_next("list", status=429, retry_after=60, times=50)
        data = json.loads(box.run("audit", "--provider", "--max-time", "2", "--json").stdout)
        assert data["ok"] is False and data["provider_complete"] is False
        assert "time limit" in data["provider"][0]["error"]
        rep.clear_faults()
        for bad in ("0", "-1", "abc", "nan", "١٢"):
            refused = box.run("audit", "--provider", "--max-time", bad)
            assert refused.returncode == 2 and "--max-time" in refused.stderr, bad
        alone = box.run("audit", "--max-time", "5")
        assert alone.returncode == 2 and "needs --provider" in alone.stderr

        outside = raw_post(rep, "made outside imagen")
        rep.skew_date(timedelta(days=1))
        found = box.run("audit", "--provider", "--since", "1h")
        assert found.returncode == 4, found.stdout + found.stderr
        assert any(
            outside in ln and "unknown to the ledger" in ln for ln in found.stdout.splitlines()
        )
        assert "clocks are off" in found.stdout
