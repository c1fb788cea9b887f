"""Usage: `imagen usage sync` of 100,000 rows to the PostgREST double over a real PostgreSQL, and
`imagen usage` grouped over 1,000,000 local rows, each beside a baseline in the same run.

Sync baseline: a plain httpx loop POSTing the same 500-row batches, with the same headers, to the
same double (`on_conflict=id`, ignore-duplicates, return=minimal). The double and PostgreSQL do
the same work for both, so the ratio isolates imagen's own overhead (supabase-py, paging the
SQLite outbox, moving the checkpoint per batch). A psycopg COPY of the same rows is printed too,
as the floor of the database alone.

Grouped baseline: the same GROUP BY in raw sqlite3, in-process and as a `python -c` subprocess
beside the `python -m imagen usage --json` subprocess.

The local tables are filled directly with sqlite3 (projecting 1M jobs from ledger events would
only measure the projection), with the projection checkpoint set to the ledger head so
`catch_up` has nothing to do.
"""

from __future__ import annotations

import json
import os
import random
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from imagen.projections.usage import query as usage_query
from imagen.projections.usage import table as usage_local
from imagen.projections.usage.fold import COLUMNS, LOCAL_COLUMNS, to_remote
from ledger import NewEvent, open_store
from tests.benchmarks.report import line, timed

SYNC_ROWS = int(os.environ.get("IMAGEN_BENCH_USAGE_SYNC", "100000"))
LOCAL_ROWS = int(os.environ.get("IMAGEN_BENCH_USAGE_ROWS", "1000000"))
BATCH = 500
RUNS = 5
ROOT = Path(__file__).resolve().parents[2]
SECRET = "usage-bench-jwt-secret-with-at-least-32-characters"
MODELS = [
    ("flux-schnell-replicate", "black-forest-labs/flux-schnell", 0.003),
    ("flux-dev-replicate", "black-forest-labs/flux-dev", 0.025),
    ("sdxl-replicate", "stability-ai/sdxl", 0.0055),
    ("comfyui-local", "flux1-dev-fp8.safetensors", 0.0),
    ("comfyui-local", "sd_xl_base_1.0.safetensors", 0.0),
    ("echo", "echo", 0.0),
]
CALLERS = [f"agent-{n}" for n in range(19)] + [None]
START = 1_735_689_600  # 2025-01-01T00:00:00Z
YEAR_S = 365 * 86400
_TABLE = usage_local.USAGE.name  # the table version imagen reads now
INSERT = (
    f"INSERT INTO {_TABLE} (seq, id, created_at, backend, model, seed, prompt_hash,"
    " latency_ms, cost_micros, caller, outcome) VALUES (?,?,?,?,?,?,?,?,?,?,?)"
)
GROUP_SQL = (
    "SELECT backend, model, count(*) AS images, sum(cost_micros) AS cost,"
    f" avg(latency_ms) AS mean_latency_ms FROM {_TABLE}"
    " GROUP BY backend, model ORDER BY backend, model"
)


def _rows(n: int, seed: int) -> list[tuple[Any, ...]]:
    """`n` rows in seq order, created_at spread evenly over a year (as a projection writes them)."""
    rnd = random.Random(seed)
    step = YEAR_S / n
    out = []
    for i in range(n):
        backend, model, price = MODELS[rnd.randrange(len(MODELS))]
        at = START + i * step
        created = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(at)) + f".{int(at % 1 * 1e6):06d}Z"
        out.append(
            (
                i + 1,
                f"{rnd.getrandbits(64):016x}",
                created,
                backend,
                model,
                str(rnd.randrange(2**31)),
                f"{rnd.getrandbits(256):064x}",
                rnd.randrange(200, 30_000),
                round(price * 1_000_000),
                CALLERS[rnd.randrange(len(CALLERS))],
                "image",
            )
        )
    return out


def _remote(r: tuple[Any, ...]) -> dict[str, Any]:
    return to_remote(dict(zip(LOCAL_COLUMNS, r[1:], strict=True)))


def _local_store(path: Path, rows: list[tuple[Any, ...]]) -> Any:
    """A ledger with one event, its usage table filled with `rows`, the projection current."""
    store = open_store(f"sqlite:///{path}")
    store.append("bench", [NewEvent("ResponseReceived", {"request_id": "r", "status": 200})], 0)
    store.ensure_projection(usage_local.USAGE, usage_local.CHECKPOINT)
    conn = sqlite3.connect(path)
    conn.execute("PRAGMA synchronous=OFF")
    for at in range(0, len(rows), 100_000):
        conn.executemany(INSERT, rows[at : at + 100_000])
    conn.commit()
    conn.close()
    store.set_checkpoint(usage_local.CHECKPOINT, store.head().position)
    return store


# ------------------------------------------------------------------------------------ sync


def _pg_count(libpq: str) -> int:
    import psycopg

    with psycopg.connect(libpq) as conn:
        row = conn.execute("SELECT count(*) FROM mai.imagen_usage").fetchone()
    return int(row[0]) if row else 0


def _pg_truncate(libpq: str) -> None:
    import psycopg

    with psycopg.connect(libpq, autocommit=True) as conn:
        conn.execute("TRUNCATE mai.imagen_usage")
        conn.execute("VACUUM ANALYZE mai.imagen_usage")


def _httpx_loop(url: str, key: str, batches: list[list[dict[str, Any]]]) -> None:
    import httpx

    headers = {
        "apikey": key,
        "Authorization": f"Bearer {key}",
        "Content-Type": "application/json",
        "Content-Profile": "mai",
        "Prefer": "resolution=ignore-duplicates,return=minimal",
    }
    with httpx.Client(base_url=f"{url}/rest/v1", headers=headers, timeout=30.0) as http:
        for batch in batches:
            r = http.post("/imagen_usage", params={"on_conflict": "id"}, content=json.dumps(batch))
            r.raise_for_status()


def _copy(libpq: str, rows: list[tuple[Any, ...]]) -> None:
    import psycopg

    cols = ", ".join(COLUMNS)
    with psycopg.connect(libpq) as conn, conn.cursor() as cur:
        with cur.copy(f"COPY mai.imagen_usage ({cols}) FROM STDIN") as copy:
            for r in rows:
                copy.write_row(list(_remote(r).values()))


def bench_sync(tmp: Path) -> None:
    import alembic.command
    from sqlalchemy import create_engine

    from imagen.app import usage_sync as usage_remote
    from imagen.app.config import parse_config
    from imagen.runner.environment import Environment
    from imagen.testing.postgres import PostgresCluster, PostgresUnavailable
    from imagen.testing.postgrest import PostgrestDouble, ensure_supabase_roles, make_jwt
    from ledger.migrate import alembic_config

    try:
        cluster = PostgresCluster().start()
    except PostgresUnavailable as exc:
        print(f"sync: skipped ({exc})")
        return
    try:
        url = cluster.create_database()
        libpq = url.replace("postgresql+psycopg://", "postgresql://")
        ensure_supabase_roles(url)
        engine = create_engine(url)
        with engine.connect() as conn, conn.begin():
            alembic.command.upgrade(alembic_config(conn, "usage"), "usage@head")
        engine.dispose()

        rows = _rows(SYNC_ROWS, seed=1)
        store = _local_store(tmp / "sync.db", rows)
        key = make_jwt(SECRET, "service_role")
        env = Environment(env={"SUPABASE_SERVICE_ROLE_KEY": key})
        with PostgrestDouble(url, SECRET) as double:
            cfg = parse_config({"usage": {"supabase_url": double.url}}, "bench", env.env)
            result: list[Any] = []
            ours = timed(lambda: result.append(usage_remote.sync(store, cfg, env, timeout_s=30)))
            [res] = result
            remote = _pg_count(libpq)
            assert res.sent == SYNC_ROWS and res.pending == 0, res
            assert remote == SYNC_ROWS, f"{remote} rows in PostgreSQL, expected {SYNC_ROWS}"
            print(
                f"sync: sent {res.sent:,} rows in {res.batches} batches; "
                f"{remote:,} rows in mai.imagen_usage",
                flush=True,
            )

            _pg_truncate(libpq)
            payload = [_remote(r) for r in rows]
            batches = [payload[at : at + BATCH] for at in range(0, len(payload), BATCH)]
            base = timed(lambda: _httpx_loop(double.url, key, batches))
            assert _pg_count(libpq) == SYNC_ROWS
        line(
            f"usage sync {SYNC_ROWS:,} rows (s; vs httpx loop)",
            ours,
            base,
            "s",
            higher_is_better=False,
            target="<= 10 s",
        )
        _pg_truncate(libpq)
        copy = timed(lambda: _copy(libpq, rows))
        assert _pg_count(libpq) == SYNC_ROWS
        line(
            f"usage sync {SYNC_ROWS:,} rows (s; vs psycopg COPY)",
            ours,
            copy,
            "s",
            higher_is_better=False,
        )
        store.close()
    finally:
        cluster.stop()


# --------------------------------------------------------------------------------- grouped


def _wall(argv: list[str], env: dict[str, str]) -> tuple[float, str]:
    times, out = [], ""
    for _ in range(RUNS):
        t = time.perf_counter()
        done = subprocess.run(argv, env=env, check=True, capture_output=True, text=True)
        times.append(time.perf_counter() - t)
        out = done.stdout
    return statistics.median(times), out


def _median(fn: Any) -> float:
    return statistics.median(timed(fn) for _ in range(RUNS))


def bench_grouped(tmp: Path) -> None:
    db = tmp / "usage.db"
    t = time.perf_counter()
    store = _local_store(db, _rows(LOCAL_ROWS, seed=2))
    print(f"built {LOCAL_ROWS:,} local usage rows in {time.perf_counter() - t:.1f}s", flush=True)

    raw = sqlite3.connect(db)
    expected = [list(r) for r in raw.execute(GROUP_SQL)]
    assert sum(r[2] for r in expected) == LOCAL_ROWS

    got: list[Any] = []
    ours = _median(lambda: got.append(usage_query.grouped(store, ["backend", "model"])))
    base = _median(lambda: raw.execute(GROUP_SQL).fetchall())
    assert [
        [r["backend"], r["model"], r["images"], round(float(r["cost_usd"]) * 1e6)] for r in got[-1]
    ] == [r[:4] for r in expected]
    line(
        f"usage_query.grouped over {LOCAL_ROWS:,} rows (s)",
        ours,
        base,
        "s",
        higher_is_better=False,
        target="<= 1 s",
    )
    raw.close()
    store.close()

    config = tmp / "config.toml"
    config.write_text("")
    env = {
        **os.environ,
        "IMAGEN_LEDGER_URL": f"sqlite:///{db}",
        "IMAGEN_CONFIG": str(config),
        "PYTHONPATH": str(ROOT),
        "XDG_CONFIG_HOME": str(tmp),
    }
    imagen = [sys.executable, "-m", "imagen", "usage", "--json"]
    script = (
        "import json,sqlite3,sys; c=sqlite3.connect(sys.argv[1]); "
        "print(json.dumps(c.execute(sys.argv[2]).fetchall()))"
    )
    rawcli = [sys.executable, "-c", script, str(db), GROUP_SQL]
    subprocess.run(imagen, env=env, check=True, capture_output=True)  # warm the page cache
    ours, out = _wall(imagen, env)
    base, _ = _wall(rawcli, env)
    assert [
        [r["backend"], r["model"], r["images"], round(float(r["cost_usd"]) * 1e6)]
        for r in json.loads(out)
    ] == [r[:4] for r in expected]
    line(
        f"imagen usage --json, {LOCAL_ROWS:,} rows (wall, s)",
        ours,
        base,
        "s",
        higher_is_better=False,
        target="<= 1 s",
    )
    start = _wall([sys.executable, "-c", "pass"], env)[0]
    print(f"(python start-up alone: {start:.3f} s)", flush=True)


def run() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        bench_sync(Path(tmp))
        bench_grouped(Path(tmp))
