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


def test_since_window_is_measured_on_replicates_clock(
    store: Any, envt: Environment, time: ManualTime, tmp_path: Path
) -> None:
    """Replicate's clock runs 10 minutes ahead of ours: the window starts at `since` on ours,
    which is since + 10 min on Replicate's (its Date header says so)."""
    skew = timedelta(minutes=10)
    with replicate_double(clock=lambda: time.now + skew, page_size=2) as rep:
        for _ in range(6):
            raw_post(rep, "long before the window")
        time.now += timedelta(hours=2)
        since = time.now
        # 2 min before `since` on our clock, 8 min after it on Replicate's: outside the window.
        time.now = since - timedelta(minutes=2)
        raw_post(rep, "just before")
        time.now = since - timedelta(minutes=1)
        before = generate(store, rep, envt, tmp_path, 1)
        time.now = since
        on_the_edge = raw_post(rep, "exactly at since")
        time.now = since + timedelta(seconds=30)
        inside = generate(store, rep, envt, tmp_path, 2)
        time.now = since + timedelta(minutes=1)
        after = raw_post(rep, "inside")
        rep.forget(before)
        rep.forget(inside)
        time.now = since + timedelta(minutes=5)
        report = audit(store, rep, envt, since=since)
    assert kinds(report) == sorted(
        [
            ("provider_unknown", on_the_edge),
            ("provider_unknown", after),
            ("provider_missing", inside),
        ]
    )
    [account] = report.accounts
    assert account["clock_offset_s"] == pytest.approx(600, abs=1)
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

        misuse = box.run("audit", "--since", "1h")
        assert misuse.returncode == 2 and "--since needs --provider" in misuse.stderr
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
