"""Shared fixtures: a real PostgreSQL server and ledger URLs for both engines."""

from __future__ import annotations

import os
import signal
import subprocess
from collections.abc import Iterator

import pytest

from imagen.testing.postgres import PostgresCluster, PostgresUnavailable, create_database

pytest_plugins = ["tests.support.echo", "tests.support.doubles"]


def pytest_configure(config: pytest.Config) -> None:
    # A suite started in the background by a shell without job control (`pytest &` in a
    # script, a CI harness) inherits SIGINT ignored, as POSIX asks of background jobs; Python
    # then installs no Ctrl-C handler, and every imagen the suite starts inherits the ignore
    # too and rightly sits through the Ctrl-C tests' SIGINT (those tests once hung in CI this
    # way). The suite plays a person at a terminal: its children start with Ctrl-C live.
    if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
        signal.signal(signal.SIGINT, signal.default_int_handler)


@pytest.fixture(autouse=True)
def _no_stray_processes() -> Iterator[None]:
    """Kill what a test started with Sandbox.popen and left running (a failed test's hung
    imagen), so it cannot reach a later test's double on a reused port."""
    from tests.support.cli import STARTED

    yield
    while STARTED:
        proc = STARTED.pop()
        if proc.poll() is None:
            proc.kill()
            try:
                proc.communicate(timeout=30)
            except subprocess.TimeoutExpired:
                pass


@pytest.fixture(scope="session")
def pg_server_url() -> Iterator[str]:
    """A PostgreSQL server URL: IMAGEN_TEST_DATABASE_URL, or a throwaway local cluster."""
    given = os.environ.get("IMAGEN_TEST_DATABASE_URL")
    if given:
        yield given
        return
    try:
        cluster = PostgresCluster().start()
    except PostgresUnavailable as exc:
        if os.environ.get("CI") == "true":
            pytest.fail(f"PostgreSQL is required under CI: {exc}")
        pytest.skip(str(exc))
    try:
        yield cluster.url
    finally:
        cluster.stop()


@pytest.fixture
def pg_url(pg_server_url: str) -> str:
    """A fresh, empty PostgreSQL database for one test."""
    return create_database(pg_server_url)


@pytest.fixture(params=["sqlite", "postgres"])
def ledger_url(request: pytest.FixtureRequest, tmp_path) -> str:  # type: ignore[no-untyped-def]
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'ledger.db'}"
    return request.getfixturevalue("pg_url")


# The owner's URL of each writer URL handed out (see `owner_of`).
_OWNERS: dict[str, str] = {}


@pytest.fixture(params=["sqlite", "postgres-owner", "postgres-writer"])
def store_url(request: pytest.FixtureRequest, tmp_path) -> str:  # type: ignore[no-untyped-def]
    """A ledger URL for the ledger suite: SQLite; PostgreSQL as the database's owner; and a
    team ledger on PostgreSQL as docs/usage.md sets it up, the suite running as its writer
    role (INSERT and SELECT on events only; tests/test_pg_roles.py)."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'ledger.db'}"
    if request.param == "postgres-owner":
        return request.getfixturevalue("pg_url")
    from tests.test_pg_roles import team_ledger

    owner, writer = team_ledger(request.getfixturevalue("pg_server_url"))
    _OWNERS[writer] = owner
    return writer


def owner_of(url: str) -> str:
    """The URL that owns the ledger at `url` (itself unless it is a writer role's)."""
    return _OWNERS.get(url, url)


def is_writer(url: str) -> bool:
    return url in _OWNERS
