"""An audit in two processes (`imagen.app.audit._scan_in_halves`) gives exactly the one-pass
audit's verdict: the same report, findings (in the same order), images checked, newer-imagen
notes and folders, whatever the ledger holds where it is cut in two — jobs open across the
middle, jobs settled early and resumed, events after a job's end on the other side, a budget
stream continued after the middle, missing and modified files, cached rows edited, missing or
extra, and a chain broken in either half."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import pickle
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from imagen.app.audit import Scan
from imagen.projections import spend
from imagen.projections.jobs import table as jobs_table
from imagen.projections.usage import table as usage_table
from ledger import NewEvent, open_store
from tests.benchmarks.bench_jobs import _job_events
from tests.support.cli import Sandbox

ROOT = Path(__file__).resolve().parents[1]


def _ledger(tmp_path: Path) -> Path:
    """Jobs in turns of five at once (each event in turn), so several are open wherever the
    chain is cut; their images written where the chain says, but for a few."""
    path = tmp_path / "ledger.db"
    store = open_store(f"sqlite:///{path}", durability="normal")
    out = tmp_path / "out"
    out.mkdir()
    budgets = 0
    for first in range(0, 30, 5):
        streams = {}
        for i in range(first, first + 5):
            events = []
            for type_name, data in _job_events(i):
                if type_name == "JobRequested":
                    data = {**data, "output_path": str(out / f"img{i}.png")}
                if type_name == "ImageStored":
                    data = {**data, "path": str(out / f"img{i}.png")}
                    image = f"image {i}".encode()
                    data["sha256"] = hashlib.sha256(image).hexdigest()
                    if i not in (3, 17):  # missing
                        (out / f"img{i}.png").write_bytes(image if i != 21 else b"edited")
                        side = {
                            "job_id": f"job{i:03d}",
                            "image": {k: data[k] for k in ("path", "sha256")},
                        }
                        (out / f"img{i}.png.json").write_text(json.dumps(side))
                events.append((type_name, data))
            streams[f"job{i:03d}"] = events
        for step in range(max(len(e) for e in streams.values())):
            for jid, events in streams.items():
                if step < len(events):
                    store.append(jid, [NewEvent(*events[step])], None)
        budgets += 1
        store.append("$budgets", [NewEvent("BudgetSet", {"caller": f"c{first}"})], None)
    # A late answer to an early job, after the middle: the job is the second half's.
    store.append("job001", [NewEvent(*_job_events(1)[3])], None)
    for module in (jobs_table, usage_table, spend):
        module.catch_up(store)
    store.close()
    return path


# Run in a fresh interpreter: audit forks only a process with no other thread (a test
# runner's worker has some), as `imagen audit` is.
SCANS = """
import pickle, sys
from imagen.app.audit import scan
from ledger import open_store
path, limit, out = sys.argv[1], int(sys.argv[2]), sys.argv[3]
store = open_store(f"sqlite:///{path}", create=False)
found = [
    scan(store, store.head(), compare={"jobs", "usage", "spend"}, open_limit=limit,
         parallel_from=parallel_from)
    for parallel_from in (10**12, 0)
]
store.close()
with open(out, "wb") as fh:
    pickle.dump(found, fh)
"""


def _same(path: Path, open_limit: int = 2000) -> tuple[Scan, Scan]:
    out = path.with_suffix(".scans")
    done = subprocess.run(
        [sys.executable, "-c", SCANS, str(path), str(open_limit), str(out)],
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    one, two = pickle.loads(out.read_bytes())
    assert two.report == one.report
    assert two.problems == one.problems
    assert (two.images_checked, two.newer, two.folders) == (
        one.images_checked,
        one.newer,
        one.folders,
    )
    assert not one.halves
    return one, two


def _sql(path: Path, *statements: str) -> None:
    with contextlib.closing(sqlite3.connect(path)) as db, db:  # (committed, then closed)
        for statement in statements:
            db.execute(statement)


@pytest.mark.parametrize("open_limit", [2000, 2])
def test_two_halves_find_what_one_pass_finds(tmp_path: Path, open_limit: int) -> None:
    path = _ledger(tmp_path)
    clean, two = _same(path, open_limit)
    assert clean.report.ok and two.halves
    kinds = sorted(p["kind"] for p in clean.problems)
    # Two images missing, one modified; job001's late answer is an event after its end.
    assert kinds == ["image_missing", "image_missing", "image_modified", "invariant"], kinds
    assert clean.images_checked == 30

    _sql(
        path,
        "UPDATE imagen_jobs_v5 SET caller = 'x' WHERE job_id = 'job002'",
        "DELETE FROM imagen_usage_v3 WHERE id = 'job028'",
        "UPDATE imagen_spend_v1 SET spent_micros = 1 WHERE job_id = 'job014'",
        "INSERT INTO imagen_jobs_v5 (job_id, created_at, status) VALUES ('ghost', 'x', 'x')",
    )
    edited, two = _same(path, open_limit)
    assert two.halves
    found = sorted(
        (p.get("projection", "jobs"), p.get("job_id") or p.get("row"))
        for p in edited.problems
        if p["kind"] == "projection"
    )
    assert found == [
        ("jobs", "ghost"),
        ("jobs", "job002"),
        ("spend", "job014"),
        ("usage", "job028"),
    ], edited.problems


@pytest.mark.parametrize("where", [0.25, 0.75])
def test_a_chain_broken_in_either_half_is_the_one_pass_verdict(
    tmp_path: Path, where: float
) -> None:
    path = _ledger(tmp_path)
    store = open_store(f"sqlite:///{path}", create=False)
    at = int(store.head().position * where)
    store.close()
    _sql(
        path,
        "DROP TRIGGER events_no_update",
        f"UPDATE events SET data = '{{\"forged\": 1}}' WHERE position = {at}",
    )
    broken, two = _same(path)
    assert broken.report.first_broken == at and not two.halves  # audited again in one pass


def test_imagen_audit_in_two_processes_says_what_it_says_in_one(sandbox: Sandbox) -> None:
    for prompt in ("a fox", "a cat", "an owl"):
        assert sandbox.run("generate", prompt).returncode == 0
    one = sandbox.run("audit", "--json", env={"IMAGEN_AUDIT_PARALLEL_FROM": "1000000"})
    two = sandbox.run("audit", "--json", env={"IMAGEN_AUDIT_PARALLEL_FROM": "0"})
    assert one.returncode == two.returncode == 0, two.stderr
    assert json.loads(one.stdout) == json.loads(two.stdout)
    bad = sandbox.run("audit", env={"IMAGEN_AUDIT_PARALLEL_FROM": "lots"})
    assert bad.returncode == 2 and bad.stdout == ""
    assert bad.stderr.strip().splitlines() == [
        "imagen: error: IMAGEN_AUDIT_PARALLEL_FROM='lots': give a number of events, e.g. 200000"
    ]
