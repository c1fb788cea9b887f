"""The off-machine anchor against an attacker who can edit the ledger file: after every rewrite
`imagen usage sync` refuses to report a head, `imagen audit --remote` names the problem, and
the heads Supabase holds stay as they were. Supabase is the PostgREST double over a real
PostgreSQL; the tampering is what such a user can do with sqlite3 (drop the immutability
triggers, edit, recompute every later hash so the chain alone verifies)."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Callable
from pathlib import Path

import httpx
import psycopg
import pytest

from imagen.testing.postgres import PostgresCluster, PostgresUnavailable, create_database
from imagen.testing.postgrest import PostgrestDouble, ensure_supabase_roles
from ledger.events import event_hash
from tests.support.cli import Sandbox
from tests.support.echo import EchoServer
from tests.test_usage import (  # noqa: F401 - fixtures
    PROMPT,
    SECRET,
    SERVICE,
    _libpq,
    _remote_rows,
    _usage_sandbox,
    supa,
    usage_db,
)

_COLUMNS = (
    "position, event_id, stream_id, stream_version, type, schema_version, data, "
    "recorded_at, prev_hash, hash"
)


def _heads(url: str) -> list[tuple]:
    with psycopg.connect(_libpq(url)) as conn:
        return conn.execute(
            "SELECT report_id, ledger_id, machine, location, position, hash, reported_at "
            "FROM mai.imagen_ledger_heads ORDER BY report_id"
        ).fetchall()


def _heads_0001(url: str) -> list[tuple]:
    with psycopg.connect(_libpq(url)) as conn:
        return conn.execute("SELECT * FROM mai.imagen_ledger_heads").fetchall()


def _db(box: Sandbox) -> sqlite3.Connection:
    db = sqlite3.connect(box.ledger_url.removeprefix("sqlite:///"))
    db.execute("DROP TRIGGER IF EXISTS events_no_update")
    db.execute("DROP TRIGGER IF EXISTS events_no_delete")
    return db


def _rechain(db: sqlite3.Connection, rows: list[list]) -> None:
    """Write `rows` as the whole ledger, renumbered from 1 with every hash recomputed."""
    prev = "0" * 64
    for i, row in enumerate(rows, start=1):
        row[0], row[8] = i, prev
        row[9] = prev = event_hash(prev, *row[:8])
    db.execute("DELETE FROM events")
    db.executemany(f"INSERT INTO events ({_COLUMNS}) VALUES (?,?,?,?,?,?,?,?,?,?)", rows)
    db.commit()


def _rewrite(box: Sandbox, edit: Callable[[list[list]], list[list]]) -> None:
    db = _db(box)
    rows = [list(r) for r in db.execute(f"SELECT {_COLUMNS} FROM events ORDER BY position")]
    _rechain(db, edit(rows))
    db.close()


def _edit_data(rows: list[list], position: int, old: str, new: str) -> list[list]:
    assert old in rows[position - 1][6]
    rows[position - 1][6] = rows[position - 1][6].replace(old, new)
    return rows


def _forget_projections(box: Sandbox) -> None:
    """Drop the derived tables, as a ledger from before they existed would be."""
    db = sqlite3.connect(box.ledger_url.removeprefix("sqlite:///"))
    tables = "SELECT name FROM sqlite_master WHERE type = 'table' AND name LIKE 'imagen_%_v%'"
    for (name,) in db.execute(tables).fetchall():
        db.execute(f"DROP TABLE {name}")
    db.execute("DELETE FROM projection_checkpoints")
    db.commit()
    db.close()


def _forget_head_file(box: Sandbox) -> None:
    """Remove the chain head file beside the ledger (what a careless attacker also does): a
    ledger that records keeping one says so."""
    Path(box.ledger_url.removeprefix("sqlite:///") + ".head").unlink()


def _forge_local_evidence(box: Sandbox) -> None:
    """What a careful attacker also does: a head file naming the chain as it now is, and no
    image or sidecar left of a removed job."""
    from ledger.chain import Head, HeadFile

    last = box.events()[-1]
    HeadFile(Path(box.ledger_url.removeprefix("sqlite:///") + ".head")).write(
        Head(last.position, last.hash)
    )
    jobs = {e.stream_id for e in box.events()}
    for side in box.root.parent.rglob("*.json"):  # (the output folder is beside the box)
        try:
            job = json.loads(side.read_text()).get("job_id")
        except (ValueError, AttributeError):
            continue
        if isinstance(job, str) and job not in jobs:
            side.unlink()
            Path(str(side).removesuffix(".json")).unlink(missing_ok=True)


def _positions_of(box: Sandbox, type_: str) -> list[int]:
    return [e.position for e in box.events() if e.type == type_]


# Each attack returns the problems `audit --remote` may name for it.
def _middle(box: Sandbox) -> set[str]:
    second = _positions_of(box, "JobRequested")[1]
    _rewrite(box, lambda rows: _edit_data(rows, second, "fox", "cat"))
    return {"rewritten"}


def _first(box: Sandbox) -> set[str]:
    def edit(rows: list[list]) -> list[list]:
        assert rows[0][4] == "LedgerCreated"
        rows[0][7] = "2020-01-01T00:00:00.000000Z"  # the id stays; the history does not
        return rows

    _rewrite(box, edit)
    return {"rewritten"}


def _tail(box: Sandbox) -> set[str]:
    last_job = _positions_of(box, "JobRequested")[-1]
    db = _db(box)
    db.execute("DELETE FROM events WHERE position >= ?", (last_job,))
    db.commit()
    db.close()
    return {"removed"}


def _ledger_id(box: Sandbox) -> set[str]:
    def edit(rows: list[list]) -> list[list]:
        rows[0][6] = json.dumps({"ledger_id": "f" * 32}, separators=(",", ":"))
        return rows

    _rewrite(box, edit)
    return {"replaced"}


def _generate_and_sync(box: Sandbox, n: int = 2) -> None:
    for i in range(n):
        result = box.run("generate", f"{PROMPT} {i}")
        assert result.returncode == 0, result.stderr
        assert "warning" not in result.stderr, result.stderr
    synced = box.run("usage", "sync")
    assert synced.returncode == 0, synced.stderr


def _assert_refused_and_named(box: Sandbox, url: str, heads: list[tuple], problems: set[str]):  # type: ignore[no-untyped-def]
    refused = box.run("usage", "sync")
    assert refused.returncode == 4, refused.stdout + refused.stderr
    [line] = refused.stderr.splitlines()
    assert "reported no ledger head" in line and "imagen usage sync" not in line
    assert _heads(url) == heads
    audit = box.run("audit", "--remote", "--json")
    assert audit.returncode == 4, audit.stdout + audit.stderr
    found = [p for p in json.loads(audit.stdout)["problems"] if p["kind"] == "remote"]
    assert {p["problem"] for p in found} & problems, found
    assert all("sync" not in p["message"] for p in found), found
    human = box.run("audit", "--remote")
    assert human.returncode == 4 and found[0]["message"] in human.stdout
    assert _heads(url) == heads
    return line


@pytest.mark.parametrize(
    "attack", [_middle, _first, _tail, _ledger_id], ids=["middle", "first", "tail", "ledger-id"]
)
def test_a_rewritten_ledger_is_never_laundered_by_a_sync(
    tmp_path: Path,
    echo_server: EchoServer,
    supa: PostgrestDouble,  # noqa: F811
    usage_db: str,  # noqa: F811
    attack: Callable[[Sandbox], set[str]],
) -> None:
    box = _usage_sandbox(tmp_path, echo_server, supa.url)
    _generate_and_sync(box)
    assert box.run("audit", "--remote").returncode == 0
    heads = _heads(usage_db)
    assert heads and heads[-1][4] == len(box.events())

    problems = attack(box)
    # Locally the head file beside the ledger (and the projections' checkpoints) show it...
    assert box.run("audit").returncode == 4
    # ...and a head file gone from a ledger that records keeping one is a finding too...
    _forget_projections(box)
    _forget_head_file(box)
    if attack is not _ledger_id:  # (the rewritten identity no longer records keeping one)
        assert box.run("audit").returncode == 4
    # ...until the attacker also forges those: then the chain alone cannot tell.
    _forge_local_evidence(box)
    assert box.run("audit").returncode == 0
    _assert_refused_and_named(box, usage_db, heads, problems)

    # Carrying on as if nothing happened: the image is made and its usage row still goes
    # (facts about spend), but no head is reported, now or by the next sync.
    rows_before = len(_remote_rows(usage_db))
    later = box.run("generate", f"{PROMPT} later")
    assert later.returncode == 0, later.stderr
    assert "reported no ledger head" in later.stderr
    if attack is not _tail:  # cutting the tail also leaves projections past the head
        assert len(_remote_rows(usage_db)) == rows_before + 1
    _assert_refused_and_named(box, usage_db, heads, {"rewritten", "removed", "replaced"})


def test_a_legacy_ledger_keeps_its_id_and_a_rewritten_first_event_is_a_replacement(
    tmp_path: Path,
    echo_server: EchoServer,
    supa: PostgrestDouble,  # noqa: F811
    usage_db: str,  # noqa: F811
) -> None:
    box = _usage_sandbox(tmp_path, echo_server, supa.url)
    _generate_and_sync(box, 2)
    # Made legacy: no LedgerCreated, as ledgers written before identities existed. Its id is
    # its first event's hash, reported from a fresh remote table.
    _rewrite(box, lambda rows: rows[1:])
    _forget_projections(box)
    _forget_head_file(box)  # nor a head file beside it
    with psycopg.connect(_libpq(usage_db), autocommit=True) as conn:
        conn.execute("ALTER TABLE mai.imagen_ledger_heads DISABLE TRIGGER USER")
        conn.execute("DELETE FROM mai.imagen_ledger_heads")
        conn.execute("ALTER TABLE mai.imagen_ledger_heads ENABLE TRIGGER USER")
    synced = box.run("usage", "sync")
    assert synced.returncode == 0, synced.stderr
    [head] = _heads(usage_db)
    assert head[1] == box.events()[0].hash and head[4] == len(box.events())
    assert box.run("audit", "--remote").returncode == 0

    _rewrite(box, lambda rows: _edit_data(rows, 1, "fox", "cat"))  # the first event: a new id
    line = _assert_refused_and_named(box, usage_db, [head], {"replaced"})
    assert head[1] in line and "replaced or its first event rewritten" in line


def test_a_ledger_of_this_machine_that_is_gone_is_a_finding(
    tmp_path: Path,
    echo_server: EchoServer,
    supa: PostgrestDouble,  # noqa: F811
    usage_db: str,  # noqa: F811
) -> None:
    old = _usage_sandbox(tmp_path / "old", echo_server, supa.url)
    _generate_and_sync(old, 1)
    new = _usage_sandbox(tmp_path / "new", echo_server, supa.url)
    _generate_and_sync(new, 1)
    assert new.run("audit", "--remote").returncode == 0  # the old one is still in place
    old_path = Path(old.ledger_url.removeprefix("sqlite:///"))
    old_path.unlink()
    audit = new.run("audit", "--remote", "--json")
    assert audit.returncode == 4
    [gone] = [p for p in json.loads(audit.stdout)["problems"] if p["kind"] == "remote"]
    assert gone["problem"] == "gone" and str(old_path.resolve()) in gone["message"]


def test_an_unreported_ledger_is_a_finding_that_does_not_suggest_a_sync(
    tmp_path: Path,
    echo_server: EchoServer,
    supa: PostgrestDouble,  # noqa: F811
) -> None:
    box = _usage_sandbox(tmp_path, echo_server, supa.url)
    box.write_config(
        (box.root / "config.toml").read_text().replace("supabase_url", "# supabase_url")
    )
    assert box.run("generate", PROMPT).returncode == 0  # no Supabase: nothing reported
    box.write_config(
        (box.root / "config.toml").read_text().replace("# supabase_url", "supabase_url")
    )
    audit = box.run("audit", "--remote")
    assert audit.returncode == 4
    assert "was ever reported" in audit.stdout and "sync" not in audit.stdout


def test_a_key_holder_can_add_a_head_but_never_move_one(
    tmp_path: Path,
    echo_server: EchoServer,
    supa: PostgrestDouble,  # noqa: F811
    usage_db: str,  # noqa: F811
) -> None:
    box = _usage_sandbox(tmp_path, echo_server, supa.url)
    _generate_and_sync(box, 1)
    heads = _heads(usage_db)
    [(_, ledger_id, machine, location, position, digest, _)] = heads
    with psycopg.connect(_libpq(usage_db)) as conn:
        for statement in (
            "UPDATE mai.imagen_ledger_heads SET hash = repeat('0', 64)",
            "DELETE FROM mai.imagen_ledger_heads",
            "TRUNCATE mai.imagen_ledger_heads",
        ):
            with pytest.raises(psycopg.errors.InsufficientPrivilege), conn.transaction():
                conn.execute("SET LOCAL ROLE service_role")
                conn.execute(statement)
        # Not even the owner: the table refuses changes whoever asks.
        with pytest.raises(psycopg.errors.InsufficientPrivilege) as owner, conn.transaction():
            conn.execute("UPDATE mai.imagen_ledger_heads SET position = position + 1")
        assert "append-only" in str(owner.value)
        # A second hash for a reported position is refused too.
        with pytest.raises(psycopg.errors.UniqueViolation), conn.transaction():
            conn.execute("SET LOCAL ROLE service_role")
            conn.execute(
                "INSERT INTO mai.imagen_ledger_heads (ledger_id, machine, location, position, hash)"
                " VALUES (%s, %s, %s, %s, repeat('0', 64))",
                (ledger_id, machine, location, position),
            )
    headers = {"apikey": SERVICE, "Authorization": f"Bearer {SERVICE}", "Content-Profile": "mai"}
    patched = httpx.patch(
        f"{supa.url}/rest/v1/imagen_ledger_heads?ledger_id=eq.{ledger_id}",
        json={"hash": "0" * 64},
        headers=headers,
    )
    assert patched.status_code == 403 and patched.json()["code"] == "42501"
    assert _heads(usage_db) == heads and heads[0][5] == digest


def test_grants_hold_whatever_the_order_of_upgrade_and_role(
    tmp_path: Path, echo_server: EchoServer
) -> None:
    # Roles are per cluster, and the shared one has service_role already: a cluster of its own.
    try:
        cluster = PostgresCluster().start()
    except PostgresUnavailable as exc:
        pytest.skip(str(exc))
    try:
        url = cluster.create_database()
        migrate = Sandbox(tmp_path / "migrate")
        migrate.root.mkdir()
        migrate.write_config("")
        first = migrate.run("db", "upgrade", "usage", "--url", url)
        assert first.returncode == 0, first.stderr
        assert "usage at head" in first.stdout
        assert "role service_role does not exist" in first.stderr
        ensure_supabase_roles(url)  # the role comes later, as with the double started after
        with PostgrestDouble(url, SECRET) as api:
            box = _usage_sandbox(tmp_path, echo_server, api.url)
            assert box.run("generate", PROMPT).returncode == 0
            denied = box.run("usage", "sync")
            assert denied.returncode == 3
            assert "permission denied" in denied.stderr
            assert "imagen db upgrade usage" in denied.stderr
            again = migrate.run("db", "upgrade", "usage", "--url", url)
            assert again.returncode == 0, again.stderr
            assert "grants to service_role applied" in again.stdout and not again.stderr
            synced = box.run("usage", "sync")
            assert synced.returncode == 0, synced.stderr
            assert "sent 1 row" in synced.stdout and "head" in synced.stdout
            assert len(_remote_rows(url)) == 1 and len(_heads(url)) == 1
            # Running it again changes nothing and says the same.
            assert (
                "grants to service_role applied"
                in migrate.run("db", "upgrade", "usage", "--url", url).stdout
            )
            assert box.run("audit", "--remote").returncode == 0
    finally:
        cluster.stop()


def test_an_existing_deployment_upgrades_and_keeps_its_reported_heads(
    pg_server_url: str, tmp_path: Path, echo_server: EchoServer
) -> None:
    from sqlalchemy import create_engine

    from alembic import command
    from ledger.migrate import alembic_config

    url = create_database(pg_server_url)
    ensure_supabase_roles(url)
    engine = create_engine(url)
    with engine.connect() as conn, conn.begin():
        command.upgrade(alembic_config(conn, "usage"), "usage_0001")
    engine.dispose()
    with PostgrestDouble(url, SECRET) as api:
        box = _usage_sandbox(tmp_path, echo_server, api.url)
        box.write_config(
            (box.root / "config.toml").read_text().replace("supabase_url", "# supabase_url")
        )
        assert box.run("generate", PROMPT).returncode == 0
        store = box.store()
        ledger_id = store.identity()
        store.close()
        head = box.events()[-1]
        with psycopg.connect(_libpq(url), autocommit=True) as conn:  # as the old sync did
            conn.execute(
                "INSERT INTO mai.imagen_ledger_heads VALUES (%s, 'old-host', %s, %s, now())",
                (ledger_id, head.position, head.hash),
            )
        box.write_config(
            (box.root / "config.toml").read_text().replace("# supabase_url", "supabase_url")
        )
        old = box.run("usage", "sync")  # this imagen against the old tables: names the fix
        assert old.returncode == 3 and "run `imagen db upgrade usage`" in old.stderr, old.stderr
        assert "older than this imagen" in old.stderr and len(_heads_0001(url)) == 1
        migrate = Sandbox(tmp_path / "migrate")
        migrate.root.mkdir()
        migrate.write_config("")
        upgraded = migrate.run("db", "upgrade", "usage", "--url", url)
        assert upgraded.returncode == 0, upgraded.stderr
        assert box.run("audit", "--remote").returncode == 0
        assert box.run("generate", PROMPT).returncode == 0
        heads = _heads(url)
        assert [h[4] for h in heads] == [head.position, len(box.events())]
        assert heads[0][3] is None and heads[1][3] == str(
            Path(box.ledger_url.removeprefix("sqlite:///")).resolve()
        )


# -- the decision alone (pure) -----------------------------------------------------------------

_HERE = dict(ledger_id="L", machine="m", location="/l.db", head_position=10, head_hash="h10")


def _r(position: int, digest: str, ledger_id: str = "L", location: str | None = "/l.db"):  # type: ignore[no-untyped-def]
    from imagen.projections.usage.sync import Reported

    return Reported(ledger_id, "m", location, position, digest, "2026-11-25T00:00:00Z")


@pytest.mark.parametrize(
    ("reported", "local", "problems"),
    [
        ([], {}, []),
        ([_r(4, "h4"), _r(10, "h10")], {4: "h4", 10: "h10"}, []),
        ([_r(4, "h4"), _r(8, "h8")], {4: "h4", 8: "x8"}, ["rewritten"]),
        ([_r(4, "h4"), _r(8, "h8")], {4: "x4", 8: "x8"}, ["rewritten"]),  # names position 4
        ([_r(12, "h12")], {}, ["removed"]),
        ([_r(4, "h4"), _r(12, "h12")], {4: "x4"}, ["rewritten", "removed"]),
        ([_r(4, "h4", ledger_id="other")], {}, []),  # another ledger's heads are not compared
    ],
)
def test_every_reported_head_must_still_be_in_the_chain(
    reported: list, local: dict[int, str], problems: list[str]
) -> None:
    from imagen.projections.usage.sync import Here, head_findings

    found = head_findings(Here(**_HERE), reported, local)
    assert [f.problem for f in found] == problems
    if problems[:1] == ["rewritten"]:
        assert found[0].position == min(
            r.position for r in reported if local.get(r.position) != r.hash
        )


@pytest.mark.parametrize(
    ("here", "elsewhere", "found_at", "problems"),
    [
        ({}, [], {}, []),
        ({}, [_r(3, "a", ledger_id="OLD")], {}, ["replaced"]),  # same place, new id
        ({"ledger_id": None}, [_r(3, "a", ledger_id="OLD")], {}, ["replaced"]),  # now empty
        ({}, [_r(3, "a", "OLD", "/old.db")], {"/old.db": None}, ["gone"]),
        ({}, [_r(3, "a", "OLD", "/old.db")], {"/old.db": "NEW"}, ["replaced"]),
        ({}, [_r(3, "a", "OLD", "/old.db")], {"/old.db": "OLD"}, []),  # still there
        ({}, [_r(3, "a", "OLD", "/pg")], {}, []),  # elsewhere and not checkable
        ({}, [_r(3, "a", "OLD", None)], {}, []),  # reported before locations were recorded
        ({}, [_r(3, "a", "OLD"), _r(5, "b", "OLD")], {}, ["replaced"]),  # one per ledger
    ],
)
def test_a_ledger_this_machine_reported_must_still_be_where_it_was(
    here: dict, elsewhere: list, found_at: dict, problems: list[str]
) -> None:
    from imagen.projections.usage.sync import Here, place_findings

    assert [f.problem for f in place_findings(Here(**{**_HERE, **here}), elsewhere, found_at)] == (
        problems
    )


def test_only_a_new_head_is_reported_and_hostile_rows_are_not_heads() -> None:
    from imagen.projections.usage.sync import Here, Reported, needs_report, unanchored

    here = Here(**_HERE)
    assert needs_report(here, None) and needs_report(here, _r(4, "h4"))
    assert not needs_report(here, _r(10, "h10"))
    assert not needs_report(Here(**{**_HERE, "ledger_id": None}), None)
    assert [f.problem for f in unanchored(here, [])] == ["unanchored"]
    assert unanchored(here, [_r(4, "h4")]) == []
    good = {"ledger_id": "L", "machine": "m", "location": None, "position": 3, "hash": "h"}
    assert Reported.from_row(good) is not None
    for bad in (
        {**good, "position": "3"},
        {**good, "position": True},
        {**good, "position": 0},
        {**good, "hash": None},
        {**good, "location": 5},
        {k: v for k, v in good.items() if k != "ledger_id"},
        ["not", "a", "row"],
    ):
        assert Reported.from_row(bad) is None, bad  # type: ignore[arg-type]
