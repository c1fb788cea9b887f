"""A throwaway PostgreSQL cluster started from the local binaries, for tests and benchmarks.

`initdb` and `pg_ctl` refuse to run as root, so when we are root the cluster is created and run
as the `postgres` system user (which the Debian package creates).
"""

from __future__ import annotations

import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import uuid
from pathlib import Path

_SEARCH_DIRS = ("/usr/lib/postgresql",)


class PostgresUnavailable(RuntimeError):
    """No PostgreSQL server binaries on this machine."""


def find_bin(name: str) -> str | None:
    """Locate a server binary: PATH first, then Debian's versioned directories (newest first)."""
    found = shutil.which(name)
    if found:
        return found
    for base in _SEARCH_DIRS:
        root = Path(base)
        if root.is_dir():
            for version in sorted(root.iterdir(), reverse=True):
                candidate = version / "bin" / name
                if candidate.exists():
                    return str(candidate)
    return None


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class PostgresCluster:
    """`with PostgresCluster() as pg: pg.url` — a server on 127.0.0.1 that vanishes afterwards."""

    def __init__(self) -> None:
        initdb, pg_ctl = find_bin("initdb"), find_bin("pg_ctl")
        if not initdb or not pg_ctl:
            raise PostgresUnavailable("initdb/pg_ctl not found (install the postgresql package)")
        self._initdb, self._pg_ctl = initdb, pg_ctl
        self.port = free_port()
        self._tmp = Path(tempfile.mkdtemp(prefix="imagen-pg-"))
        self._data = self._tmp / "data"
        self._user: str | None = "postgres" if os.geteuid() == 0 else None
        self.superuser = self._user or pwd.getpwuid(os.geteuid()).pw_name

    @property
    def dsn(self) -> str:
        return f"postgresql://{self.superuser}@127.0.0.1:{self.port}/postgres"

    @property
    def url(self) -> str:
        return f"postgresql+psycopg://{self.superuser}@127.0.0.1:{self.port}/postgres"

    def _run(self, *argv: str) -> None:
        cmd = list(argv)
        if self._user:
            cmd = ["runuser", "-u", self._user, "--", *cmd]
        result = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
        if result.returncode != 0:
            raise RuntimeError(
                f"{argv[0]} failed: {result.stderr.strip() or result.stdout.strip()}"
            )

    def start(self) -> PostgresCluster:
        if self._user:
            shutil.chown(self._tmp, self._user, self._user)
        self._run(
            self._initdb,
            "-D",
            str(self._data),
            "-A",
            "trust",
            "-U",
            self.superuser,
            "-E",
            "UTF8",
            "--no-sync",
        )
        opts = (
            f"-p {self.port} -c listen_addresses=127.0.0.1 -k {self._tmp} -c fsync=off "
            "-c max_connections=200"
        )
        # pg_ctl -w returns only once the server accepts connections: our readiness check.
        self._run(
            self._pg_ctl,
            "-D",
            str(self._data),
            "-o",
            opts,
            "-l",
            str(self._tmp / "log"),
            "-w",
            "-t",
            "60",
            "start",
        )
        return self

    def stop(self) -> None:
        try:
            self._run(self._pg_ctl, "-D", str(self._data), "-m", "immediate", "-w", "stop")
        except Exception:
            pass
        shutil.rmtree(self._tmp, ignore_errors=True)

    def create_database(self, name: str | None = None) -> str:
        """A fresh database; returns its SQLAlchemy URL."""
        return create_database(self.url, name)

    def __enter__(self) -> PostgresCluster:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def create_database(server_url: str, name: str | None = None) -> str:
    """Create a database on the server at `server_url` and return its SQLAlchemy URL."""
    import psycopg
    from sqlalchemy.engine import make_url

    name = name or f"t_{uuid.uuid4().hex[:12]}"
    url = make_url(server_url)
    conninfo = url.set(drivername="postgresql").render_as_string(hide_password=False)
    with psycopg.connect(conninfo, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    return url.set(database=name).render_as_string(hide_password=False)
