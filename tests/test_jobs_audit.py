"""jobs, show, resume, audit and rebuild over the echo contract backend, through the real CLI."""

from __future__ import annotations

import json
import signal
import sqlite3
from pathlib import Path

import pytest

from ledger import NewEvent
from tests.support.cli import Sandbox
from tests.support.echo import EchoServer


def _generate(box: Sandbox, prompt: str = "a fox", **env: str) -> str:
    result = box.run("generate", prompt, "--seed", "3", env=env or None)
    assert result.returncode == 0, result.stderr
    return result.stdout.strip()


def test_jobs_show_and_audit_of_a_good_ledger(sandbox: Sandbox) -> None:
    image = _generate(sandbox)
    [job_id] = sandbox.job_ids()
    listing = sandbox.run("jobs")
    assert listing.returncode == 0
    assert (
        job_id[:8] in listing.stdout and "succeeded" in listing.stdout and "a fox" in listing.stdout
    )
    [as_json] = json.loads(sandbox.run("jobs", "--json").stdout)
    assert (
        as_json["job_id"] == job_id and as_json["image"] == image and as_json["images"] == [image]
    )
    for args, listed in (
        (["--since", "1d"], True),
        (["--since", "2099-01-01"], False),
        (["--backend", "echo"], True),
        (["--backend", "other"], False),
        (["--status", "succeeded"], True),
        (["--status", "failed"], False),
    ):
        assert (job_id[:8] in sandbox.run("jobs", *args).stdout) is listed, args
    assert sandbox.run("jobs", "--since", "yesterday").returncode == 2
    shown = sandbox.run("show", job_id[:5])
    assert (
        shown.returncode == 0 and "requested echo" in shown.stdout and "succeeded" in shown.stdout
    )
    shown_json = json.loads(sandbox.run("show", job_id, "--json").stdout)
    assert [e["type"] for e in shown_json["events"]][-1] == "JobSucceeded"
    audit = sandbox.run("audit")
    assert audit.returncode == 0, audit.stdout
    assert "ok: 9 events verified, 1 images checked" in audit.stdout  # 8 + LedgerCreated


def test_unknown_and_ambiguous_ids(sandbox: Sandbox) -> None:
    _generate(sandbox)
    [real] = sandbox.job_ids()
    assert sandbox.run("show", "zzzz").returncode == 6
    unknown = "0000ffff" if not real.startswith("0000ffff") else "ffff0000"
    assert sandbox.run("show", unknown).returncode == 6
    # Two more jobs whose ids share a prefix (ids are random, so write them into the ledger).
    store = sandbox.store()
    try:
        requested = store.read_stream(real)[0]
        for twin in ("abcabc0000000001", "abcabc0000000002"):
            store.append(
                twin,
                [NewEvent(requested.type, requested.data, requested.schema_version)],
                expected_version=0,
            )
    finally:
        store.close()
    ambiguous = sandbox.run("show", "abcabc")
    assert ambiguous.returncode == 2, ambiguous.stderr
    assert "matches several jobs" in ambiguous.stderr
    one = sandbox.run("show", "abcabc0000000002", "--json")
    assert one.returncode == 0, one.stderr
    assert json.loads(one.stdout)["job_id"] == "abcabc0000000002"


def test_audit_names_a_deleted_image_and_a_tampered_event(sandbox: Sandbox) -> None:
    image = _generate(sandbox)
    [job_id] = sandbox.job_ids()
    Path(image).unlink()
    audit = sandbox.run("audit")
    assert audit.returncode == 4
    assert f"job {job_id}: image missing" in audit.stdout

    db = sqlite3.connect(sandbox.ledger_url.removeprefix("sqlite:///"))
    db.execute("DROP TRIGGER events_no_update")
    # Position 1 is the ledger's identity (LedgerCreated); the job's request is position 2.
    db.execute("UPDATE events SET data = replace(data, 'a fox', 'a cat') WHERE position = 2")
    db.execute(
        "CREATE TRIGGER events_no_update BEFORE UPDATE ON events BEGIN SELECT RAISE(ABORT, 'x'); END"
    )
    db.commit()
    db.close()
    audit = sandbox.run("audit", "--json")
    report = json.loads(audit.stdout)
    assert audit.returncode == 4
    assert {"kind": "chain", "position": 2} in [
        {k: p.get(k) for k in ("kind", "position")} for p in report["problems"]
    ]


def test_crash_then_resume_finishes_the_job(sandbox: Sandbox) -> None:
    crashed = sandbox.run("generate", "crash", env={"IMAGEN_CRASH_AFTER": "RequestSent"})
    assert crashed.returncode == -signal.SIGKILL
    [job_id] = sandbox.job_ids()
    assert sandbox.types(job_id)[-1] == "RequestSent"
    listing = sandbox.run("jobs", "--status", "interrupted")
    assert job_id[:8] in listing.stdout
    assert "interrupted job" in sandbox.run("jobs").stderr
    next_one = sandbox.run("generate", "meanwhile")
    assert next_one.returncode == 0
    [mention] = [line for line in next_one.stderr.splitlines() if "interrupted" in line]
    assert "imagen resume --all" in mention
    resumed = sandbox.run("resume", job_id)
    assert resumed.returncode == 0, resumed.stderr
    assert Path(resumed.stdout.strip()).exists()
    assert sandbox.types(job_id)[-1] == "JobSucceeded"
    assert sandbox.run("audit").returncode == 0
    again = sandbox.run("resume", job_id)
    assert again.returncode == 0 and "already succeeded" in again.stderr


def test_resume_refuses_a_job_driven_by_a_live_process(
    sandbox: Sandbox, echo_server: EchoServer
) -> None:
    echo_server.hold.clear()
    proc = sandbox.popen("generate", "held")
    try:
        assert echo_server.arrived.wait(30)
        [job_id] = sandbox.job_ids()
        refused = sandbox.run("resume", job_id)
        assert refused.returncode == 5
        assert "being driven by pid" in refused.stderr
        assert sandbox.run("jobs", "--status", "running").stdout.count(job_id[:8]) == 1
    finally:
        echo_server.hold.set()
        proc.communicate(timeout=60)
    assert proc.returncode == 0


@pytest.mark.parametrize(
    ("sig", "code", "last"),
    [
        (signal.SIGTERM, 143, "JobInterrupted"),
        (signal.SIGHUP, 143, "JobInterrupted"),
        (signal.SIGINT, 130, "JobCancelled"),
    ],
)
def test_signals(sandbox: Sandbox, echo_server: EchoServer, sig: int, code: int, last: str) -> None:
    echo_server.hold.clear()
    proc = sandbox.popen("generate", "signalled")
    try:
        assert echo_server.arrived.wait(30)
        proc.send_signal(sig)
        proc.communicate(timeout=60)
    finally:
        echo_server.hold.set()
    assert proc.returncode == code
    [job_id] = sandbox.job_ids()
    assert sandbox.types(job_id)[-1] == last
    if last == "JobInterrupted":
        assert sandbox.run("resume", "--all").returncode == 0
        assert sandbox.types(job_id)[-1] == "JobSucceeded"


def test_rebuild_restores_a_deleted_sidecar(sandbox: Sandbox) -> None:
    image = _generate(sandbox)
    Path(f"{image}.json").unlink()
    result = sandbox.run("rebuild")
    assert result.returncode == 4  # a difference, repaired: still a finding (docs/usage.md)
    assert "sidecar missing" in result.stdout
    assert json.loads(Path(f"{image}.json").read_text())["prompt"] == "a fox"
    again = sandbox.run("rebuild")
    assert again.returncode == 0 and "0 difference(s)" in again.stdout


def test_audit_holds_a_job_only_while_it_is_open(tmp_path: Path) -> None:
    """Audit's memory follows the jobs under way, not the ledger's length: an ended job is
    settled and dropped at once, and past the open-job bound the longest idle are settled
    early and read again when their events resume."""
    from imagen.app.audit import scan
    from imagen.projections.jobs import table as jobs_index
    from ledger.store import open_store
    from tests.benchmarks.bench_jobs import _job_events

    store = open_store(f"sqlite:///{tmp_path / 'ledger.db'}")
    try:
        # 12 jobs in turns of 6 at once, each event in turn: 6 open together, 3 allowed.
        for first in (0, 6):
            streams = {f"job{i:03d}": _job_events(i) for i in range(first, first + 6)}
            for step in range(max(len(e) for e in streams.values())):
                for jid, events in streams.items():
                    if step < len(events):
                        store.append(jid, [NewEvent(*events[step])], None)
        jobs_index.catch_up(store)
        scanned = scan(store, store.head(), compare={"jobs"}, open_limit=3)
    finally:
        store.close()
    assert scanned.report.ok and scanned.report.checked == 12 * len(_job_events(0))
    assert scanned.most_open <= 4  # the bound, plus the one just opened
    # Jobs settled early, then resumed, fold whole: no row differs from the jobs table and
    # each job's finding (no image files were written) is counted once.
    assert [p["kind"] for p in scanned.problems] == ["image_missing"] * 12


def test_audit_of_a_postgresql_ledger_compares_every_cached_table(
    sandbox: Sandbox, pg_url: str
) -> None:
    """On PostgreSQL too: the chain read in one streamed view, each settled job's cached rows
    looked up by their keys (the usage table's by `id`), and a cached row a writer changed is
    named."""
    import psycopg

    env = {"IMAGEN_LEDGER_URL": pg_url}
    for prompt in ("a fox", "a cat"):
        assert sandbox.run("generate", prompt, env=env).returncode == 0
    assert sandbox.run("usage", env=env).returncode == 0  # the usage table caught up
    clean = sandbox.run("audit", env=env)
    assert clean.returncode == 0, clean.stdout + clean.stderr
    assert "2 images checked" in clean.stdout
    with psycopg.connect(pg_url.replace("postgresql+psycopg://", "postgresql://")) as conn:
        conn.execute("UPDATE imagen_usage_v3 SET caller = 'someone-else'")
    report = json.loads(sandbox.run("audit", "--json", env=env).stdout)
    kinds = [(p["kind"], p.get("projection")) for p in report["problems"]]
    assert kinds.count(("projection", "usage")) == 2, report["problems"]
