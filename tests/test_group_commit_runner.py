"""Many jobs driven at once by one process, as a batch does (one Runner per thread), with the
ledger's group commit: every request the transport sends is already committed (another
connection reads its RequestSent), every job ends with its image, the chain verifies, and the
appends did share transactions. The Replicate double on 127.0.0.1 answers at once."""

from __future__ import annotations

import sqlite3
import threading
from pathlib import Path
from typing import Any

from imagen.app.runners import new_runner
from imagen.core.inputs import GenerateInputs
from imagen.runner.http import Http, Reply
from ledger import open_store
from tests.support.doubles import TOKEN_ENV, replicate_double
from tests.support.inprocess import environment, prepared

JOBS, WORKERS = 24, 12


class CommittedBeforeSent:
    """The real client; before each send it asks the ledger, through its own read-only
    connection (which sees only committed transactions), whether the request is recorded."""

    def __init__(self, ledger: Path) -> None:
        self.real = Http()
        self.ledger = ledger
        self.lock = threading.Lock()
        self.sent: dict[tuple[str, str], int] = {}
        self.unrecorded: list[tuple[str, str]] = []

    def send(self, method: str, url: str, **kwargs: Any) -> Reply:
        with self.lock:
            key = (method, url)
            self.sent[key] = self.sent.get(key, 0) + 1
            conn = sqlite3.connect(f"file:{self.ledger}?mode=ro", uri=True)
            try:
                (recorded,) = conn.execute(
                    "SELECT count(*) FROM events WHERE type = 'RequestSent' "
                    "AND json_extract(data, '$.method') = ? AND json_extract(data, '$.url') = ?",
                    key,
                ).fetchone()
            finally:
                conn.close()
            if recorded < self.sent[key]:
                self.unrecorded.append(key)
        return self.real.send(method, url, **kwargs)


def test_jobs_driven_at_once_record_each_request_before_sending_it(tmp_path: Path) -> None:
    ledger = tmp_path / "ledger.db"
    store = open_store(f"sqlite:///{ledger}")
    http = CommittedBeforeSent(ledger)
    with replicate_double() as rep:
        envt = environment(dict(TOKEN_ENV))
        todo = [
            prepared(
                tmp_path / "out",
                "replicate",
                {"base_url": rep.url, "model": "black-forest-labs/flux-schnell"},
                GenerateInputs(f"a kite, take {i}", seed=i + 1, size=(256, 256)),
                envt,
            )
            for i in range(JOBS)
        ]
        lock, states, start = threading.Lock(), [], threading.Barrier(WORKERS)

        def worker() -> None:
            start.wait(30)
            while True:
                with lock:
                    if not todo:
                        return
                    job = todo.pop()
                runner = new_runner(store, envt, http=http)
                runner.submit(job.job_id, job.request)
                state = runner.run(job.job_id)
                with lock:
                    states.append(state)

        threads = [threading.Thread(target=worker) for _ in range(WORKERS)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(120)
        billed = rep.billed
    assert http.unrecorded == []
    assert sum(http.sent.values()) == 2 * JOBS  # a create (Prefer: wait) and a download each
    assert len(states) == JOBS and {s.status for s in states} == {"succeeded"}
    assert billed == JOBS
    assert all(s.image is not None and Path(s.image.path).exists() for s in states)
    report = store.verify()
    assert report.ok, report
    assert store.read_head_file() == store.head()
    group = store._group
    assert group is not None and group.grouped > group.groups  # transactions were shared
