"""Ledger appends: durable single-event appends (one commit each), group-committed appends from
several threads (ledger/group.py) and batched appends per second, beside raw sqlite3 doing the
same commits with the same pragmas (WAL, synchronous=FULL, BEGIN IMMEDIATE); and the same
single appends with `[ledger] durability = "normal"` (synchronous=NORMAL), beside the durable
ledger measured in the same run.

Only the public API is used, so the same file measures any version of the store
(`PYTHONPATH=<checkout> python -m tests.benchmarks ledger`)."""

from __future__ import annotations

import sqlite3
import tempfile
import threading
import uuid
from pathlib import Path

from ledger import NewEvent, open_store
from tests.benchmarks.report import line, timed

SINGLE = 500
BATCHES, BATCH = 40, 100
THREADS, PER_THREAD = 8, 100
DATA = {"request_id": "create-3", "purpose": "create", "status": 201, "elapsed_ms": 312.5}


def _raw(path: Path, synchronous: str = "FULL") -> sqlite3.Connection:
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute(f"PRAGMA synchronous={synchronous}")
    conn.execute(
        "CREATE TABLE events (position INTEGER PRIMARY KEY, event_id TEXT UNIQUE, stream_id TEXT,"
        " stream_version INT, type TEXT, schema_version INT, data TEXT, recorded_at TEXT,"
        " prev_hash TEXT, hash TEXT, UNIQUE (stream_id, stream_version))"
    )
    return conn


def _raw_commits(conn: sqlite3.Connection, commits: int, per_commit: int) -> None:
    pos = 0
    for _ in range(commits):
        conn.execute("BEGIN IMMEDIATE")
        rows = []
        for _ in range(per_commit):
            pos += 1
            rows.append(
                (
                    pos,
                    str(uuid.uuid4()),
                    "job",
                    pos,
                    "ResponseReceived",
                    1,
                    '{"elapsed_ms":312.5}',
                    "2026-11-24T12:00:00.000000Z",
                    "0" * 64,
                    "f" * 64,
                )
            )
        conn.executemany("INSERT INTO events VALUES (?,?,?,?,?,?,?,?,?,?)", rows)
        conn.execute("COMMIT")


def run() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        store = open_store(f"sqlite:///{root / 'ledger.db'}")
        raw = _raw(root / "raw.db")

        ours = timed(
            lambda: [
                store.append("job", [NewEvent("ResponseReceived", DATA)], v) for v in range(SINGLE)
            ]
        )
        base = timed(lambda: _raw_commits(raw, SINGLE, 1))
        line("single durable appends/s", SINGLE / ours, SINGLE / base, "events/s", target=">= 0.5x")

        # Group commit: THREADS threads each appending one event at a time to its own stream;
        # appends arriving together share a transaction and its fsync. Baseline: raw sqlite3
        # committing the same events one per commit (what each append alone would cost; on a
        # disk with cheap fsyncs that is faster than the grouped store, on a slow one slower).
        grouped = open_store(f"sqlite:///{root / 'grouped.db'}")

        def threads() -> None:
            ready = threading.Barrier(THREADS)

            def work(i: int) -> None:
                ready.wait()
                for v in range(PER_THREAD):
                    grouped.append(f"t{i}", [NewEvent("ResponseReceived", DATA)], v)

            running = [threading.Thread(target=work, args=(i,)) for i in range(THREADS)]
            for t in running:
                t.start()
            for t in running:
                t.join()

        n_grouped = THREADS * PER_THREAD
        ours_g = timed(threads)
        commits = grouped.commits.value
        raw.execute("DELETE FROM events")
        base_g = timed(lambda: _raw_commits(raw, n_grouped, 1))
        line(
            f"group-committed appends/s ({THREADS} threads)",
            n_grouped / ours_g,
            n_grouped / base_g,
            "events/s",
            target=f"{commits} commits for {n_grouped} appends",
        )
        grouped.close()

        # The head file beside the ledger (written after every commit) against a store without
        # it, in alternating rounds so that neither side gets the quieter moments of the machine.
        head = open_store(f"sqlite:///{root / 'head.db'}")
        bare = open_store(f"sqlite:///{root / 'bare.db'}")
        bare.head_path = None
        spent = {id(head): 0.0, id(bare): 0.0}
        versions = {id(head): 0, id(bare): 0}
        rounds = 10
        for r in range(rounds):
            for s in (head, bare) if r % 2 == 0 else (bare, head):
                v = versions[id(s)]
                spent[id(s)] += timed(
                    lambda s=s, v=v: [
                        s.append("job", [NewEvent("ResponseReceived", DATA)], v + k)
                        for k in range(SINGLE // rounds)
                    ]
                )
                versions[id(s)] = v + SINGLE // rounds
        head.close()
        bare.close()
        line(
            "single appends/s with the head file",
            SINGLE / spent[id(head)],
            SINGLE / spent[id(bare)],
            "events/s",
            target=">= 0.9x (baseline: the same store without it)",
        )

        def batched() -> None:
            for b in range(BATCHES):
                store.append(
                    f"b{b}",
                    [NewEvent("ResponseReceived", DATA)] * 0
                    + [NewEvent("ResponseReceived", DATA) for _ in range(BATCH)],
                    0,
                )

        raw.execute("DELETE FROM events")
        ours_b = timed(batched)
        base_b = timed(lambda: _raw_commits(raw, BATCHES, BATCH))
        n = BATCHES * BATCH
        line(f"batched appends/s ({BATCH} per commit)", n / ours_b, n / base_b, "events/s")

        normal = open_store(f"sqlite:///{root / 'normal.db'}", durability="normal")
        assert normal.query("PRAGMA synchronous") == [(1,)]  # NORMAL reached it
        ours_n = timed(
            lambda: [
                normal.append("job", [NewEvent("ResponseReceived", DATA)], v) for v in range(SINGLE)
            ]
        )
        line(
            'single appends/s, durability = "normal" (vs "full")',
            SINGLE / ours_n,
            SINGLE / ours,
            "events/s",
        )
        raw_n = _raw(root / "raw-normal.db", "NORMAL")
        base_n = timed(lambda: _raw_commits(raw_n, SINGLE, 1))
        line(
            'single appends/s, durability = "normal" (vs raw sqlite3 NORMAL)',
            SINGLE / ours_n,
            SINGLE / base_n,
            "events/s",
        )
        normal.close()
        raw_n.close()
        store.close()
        raw.close()
