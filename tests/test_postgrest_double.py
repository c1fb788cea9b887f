"""The PostgREST double, driven by the real supabase client against a real PostgreSQL."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import httpx
import psycopg
import pytest
from postgrest import APIError
from supabase import Client, ClientOptions, create_client

from imagen.testing.postgres import create_database
from imagen.testing.postgrest import PostgrestDouble, ensure_supabase_roles, make_jwt

pytestmark = pytest.mark.postgres

# Generous: on a loaded machine (load ~20) an answer that takes 1.5 s alone took over 10 s; a
# verdict must not depend on the machine's speed, only a hang should time out.
IO_TIMEOUT_S = 120.0
SECRET = "super-secret-jwt-token-with-at-least-32-characters-long"
SERVICE = make_jwt(SECRET, "service_role")
ANON = make_jwt(SECRET, "anon")
T0 = datetime(2025, 1, 2, 3, 4, 5, 123000, tzinfo=UTC)


@pytest.fixture(scope="module")
def server_url(pg_server_url: str) -> str:
    """The session's PostgreSQL (conftest: IMAGEN_TEST_DATABASE_URL or a throwaway cluster)."""
    return pg_server_url


def _libpq(url: str) -> str:
    return url.replace("postgresql+psycopg://", "postgresql://")


@pytest.fixture(scope="module")
def db_url(server_url: str) -> str:
    """A database shaped like a Supabase project: mai.items, granted to service_role only, RLS on."""
    url = create_database(server_url)
    ensure_supabase_roles(url)
    with psycopg.connect(_libpq(url), autocommit=True) as conn:
        conn.execute("CREATE SCHEMA mai")
        conn.execute("GRANT USAGE ON SCHEMA mai TO anon, authenticated, service_role")
        conn.execute(
            "CREATE TABLE mai.items (id text PRIMARY KEY, created_at timestamptz, "
            "caller text, n int, cost numeric)"
        )
        conn.execute("GRANT ALL ON mai.items TO service_role")
        conn.execute("ALTER TABLE mai.items ENABLE ROW LEVEL SECURITY")
        conn.execute(
            "CREATE TABLE mai.notes (id serial PRIMARY KEY, body text NOT NULL, "
            "tag text DEFAULT 'plain')"
        )
        conn.execute("GRANT ALL ON mai.notes, mai.notes_id_seq TO service_role")
    return url


@pytest.fixture(scope="module")
def api(db_url: str) -> Iterator[PostgrestDouble]:
    with PostgrestDouble(db_url, SECRET) as double:
        yield double


@pytest.fixture
def db(db_url: str) -> Iterator[psycopg.Connection[Any]]:
    """A superuser connection; the tables start empty for every test."""
    with psycopg.connect(_libpq(db_url), autocommit=True) as conn:
        conn.execute("TRUNCATE mai.items, mai.notes RESTART IDENTITY")
        yield conn


@pytest.fixture
def connect() -> Iterator[Callable[..., Client]]:
    """supabase clients on our own httpx.Client (no DeprecationWarnings; closed afterwards)."""
    opened: list[httpx.Client] = []

    def make(url: str, key: str = SERVICE, schema: str = "mai") -> Client:
        http = httpx.Client(timeout=httpx.Timeout(IO_TIMEOUT_S))
        opened.append(http)
        options = ClientOptions(schema=schema, httpx_client=http, postgrest_client_retry=False)
        return create_client(url, key, options)

    yield make
    for http in opened:
        http.close()


@pytest.fixture
def raw(api: PostgrestDouble) -> Iterator[httpx.Client]:
    """Plain httpx for checking statuses and headers the client hides."""
    headers = {"apikey": SERVICE, "Authorization": f"Bearer {SERVICE}", "Accept-Profile": "mai",
               "Content-Profile": "mai"}  # fmt: skip
    with httpx.Client(
        base_url=f"{api.url}/rest/v1", headers=headers, timeout=IO_TIMEOUT_S
    ) as client:
        yield client


def rows(count: int, start: int = 0, n: int = 1) -> list[dict[str, Any]]:
    return [
        {
            "id": f"r{i:05d}",
            "created_at": (T0 + timedelta(minutes=i)).isoformat(),
            "caller": "cli" if i % 2 else "bot",
            "n": n,
            "cost": 0.25,
        }
        for i in range(start, start + count)
    ]


def test_upsert_ignore_duplicates_inserts_once(
    api: PostgrestDouble, db: psycopg.Connection[Any], connect: Callable[..., Client]
) -> None:
    table = connect(api.url).table("items")
    batch = rows(3)
    first = table.upsert(batch, on_conflict="id", ignore_duplicates=True).execute()
    assert sorted(r["id"] for r in first.data) == ["r00000", "r00001", "r00002"]
    assert first.data[0]["created_at"].endswith("+00:00")
    assert isinstance(first.data[0]["cost"], float) and first.data[0]["cost"] == 0.25

    second = table.upsert(batch, on_conflict="id", ignore_duplicates=True).execute()
    assert second.data == []  # only newly inserted rows are returned
    assert db.execute("SELECT count(*) FROM mai.items").fetchone() == (3,)
    method, path = api.requests[-1]
    assert method == "POST" and path.startswith("/rest/v1/items?") and "on_conflict=id" in path


def test_upsert_status_and_headers(
    api: PostgrestDouble, db: psycopg.Connection[Any], raw: httpx.Client
) -> None:
    prefer = {"Prefer": "return=minimal,resolution=ignore-duplicates,count=exact"}
    first = raw.post("/items", params={"on_conflict": "id"}, json=rows(2), headers=prefer)
    assert first.status_code == 201 and first.content == b""
    assert first.headers["Content-Range"] == "*/2"
    assert first.headers["Content-Length"] == "0"
    assert first.headers["Preference-Applied"] == (
        "resolution=ignore-duplicates, return=minimal, count=exact"
    )
    again = raw.post("/items", params={"on_conflict": "id"}, json=rows(2), headers=prefer)
    assert (again.status_code, again.headers["Content-Range"]) == (201, "*/0")

    merge = {"Prefer": "return=representation,resolution=merge-duplicates"}
    updated = raw.post("/items", json=rows(2, n=7), headers=merge)
    assert updated.status_code == 200  # merge-duplicates with nothing new: 200, not 201
    assert updated.headers["Content-Type"] == "application/json; charset=utf-8"
    assert updated.headers["Content-Profile"] == "mai"
    assert [r["n"] for r in updated.json()] == [7, 7]
    assert updated.headers["Content-Range"] == "*/*"
    mixed = raw.post("/items", json=rows(3, n=8), headers=merge)
    assert mixed.status_code == 201 and len(mixed.json()) == 3


def test_merge_duplicates_updates(
    api: PostgrestDouble, db: psycopg.Connection[Any], connect: Callable[..., Client]
) -> None:
    table = connect(api.url).table("items")
    table.upsert(rows(2)).execute()
    changed = rows(2, n=5)
    changed[0]["caller"] = "changed"
    result = table.upsert(changed, on_conflict="id").execute()
    assert {r["n"] for r in result.data} == {5}
    got = db.execute("SELECT id, caller, n, cost FROM mai.items ORDER BY id").fetchall()
    assert got == [("r00000", "changed", 5, Decimal("0.25")), ("r00001", "cli", 5, Decimal("0.25"))]


def test_anon_gets_permission_error(
    api: PostgrestDouble,
    db: psycopg.Connection[Any],
    connect: Callable[..., Client],
    raw: httpx.Client,
) -> None:
    with pytest.raises(APIError) as caught:
        connect(api.url, ANON).table("items").upsert(rows(1), ignore_duplicates=True).execute()
    assert caught.value.code == "42501"
    assert caught.value.message == "permission denied for table items"

    anon = {"apikey": ANON, "Authorization": f"Bearer {ANON}"}
    response = raw.get("/items", headers=anon)
    assert response.status_code == 401  # 42501 as the anon role
    assert response.headers["WWW-Authenticate"] == "Bearer"
    assert response.json() == {"code": "42501", "details": None, "hint": None,
                               "message": "permission denied for table items"}  # fmt: skip
    user = make_jwt(SECRET, "authenticated")
    forbidden = raw.get("/items", headers={"apikey": ANON, "Authorization": f"Bearer {user}"})
    assert forbidden.status_code == 403  # 42501 as any other role
    assert forbidden.headers["Proxy-Status"] == "PostgREST; error=42501"


def test_rls_applies_to_non_bypass_roles(
    api: PostgrestDouble, db: psycopg.Connection[Any], raw: httpx.Client
) -> None:
    db.execute("GRANT SELECT, INSERT ON mai.items TO authenticated")
    try:
        raw.post("/items", json=rows(2))
        user = make_jwt(SECRET, "authenticated")
        as_user = {"Authorization": f"Bearer {user}"}
        assert raw.get("/items", headers=as_user).json() == []  # RLS, no policy: silently empty
        denied = raw.post("/items", json=rows(1, start=9), headers=as_user)
        assert denied.status_code == 403
        assert (
            denied.json()["message"]
            == 'new row violates row-level security policy for table "items"'
        )
    finally:
        db.execute("REVOKE SELECT, INSERT ON mai.items FROM authenticated")


def test_bad_signature_and_expired_tokens(
    api: PostgrestDouble, connect: Callable[..., Client], raw: httpx.Client
) -> None:
    forged = make_jwt("not-the-secret-" * 3, "service_role")
    with pytest.raises(APIError) as caught:
        connect(api.url, forged).table("items").select("*").execute()
    assert caught.value.message == "Invalid API key"  # the gateway's shape: no code
    assert api.requests[-1][0] == "GET"

    bad_bearer = raw.get("/items", headers={"Authorization": f"Bearer {forged}"})
    assert bad_bearer.status_code == 401
    assert bad_bearer.json() == {"code": "PGRST301", "details": None, "hint": None,
                                 "message": "JWT cryptographic operation failed"}  # fmt: skip
    assert bad_bearer.headers["WWW-Authenticate"].startswith('Bearer error="invalid_token"')

    expired = make_jwt(SECRET, "service_role", exp=time.time() - 3600)
    late = raw.get("/items", headers={"Authorization": f"Bearer {expired}"})
    assert (late.status_code, late.json()["code"], late.json()["message"]) == (
        401, "PGRST303", "JWT expired",
    )  # fmt: skip
    parts = raw.get("/items", headers={"Authorization": "Bearer abc"})
    assert parts.json()["message"] == "Expected 3 parts in JWT; got 1"
    missing = httpx.get(f"{api.url}/rest/v1/items")
    assert missing.status_code == 401 and missing.json()["message"] == "No API key found in request"


def test_schema_not_exposed(db_url: str, connect: Callable[..., Client]) -> None:
    with PostgrestDouble(db_url, SECRET, schemas=("public",)) as narrow:
        with pytest.raises(APIError) as caught:
            connect(narrow.url).table("items").select("*").execute()
    assert caught.value.code == "PGRST106"
    assert caught.value.message == "Invalid schema: mai"
    assert caught.value.hint == "Only the following schemas are exposed: public"


def test_missing_table(api: PostgrestDouble, connect: Callable[..., Client]) -> None:
    with pytest.raises(APIError) as caught:
        connect(api.url).table("nope").insert({"id": "x"}).execute()
    assert caught.value.code == "PGRST205"
    assert caught.value.message == "Could not find the table 'mai.nope' in the schema cache"


def test_select_filters_order_and_paging(
    api: PostgrestDouble,
    db: psycopg.Connection[Any],
    connect: Callable[..., Client],
    raw: httpx.Client,
) -> None:
    table = connect(api.url).table("items")
    for start in range(0, 2500, 500):
        table.insert(rows(500, start=start), returning="minimal").execute()

    since, until = T0 + timedelta(minutes=10), T0 + timedelta(minutes=20)
    picked = (
        table.select("id, n", count="exact")
        .gte("created_at", str(since))  # `+` and spaces: the server must form-decode
        .lt("created_at", until.isoformat())
        .in_("caller", ["cli", "x,y"])
        .eq("n", 1)
        .order("created_at", desc=True)
        .execute()
    )
    assert [r["id"] for r in picked.data] == [f"r{i:05d}" for i in (19, 17, 15, 13, 11)]
    assert picked.count == 5 and set(picked.data[0]) == {"id", "n"}

    seen: list[str] = []
    for page in range(3):
        result = (
            table.select("*", count="exact")
            .order("created_at", desc=True)
            .range(page * 1000, page * 1000 + 999)
            .execute()
        )
        assert result.count == 2500
        seen += [r["id"] for r in result.data]
    assert len(seen) == 2500 and seen[0] == "r02499" and seen == sorted(seen, reverse=True)

    capped = raw.get("/items", params={"select": "id"}, headers={"Prefer": "count=exact"})
    assert capped.status_code == 206  # db-max-rows 1000 caps a bare read
    assert capped.headers["Content-Range"] == "0-999/2500"
    assert len(capped.json()) == 1000
    ranged = raw.get("/items", params={"select": "id", "order": "id"}, headers={"Range": "5-9"})
    assert ranged.headers["Content-Range"] == "5-9/*" and ranged.json()[0] == {"id": "r00005"}
    empty = raw.get("/items", params={"id": "eq.none"}, headers={"Prefer": "count=exact"})
    assert (empty.status_code, empty.headers["Content-Range"], empty.json()) == (200, "*/0", [])
    beyond = raw.get("/items", params={"offset": "3000"}, headers={"Prefer": "count=exact"})
    assert beyond.status_code == 416 and beyond.json()["code"] == "PGRST103"
    head = raw.head("/items", params={"caller": "is.null"}, headers={"Prefer": "count=exact"})
    assert (head.status_code, head.headers["Content-Range"], head.content) == (200, "*/0", b"")


def test_columns_missing_default_and_errors(
    api: PostgrestDouble, db: psycopg.Connection[Any], raw: httpx.Client
) -> None:
    full = {"Prefer": "return=representation"}
    mixed = [{"body": "a", "tag": "t"}, {"body": "b", "ignored": 1}]
    nulls = raw.post("/notes", params={"columns": '"body","tag"'}, json=mixed, headers=full)
    assert nulls.status_code == 201
    assert [r["tag"] for r in nulls.json()] == ["t", None]  # absent keys become NULL
    defaults = raw.post("/notes", params={"columns": '"body","tag"'}, json=[{"body": "c"}],
                        headers={"Prefer": "return=representation,missing=default"})  # fmt: skip
    assert defaults.json()[0]["tag"] == "plain"
    assert defaults.headers["Preference-Applied"] == "missing=default, return=representation"
    single = raw.post("/notes", json={"body": "d"}, headers=full)
    assert single.json() == [{"id": 4, "body": "d", "tag": "plain"}]

    unmatched = raw.post("/notes", json=mixed)
    assert (unmatched.status_code, unmatched.json()["message"]) == (
        400,
        "All object keys must match",
    )
    invalid = raw.post("/notes", content=b"{nope", headers={"Content-Type": "application/json"})
    assert (invalid.status_code, invalid.json()["code"]) == (400, "PGRST102")
    unknown = raw.post("/notes", json={"bogus": 1})
    assert (unknown.status_code, unknown.json()["code"]) == (400, "PGRST204")
    not_null = raw.post("/notes", json={"tag": "x"})
    assert (not_null.status_code, not_null.json()["code"]) == (400, "23502")
    raw.post("/items", json=rows(1))
    duplicate = raw.post("/items", json=rows(1))
    assert duplicate.status_code == 409
    assert duplicate.json() == {
        "code": "23505",
        "details": "Key (id)=(r00000) already exists.",
        "hint": None,
        "message": 'duplicate key value violates unique constraint "items_pkey"',
    }
    bad_int = raw.get("/items", params={"n": "eq.abc"})
    assert (bad_int.status_code, bad_int.json()["code"]) == (400, "22P02")
    bad_op = raw.get("/items", params={"n": "noop.0"})
    assert (bad_op.status_code, bad_op.json()["code"]) == (400, "PGRST100")
    bad_col = raw.get("/items", params={"select": "nope"})
    assert (bad_col.status_code, bad_col.json()["code"]) == (400, "42703")


def test_injected_failures(
    api: PostgrestDouble, db: psycopg.Connection[Any], connect: Callable[..., Client]
) -> None:
    table = connect(api.url).table("items")
    api.fail_next(503, times=2)
    for _ in range(2):
        with pytest.raises(APIError) as caught:
            table.select("*").execute()
        assert caught.value.code == "503"
    api.fail_next(500, body={"message": "boom"})
    with pytest.raises(APIError) as caught:
        table.select("*").execute()
    assert caught.value.message == "boom"
    api.reset_next()
    with pytest.raises(httpx.RemoteProtocolError):
        table.insert(rows(1), returning="minimal").execute()
    assert table.select("id").execute().data == []  # back to normal


def test_bulk_sync_is_fast(
    api: PostgrestDouble, db: psycopg.Connection[Any], connect: Callable[..., Client]
) -> None:
    table = connect(api.url).table("items")
    total, batch = 100_000, 500
    started = time.perf_counter()
    for start in range(0, total, batch):
        table.upsert(rows(batch, start=start), on_conflict="id", ignore_duplicates=True,
                     returning="minimal").execute()  # fmt: skip
    elapsed = time.perf_counter() - started
    assert db.execute("SELECT count(*) FROM mai.items").fetchone() == (total,)
    # The time is reported, not asserted: on a loaded 2-core machine it says nothing about the
    # double (a verdict must not depend on the machine's speed).
    print(f"{total} rows in {elapsed:.2f}s")


def test_module_runs_as_a_program(db_url: str) -> None:
    argv = [
        sys.executable,
        "-m",
        "imagen.testing.postgrest",
        "--db",
        db_url,
        "--jwt-secret",
        SECRET,
    ]
    with subprocess.Popen(argv, stdout=subprocess.PIPE, text=True) as proc:
        assert proc.stdout is not None
        url = proc.stdout.readline().strip()
        assert url.startswith("http://127.0.0.1:")
        response = httpx.get(f"{url}/rest/v1/items", params={"select": "id"},
                             headers={"apikey": SERVICE, "Authorization": f"Bearer {SERVICE}",
                                      "Accept-Profile": "mai"}, timeout=IO_TIMEOUT_S)  # fmt: skip
        assert response.status_code == 200 and isinstance(response.json(), list)
        proc.terminate()
        assert proc.wait(timeout=IO_TIMEOUT_S) == 0


def test_patch_and_delete(
    api: PostgrestDouble, db: psycopg.Connection[Any], raw: httpx.Client
) -> None:
    raw.post("/items", json=rows(3))
    full = {"Prefer": "return=representation"}
    patched = raw.patch("/items", params={"id": "in.(r00000,r00001)"}, json={"n": 9}, headers=full)
    assert patched.status_code == 200 and {r["n"] for r in patched.json()} == {9}
    assert patched.headers["Content-Range"] == "0-1/*"
    gone = raw.delete("/items", params={"n": "eq.9"}, headers={"Prefer": "count=exact"})
    assert (gone.status_code, gone.headers["Content-Range"]) == (204, "*/2")
    assert db.execute("SELECT id FROM mai.items").fetchall() == [("r00002",)]


def test_database_down_is_503(server_url: str) -> None:
    dead = "postgresql://postgres@127.0.0.1:1/none"
    with PostgrestDouble(dead, SECRET, ensure_roles=False) as double:
        headers = {"apikey": SERVICE, "Authorization": f"Bearer {SERVICE}"}
        response = httpx.get(f"{double.url}/rest/v1/items", headers=headers, timeout=IO_TIMEOUT_S)
    assert (response.status_code, response.json()["code"]) == (503, "PGRST000")
