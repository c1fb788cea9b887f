"""Shared fixtures: a real PostgreSQL server and ledger URLs for both engines."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from imagen.testing.postgres import PostgresCluster, PostgresUnavailable, create_database

pytest_plugins = ["tests.support.echo", "tests.support.doubles"]


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


@pytest.fixture(params=["sqlite", "sqlite-sqlalchemy", "postgres"])
def store_url(request: pytest.FixtureRequest, tmp_path) -> str:  # type: ignore[no-untyped-def]
    """A ledger URL for each store implementation (the ledger suite): `sqlite:///` is served
    by the standard-library store, `sqlite+pysqlite:///` (the driver named) by the SQLAlchemy
    one, as PostgreSQL is."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'ledger.db'}"
    if request.param == "sqlite-sqlalchemy":
        return f"sqlite+pysqlite:///{tmp_path / 'ledger.db'}"
    return request.getfixturevalue("pg_url")
