"""Budgets on a team PostgreSQL ledger, with the real roles of docs/usage.md ("A team ledger on
PostgreSQL"): the budget stream is protected, so only the ledger's owner role may set or
remove a budget (a database trigger refuses the writer, whatever client it uses), and the
database records which role appended each event. The writer still runs jobs."""

from __future__ import annotations

from pathlib import Path

import psycopg
import pytest
from sqlalchemy.engine import make_url

from imagen.core.events import BUDGET_STREAM
from ledger import NewEvent, ProtectedStreamError, open_store
from tests.support.cli import Sandbox
from tests.support.echo import ECHO_CLI
from tests.test_pg_roles import _conninfo, team_ledger


def _box(root: Path, url: str, echo_url: str) -> Sandbox:
    root.mkdir(parents=True, exist_ok=True)
    box = Sandbox(root, ledger_url=url, entry=ECHO_CLI, env={"MAI_FROM_ID": "agent-7"})
    box.write_backend("echo", "echo", url=echo_url)
    return box


def _one_line_naming(result, owner: str) -> None:  # type: ignore[no-untyped-def]
    assert result.returncode == 2, result.stdout + result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and owner in lines[0] and "Traceback" not in result.stderr, lines


def test_only_the_owner_role_sets_or_removes_budgets(
    pg_server_url: str, tmp_path: Path, echo_server
) -> None:  # type: ignore[no-untyped-def]
    owner_url, writer_url = team_ledger(pg_server_url)
    owner = open_store(owner_url).owner_role()
    assert owner is not None and owner.startswith("imagen_owner_")
    as_owner = _box(tmp_path / "owner", owner_url, echo_server.url)
    as_writer = _box(tmp_path / "writer", writer_url, echo_server.url)

    # Before the owner registered the budget stream, the writer cannot register it either.
    _one_line_naming(as_writer.run("budget", "set", "agent-7", "100", "--per", "day"), owner)
    upgraded = as_owner.run("db", "upgrade", "ledger")
    assert upgraded.returncode == 0 and upgraded.stderr == "", upgraded.stderr
    _one_line_naming(as_writer.run("budget", "set", "agent-7", "100", "--per", "day"), owner)
    assert as_owner.run("budget", "set", "agent-7", "0.5", "--per", "day").returncode == 0
    _one_line_naming(as_writer.run("budget", "remove", "agent-7"), owner)
    listed = as_writer.run("budget", "list", "--json")
    assert listed.returncode == 0 and '"amount": "0.500000"' in listed.stdout

    made = as_writer.run("generate", "a cat")  # the writer still runs jobs
    assert made.returncode == 0, made.stderr

    # Whatever the client: the store's own append as the writer is refused by the database.
    writer_store = open_store(writer_url)
    removed = {"caller": "agent-7", "per": "day", "backend": "", "removed_by": "agent-7"}
    with pytest.raises(ProtectedStreamError, match=owner):
        writer_store.append(BUDGET_STREAM, [NewEvent("BudgetRemoved", removed)], None)
    assert as_owner.run("budget", "remove", "agent-7").returncode == 0

    # The database records who appended each event; the chain (which does not hash it) holds.
    def roles(where: str) -> list[str]:
        sql = f"SELECT DISTINCT recorded_by FROM events WHERE {where}"
        return [r[0] for r in writer_store.query(sql, {"b": BUDGET_STREAM})]

    assert roles("stream_id = :b") == [owner]
    assert roles("stream_id NOT LIKE '$%'") == [make_url(writer_url).username]
    assert writer_store.verify().ok
    audit = as_writer.run("audit")
    assert audit.returncode == 0, audit.stdout + audit.stderr
    writer_store.close()


def test_the_writer_cannot_claim_to_be_the_owner(pg_server_url: str) -> None:
    """`recorded_by` is set by the trigger, whatever the INSERT says."""
    owner_url, writer_url = team_ledger(pg_server_url)
    owner = open_store(owner_url).owner_role()
    store = open_store(writer_url)
    store.append("s", [NewEvent("A", {})], 0)
    with psycopg.connect(_conninfo(writer_url), autocommit=True) as conn:
        conn.execute(
            "INSERT INTO events (position, event_id, stream_id, stream_version, type,"
            " schema_version, data, recorded_at, prev_hash, hash, recorded_by)"
            " VALUES (99, 'x', 'forged', 1, 'A', 1, '{}', 't', 'p', 'h', %s)",
            (owner,),
        )
        (by,) = conn.execute("SELECT recorded_by FROM events WHERE position = 99").fetchone()
    assert by != owner and by == store.query("SELECT current_user")[0][0]
    store.close()
