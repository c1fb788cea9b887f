"""`imagen db upgrade ledger` takes the same guarded path as opening a ledger: the migration
lock (an advisory lock on PostgreSQL), and a ledger newer than this imagen refused untouched.
On the real PostgreSQL fixture (and SQLite where the engine allows)."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import psycopg
import pytest
from sqlalchemy import create_engine, text

from imagen.app.exit_codes import ExitCode
from ledger.revision import MIGRATION_LOCK
from ledger.schema_names import LEDGER_HEAD, LEDGER_VERSION_TABLE
from tests.support.cli import ROOT, Sandbox


def _libpq(url: str) -> str:
    return url.replace("postgresql+psycopg://", "postgresql://")


def _box(root: Path, url: str) -> Sandbox:
    root.mkdir(exist_ok=True)
    box = Sandbox(root, ledger_url=url)
    box.write_config("")
    return box


def _revision(url: str) -> list[tuple[str, ...]]:
    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            return [tuple(r) for r in conn.execute(text(f"SELECT * FROM {LEDGER_VERSION_TABLE}"))]
    finally:
        engine.dispose()


def test_upgrade_ledger_migrates_then_is_a_no_op(ledger_url: str, tmp_path: Path) -> None:
    box = _box(tmp_path, ledger_url)
    for _ in range(2):
        result = box.run("db", "upgrade", "ledger")
        assert result.returncode == 0, result.stderr
        assert result.stdout.strip() == "ledger at head"
    assert _revision(ledger_url) == [(LEDGER_HEAD,)]


def test_upgrade_ledger_refuses_a_newer_schema_untouched(ledger_url: str, tmp_path: Path) -> None:
    box = _box(tmp_path, ledger_url)
    assert box.run("db", "upgrade", "ledger").returncode == 0
    engine = create_engine(ledger_url)
    with engine.begin() as conn:
        conn.execute(text(f"UPDATE {LEDGER_VERSION_TABLE} SET version_num = 'ledger_9999'"))
    engine.dispose()

    # The URL given on the command line takes the same path as the configured one.
    other = _box(tmp_path / "other", f"sqlite:///{tmp_path / 'other' / 'unused.db'}")
    for result in (
        box.run("db", "upgrade", "ledger"),
        other.run("db", "upgrade", "ledger", "--url", ledger_url),
    ):
        assert result.returncode == ExitCode.LEDGER_ERROR
        assert "newer than this imagen knows" in result.stderr
        assert "Traceback" not in result.stderr
    assert _revision(ledger_url) == [("ledger_9999",)]


def test_upgrade_ledger_on_postgresql_waits_for_the_migration_lock(
    pg_url: str, tmp_path: Path
) -> None:
    """A process migrating the same ledger holds the advisory lock: upgrade queues behind it
    (it does not run alembic beside it), then finds the ledger to migrate and does it once."""
    box = _box(tmp_path, pg_url)
    with psycopg.connect(_libpq(pg_url)) as holder:
        holder.execute("SELECT pg_advisory_xact_lock(%s)", (MIGRATION_LOCK,))
        proc = subprocess.Popen(
            box.cmd("db", "upgrade", "ledger"),
            env=box.env,
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        try:
            with psycopg.connect(_libpq(pg_url), autocommit=True) as watcher:
                deadline = time.monotonic() + 300  # generous: a loaded machine starts slowly
                while True:  # readiness check: the upgrade is waiting on our advisory lock
                    waiting = watcher.execute(
                        "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' "
                        "AND objid = %s AND NOT granted",
                        (MIGRATION_LOCK,),
                    ).fetchone()
                    if waiting and waiting[0]:
                        break
                    assert time.monotonic() < deadline, "upgrade never reached the lock"
                    try:  # between looks, wait on the upgrade itself: an early end fails here
                        proc.wait(timeout=0.05)
                    except subprocess.TimeoutExpired:
                        continue
                    raise AssertionError(proc.communicate())
            assert proc.poll() is None  # still queued while the lock is held
            assert _revision_missing(pg_url)
        finally:
            holder.rollback()  # releases the transaction-level advisory lock
        out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err
    assert out.strip() == "ledger at head"
    assert _revision(pg_url) == [(LEDGER_HEAD,)]


def _revision_missing(url: str) -> bool:
    with psycopg.connect(_libpq(url), autocommit=True) as conn:
        row = conn.execute("SELECT to_regclass(%s)", (LEDGER_VERSION_TABLE,)).fetchone()
    return row == (None,)


def test_migrate_does_not_import_the_store(ledger_url: str) -> None:
    """ledger.migrate and ledger.store no longer import each other: migrating needs only the
    shared revision checks."""
    code = (
        "import sys; from sqlalchemy import create_engine; from ledger import migrate; "
        "migrate.upgrade_ledger(create_engine(sys.argv[1])); "
        "print('ledger.store' in sys.modules)"
    )
    url = ledger_url.replace("postgresql://", "postgresql+psycopg://", 1)
    out = subprocess.run(
        [sys.executable, "-c", code, url], capture_output=True, text=True, cwd=ROOT, check=True
    )
    assert out.stdout.strip() == "False"
    assert _revision(ledger_url) == [(LEDGER_HEAD,)]


@pytest.mark.parametrize("module", ["ledger.store", "ledger.migrate"])
def test_each_side_imports_alone(module: str) -> None:
    subprocess.run([sys.executable, "-c", f"import {module}"], cwd=ROOT, check=True)
