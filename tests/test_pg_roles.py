"""The team ledger on PostgreSQL with two roles, as docs/usage.md sets it up: an owner that runs
migrations and owns the events table and its triggers, and a writer (what imagen runs as) that
can only INSERT and SELECT events. The ledger suite runs as the writer; the writer cannot drop
or disable the triggers, nor UPDATE, DELETE or TRUNCATE events."""

from __future__ import annotations

import uuid
from pathlib import Path

import psycopg
import pytest
from sqlalchemy.engine import make_url

from ledger import NewEvent, open_store
from tests.support.cli import Sandbox
from tests.test_ledger import (  # noqa: F401 - collected here again, run as the writer role
    test_append_and_read_round_trip,
    test_checkpoints,
    test_concurrent_processes_lose_nothing,
    test_stale_expected_version_raises,
)

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


@pytest.fixture
def ledger_url(pg_server_url: str) -> str:
    """Overrides the suite's fixture: the writer's URL of a team ledger."""
    return team_ledger(pg_server_url)[1]


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
