"""The team ledger on PostgreSQL with two roles, as docs/usage.md sets it up: an owner that runs
migrations and owns the events table and its triggers, and a writer (what imagen runs as) that
can only INSERT and SELECT events. The ledger suite (tests/test_ledger.py, test_ledger_group.py)
runs as the writer too (`store_url`'s "postgres-writer"); the writer cannot drop or disable the
triggers, nor UPDATE, DELETE or TRUNCATE events."""

from __future__ import annotations

import uuid
from pathlib import Path

import psycopg
import pytest
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError

from ledger import NewEvent, open_store
from tests.support.cli import Sandbox

# The statements docs/usage.md gives (names substituted); kept in one place so the doc and the
# test cannot drift apart silently: test_docs_show_these_grants checks the doc quotes them.
OWNER_SETUP = [
    "CREATE ROLE {owner} LOGIN",
    "CREATE ROLE {writer} LOGIN",
    "CREATE DATABASE {db} OWNER {owner}",
]
WRITER_GRANTS = [
    "GRANT CONNECT ON DATABASE {db} TO {writer}",
    "GRANT USAGE, CREATE ON SCHEMA public TO {writer}",
    "GRANT SELECT, INSERT ON events TO {writer}",
    "GRANT SELECT ON ledger_alembic_version TO {writer}",
    "GRANT SELECT, INSERT, UPDATE ON projection_checkpoints TO {writer}",
]


def _conninfo(url: str) -> str:
    return make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


def team_ledger(server_url: str) -> tuple[str, str]:
    """(owner URL, writer URL) of a fresh team ledger migrated by its owner."""
    tag = uuid.uuid4().hex[:10]
    names = {"owner": f"imagen_owner_{tag}", "writer": f"imagen_writer_{tag}", "db": f"t_{tag}"}
    with psycopg.connect(_conninfo(server_url), autocommit=True) as conn:
        for statement in OWNER_SETUP:
            conn.execute(statement.format(**names))
    base = make_url(server_url).set(database=names["db"])
    owner = base.set(username=names["owner"]).render_as_string(hide_password=False)
    writer = base.set(username=names["writer"]).render_as_string(hide_password=False)
    open_store(owner).close()  # `imagen db upgrade ledger` as the owner
    with psycopg.connect(_conninfo(owner), autocommit=True) as conn:
        for statement in WRITER_GRANTS:
            conn.execute(statement.format(**names))
    return owner, writer


# The ledger suite's own fixture, its writer-role branch: what test_ledger.py's writer runs get.
@pytest.mark.parametrize("store_url", ["postgres-writer"], indirect=True)
def test_the_suites_writer_runs_really_run_as_the_writer(store_url: str) -> None:
    """What the ledger suite's store connects as: the writer role, which may append and read
    but not UPDATE events. (Were the suite to run as the owner, this fails.)"""
    store = open_store(store_url)
    store.append("s", [NewEvent("A", {"v": 1})], 0)
    user = make_url(store_url).username
    assert user is not None and user.startswith("imagen_writer_")
    assert store.query("SELECT current_user") == [(user,)]
    with store.engine.begin() as conn:
        (owner,) = conn.exec_driver_sql(
            "SELECT tableowner FROM pg_tables WHERE tablename = 'events'"
        ).one()
    assert owner != user and owner.startswith("imagen_owner_")
    with pytest.raises(DBAPIError, match="permission denied"), store.engine.begin() as conn:
        conn.exec_driver_sql("UPDATE events SET data = '{}'")
    assert store.read_stream("s")[0].data == {"v": 1} and store.verify().ok
    store.close()


@pytest.mark.parametrize(
    "statement",
    [
        "DROP TRIGGER events_no_update_delete ON events",
        "ALTER TABLE events DISABLE TRIGGER ALL",
        "UPDATE events SET data = '{}'",
        "DELETE FROM events",
        "TRUNCATE events",
        "DROP TABLE events",
        "CREATE TRIGGER sneaky BEFORE INSERT ON events FOR EACH ROW EXECUTE FUNCTION "
        "events_immutable()",
    ],
)
def test_the_writer_cannot_touch_what_is_recorded(pg_server_url: str, statement: str) -> None:
    _, writer = team_ledger(pg_server_url)
    store = open_store(writer)
    store.append("s", [NewEvent("A", {"v": 1})], 0)
    store.close()
    with psycopg.connect(_conninfo(writer), autocommit=True) as conn:
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute(statement)
    store = open_store(writer)
    assert store.verify().ok and store.read_stream("s")[0].data == {"v": 1}


def test_imagen_runs_as_the_writer(pg_server_url: str, tmp_path: Path, echo_server) -> None:  # type: ignore[no-untyped-def]
    from tests.support.echo import ECHO_CLI

    _, writer = team_ledger(pg_server_url)
    box = Sandbox(tmp_path, ledger_url=writer, entry=ECHO_CLI)
    box.write_backend("echo", "echo", url=echo_server.url)
    made = box.run("generate", "a cat")
    assert made.returncode == 0, made.stderr
    listed = box.run("jobs")
    assert listed.returncode == 0 and "a cat" in listed.stdout
    audit = box.run("audit")
    assert audit.returncode == 0, audit.stdout + audit.stderr
    assert box.run("rebuild").returncode == 0


def test_docs_show_these_grants() -> None:
    doc = (Path(__file__).resolve().parents[1] / "docs" / "usage.md").read_text()
    for statement in [*OWNER_SETUP, *WRITER_GRANTS]:
        shown = statement.format(owner="imagen_owner", writer="imagen_writer", db="imagen")
        assert shown in doc, shown
