"""Usage: the local projection, the Supabase sync through supabase-py to the PostgREST double
over a real PostgreSQL, and the alembic usage branch."""

from __future__ import annotations

import hashlib
import json
import socket
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psycopg
import pytest
from freezegun import freeze_time
from sqlalchemy import create_engine

from imagen.core.times import parse_moment
from imagen.testing.postgres import create_database
from imagen.testing.postgrest import PostgrestDouble, ensure_supabase_roles, make_jwt
from tests.support.cli import Sandbox
from tests.support.echo import ECHO_CLI, EchoServer

SECRET = "usage-tests-jwt-secret-with-at-least-32-characters"
SERVICE = make_jwt(SECRET, "service_role")
PROMPT = "a secret prompt about a fox"


def _libpq(url: str) -> str:
    return url.replace("postgresql+psycopg://", "postgresql://")


@pytest.fixture
def usage_db(pg_server_url: str, tmp_path: Path) -> str:
    url = create_database(pg_server_url)
    ensure_supabase_roles(url)
    box = Sandbox(tmp_path / "migrate")
    (tmp_path / "migrate").mkdir()
    box.write_config("")
    result = box.run("db", "upgrade", "usage", "--url", url)
    assert result.returncode == 0, result.stderr
    return url


@pytest.fixture
def supa(usage_db: str) -> Iterator[PostgrestDouble]:
    with PostgrestDouble(usage_db, SECRET) as double:
        yield double


def _usage_sandbox(
    tmp_path: Path, echo: EchoServer, supabase_url: str, key: str = SERVICE
) -> Sandbox:
    box = Sandbox(
        tmp_path / "box",
        env={
            "ECHO_TOKEN": "echo-token-for-usage",
            "SUPABASE_SERVICE_ROLE_KEY": key,
            "MAI_FROM_ID": "agent-7",
        },
        entry=ECHO_CLI,
    )
    (tmp_path / "box").mkdir(parents=True)
    box.write_config(f"""
default_backend = "echo"
[backends.echo]
type = "echo"
url = "{echo.url}"
token_env = "ECHO_TOKEN"
price_usd = 0.003
[output]
directory = "{tmp_path / "out"}"
[usage]
supabase_url = "{supabase_url}"
""")
    return box


def _remote_rows(url: str) -> list[tuple]:
    with psycopg.connect(_libpq(url)) as conn:
        return conn.execute(
            "SELECT id, backend, model, seed, prompt_hash, latency_ms, "
            "cost_usd_estimate, caller FROM mai.imagen_usage ORDER BY id"
        ).fetchall()


def _posts(double: PostgrestDouble) -> int:
    return sum(1 for m, p in double.requests if m == "POST" and "imagen_usage" in p)


def test_a_generated_image_lands_once_with_only_the_prompt_hash(
    tmp_path: Path, echo_server: EchoServer, supa: PostgrestDouble, usage_db: str
) -> None:
    box = _usage_sandbox(tmp_path, echo_server, supa.url)
    result = box.run("generate", PROMPT, "--seed", "11")
    assert result.returncode == 0, result.stderr
    assert "warning" not in result.stderr
    [job_id] = box.job_ids()
    [row] = _remote_rows(usage_db)
    assert row[0] == job_id and row[1] == "echo" and row[3] == 11 and row[7] == "agent-7"
    assert row[4] == hashlib.sha256(PROMPT.encode()).hexdigest()
    assert float(row[6]) == 0.003
    with psycopg.connect(_libpq(usage_db)) as conn:
        dump = json.dumps(conn.execute("SELECT row_to_json(u) FROM mai.imagen_usage u").fetchall())
        heads = conn.execute("SELECT position, hash FROM mai.imagen_ledger_heads").fetchall()
    assert "fox" not in dump
    assert heads and heads[0][0] == len(box.events())
    posts = _posts(supa)
    again = box.run("usage", "sync", "--json")
    assert again.returncode == 0, again.stderr
    assert json.loads(again.stdout)["sent"] == 0
    assert _posts(supa) == posts  # nothing sent twice
    local = json.loads(box.run("usage", "--json").stdout)
    sidecar = json.loads(Path(f"{result.stdout.strip()}.json").read_text())
    assert local == [
        {
            "backend": "echo",
            "model": "echo",
            "images": 1,
            "paid_failed": 0,
            "cost_usd": "0.003000",
            # One job: its latency as the sidecar and the remote row recorded it.
            "mean_latency_ms": sidecar["latency_ms"],
        }
    ]
    assert sidecar["latency_ms"] > 0 and row[5] == sidecar["latency_ms"]
    remote = json.loads(box.run("usage", "--source", "remote", "--by", "caller", "--json").stdout)
    assert remote[0]["caller"] == "agent-7" and remote[0]["images"] == 1
    assert box.run("audit", "--remote").returncode == 0


def test_supabase_down_during_generate_is_a_warning_then_synced(
    tmp_path: Path, echo_server: EchoServer, usage_db: str
) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    # Nothing listens on `port` yet: Supabase is down while the image is generated.
    box = _usage_sandbox(tmp_path, echo_server, f"http://127.0.0.1:{port}")
    result = box.run("generate", PROMPT)
    assert result.returncode == 0, result.stderr
    assert Path(result.stdout.strip()).exists()
    warnings = [line for line in result.stderr.splitlines() if "warning" in line]
    assert len(warnings) == 1 and "cannot reach Supabase" in warnings[0]
    assert _remote_rows(usage_db) == []
    with PostgrestDouble(usage_db, SECRET, port=port):
        synced = box.run("usage", "sync")
        assert synced.returncode == 0, synced.stderr
        assert "sent 1 row" in synced.stdout
    assert len(_remote_rows(usage_db)) == 1


def test_bad_key_and_unexposed_schema_name_the_fix(
    tmp_path: Path, echo_server: EchoServer, usage_db: str
) -> None:
    with PostgrestDouble(usage_db, SECRET) as supa:
        box = _usage_sandbox(
            tmp_path, echo_server, supa.url, key=make_jwt("wrong-secret-" * 4, "service_role")
        )
        assert box.run("generate", PROMPT).returncode == 0
        bad = box.run("usage", "sync")
        assert bad.returncode == 3
        assert "SUPABASE_SERVICE_ROLE_KEY" in bad.stderr
    with PostgrestDouble(usage_db, SECRET, schemas=("public",)) as hidden:
        box2 = _usage_sandbox(tmp_path / "2", echo_server, hidden.url)
        assert box2.run("generate", PROMPT).returncode == 0
        result = box2.run("usage", "sync")
        assert result.returncode == 3 and "does not expose schema mai" in result.stderr


def test_usage_migration_runs_down_and_up(usage_db: str) -> None:
    from alembic import command
    from ledger.migrate import alembic_config

    engine = create_engine(usage_db)
    with engine.connect() as conn, conn.begin():
        command.downgrade(alembic_config(conn, "usage"), "usage@base")
    with psycopg.connect(_libpq(usage_db)) as conn:
        assert conn.execute("SELECT to_regclass('mai.imagen_usage')").fetchone() == (None,)
    with engine.connect() as conn, conn.begin():
        command.upgrade(alembic_config(conn, "usage"), "usage@head")
    with psycopg.connect(_libpq(usage_db)) as conn:
        grants = conn.execute(
            "SELECT privilege_type FROM information_schema.role_table_grants "
            "WHERE table_schema='mai' AND table_name='imagen_usage' "
            "AND grantee='service_role'"
        ).fetchall()
        rls = conn.execute(
            "SELECT relrowsecurity FROM pg_class WHERE oid='mai.imagen_usage'::regclass"
        ).fetchone()
    assert {"INSERT", "SELECT"} <= {g[0] for g in grants} and rls == (True,)
    engine.dispose()


@freeze_time("2026-11-24T12:00:00Z")
def test_relative_since_is_measured_from_now() -> None:
    now = datetime.now(UTC)
    assert parse_moment("7d", now, UTC) == datetime(2026, 11, 17, 12, tzinfo=UTC)
    assert parse_moment("24h", now, UTC) == datetime(2026, 11, 23, 12, tzinfo=UTC)
    assert parse_moment("2026-11-20", now, UTC) == datetime(2026, 11, 20, tzinfo=UTC)


def test_since_and_until_boundaries(tmp_path: Path) -> None:
    from imagen.core.events import ImageStored, JobRequested, JobSucceeded
    from imagen.projections.usage import query as usage_query
    from imagen.projections.usage import table as usage_local
    from ledger import NewEvent, open_store

    now = {"t": datetime(2026, 11, 19, tzinfo=UTC)}
    store = open_store(f"sqlite:///{tmp_path / 'l.db'}", clock=lambda: now["t"])
    for i, day in enumerate((19, 20, 21)):
        now["t"] = datetime(2026, 11, day, tzinfo=UTC)  # exactly on the boundary
        events = [
            JobRequested("b", "echo", "m", f"p{i}", {"seed": i}, {}, "/x", price_usd=0.01),
            ImageStored("/x", "0" * 64, 1, "png", 1, 1),
            JobSucceeded({}),
        ]
        store.append(f"j{i}", [NewEvent(e.type_name(), e.to_data()) for e in events], 0)
    usage_local.catch_up(store)
    rows = usage_query.rows(
        store, since="2026-11-20T00:00:00.000000Z", until="2026-11-21T00:00:00.000000Z"
    )
    assert [r["id"] for r in rows] == ["j1"]  # since is inclusive, until exclusive
    rows = usage_query.rows(store, since="2026-11-20T00:00:00.000000Z")
    assert sorted(r["id"] for r in rows) == ["j1", "j2"]


def test_plain_alembic_upgrade_uses_the_url_from_the_environment(pg_server_url: str) -> None:
    import subprocess
    import sys

    from tests.support.cli import ROOT

    url = create_database(pg_server_url)
    ensure_supabase_roles(url)
    env = {
        "PATH": "/usr/bin:/bin",
        "PYTHONPATH": str(ROOT),
        "IMAGEN_USAGE_DATABASE_URL": url,
        "IMAGEN_CONFIG": "",
        "HOME": str(ROOT),
    }
    result = subprocess.run(
        [sys.executable, "-m", "alembic", "-c", str(ROOT / "alembic.ini"), "upgrade", "usage@head"],
        capture_output=True,
        text=True,
        env=env,
        cwd=ROOT,
    )
    assert result.returncode == 0, result.stderr
    with psycopg.connect(_libpq(url)) as conn:
        assert conn.execute("SELECT version_num FROM imagen_usage_alembic_version").fetchone() == (
            "usage_0003",
        )


def test_missing_table_names_the_migration(
    pg_server_url: str, tmp_path: Path, echo_server: EchoServer
) -> None:
    url = create_database(pg_server_url)
    ensure_supabase_roles(url)
    with psycopg.connect(_libpq(url), autocommit=True) as conn:
        conn.execute("CREATE SCHEMA mai")
    with PostgrestDouble(url, SECRET) as supa:
        box = _usage_sandbox(tmp_path, echo_server, supa.url)
        assert box.run("generate", PROMPT).returncode == 0
        result = box.run("usage", "sync")
        assert result.returncode == 3 and "imagen db upgrade usage" in result.stderr


def test_remote_usage_reads_page_past_the_1000_row_cap(
    tmp_path: Path, echo_server: EchoServer, supa: PostgrestDouble, usage_db: str
) -> None:
    box = _usage_sandbox(tmp_path, echo_server, supa.url)
    assert box.run("generate", PROMPT).returncode == 0
    with psycopg.connect(_libpq(usage_db), autocommit=True) as conn:
        conn.execute(
            "INSERT INTO mai.imagen_usage SELECT 'bulk-' || i, now() - i * interval '1 minute', "
            "'echo', 'echo', i, repeat('0', 64), 10, 0.001, 'bulk' FROM generate_series(1, 1500) i"
        )
    remote = json.loads(box.run("usage", "--source", "remote", "--by", "caller", "--json").stdout)
    assert {r["caller"]: r["images"] for r in remote} == {"agent-7": 1, "bulk": 1500}
    raw = json.loads(box.run("usage", "--source", "remote", "--raw", "--json").stdout)
    assert len(raw) == 1501 and len({r["id"] for r in raw}) == 1501


def test_by_day_groups_by_local_calendar_day(tmp_path: Path) -> None:
    """Days begin at local midnight: 23:30 UTC is already tomorrow in Paris (UTC+1)."""
    from imagen.core.events import (
        ImageStored,
        JobFailed,
        JobRequested,
        JobSucceeded,
        RemoteJobAccepted,
    )
    from imagen.core.failures import Failure
    from ledger import NewEvent, open_store

    box = Sandbox(tmp_path, env={"TZ": "Europe/Paris"})
    box.write_config(f'[output]\ndirectory = "{tmp_path / "out"}"\n')
    now = {"t": datetime(2026, 11, 24, tzinfo=UTC)}
    store = open_store(box.ledger_url, clock=lambda: now["t"])
    at = [(22, 59, "a", True), (23, 0, "b", True), (23, 30, "a", False), (1, 0, "a", True)]
    for i, (hour, minute, caller, ok) in enumerate(at):
        day = 25 if hour < 12 else 24
        now["t"] = datetime(2026, 11, day, hour, minute, tzinfo=UTC)
        events: list[Any] = [
            JobRequested(
                "b", "echo", "m", f"p{i}", {"seed": i}, {}, "/x", caller=caller, price_usd=0.01
            )
        ]
        if ok:
            events += [ImageStored("/x", "0" * 64, 1, "png", 1, 1), JobSucceeded({})]
        else:
            events += [RemoteJobAccepted("r"), JobFailed("x", "x", Failure.GENERATION_FAILED)]
        store.append(f"j{i}", [NewEvent(e.type_name(), e.to_data()) for e in events], 0)
    store.close()
    result = box.run("usage", "--by", "day", "--json")
    assert result.returncode == 0, result.stderr
    days = json.loads(result.stdout)
    assert [(d["day"], d["images"], d["paid_failed"], d["cost_usd"]) for d in days] == [
        ("2026-11-24", 1, 0, "0.010000"),  # 22:59 UTC = 23:59 in Paris
        ("2026-11-25", 2, 1, "0.030000"),
    ]
    result = box.run("usage", "--by", "day", "--by", "caller", "--since", "2026-11-25")
    assert result.returncode == 0, result.stderr
    lines = [line.split("\t") for line in result.stdout.splitlines()]
    assert lines[0][:4] == ["day", "caller", "images", "paid_failed"]
    assert [line[:4] for line in lines[1:]] == [
        ["2026-11-25", "a", "1", "1"],
        ["2026-11-25", "b", "1", "0"],
    ]
