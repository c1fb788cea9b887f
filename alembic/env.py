"""Alembic environment for imagen's two independent branches.

- `ledger`: the local event store (SQLite or PostgreSQL), version table ledger_alembic_version.
- `usage`: the team's Supabase tables in schema `mai`, version table imagen_usage_alembic_version.

The branches live in different databases, so each keeps its own version table. The target
branch comes from the caller (`imagen db upgrade`, the ledger opener) or from the revision
argument (`alembic upgrade usage@head`).
"""

from __future__ import annotations

from logging.config import fileConfig

from sqlalchemy import create_engine, pool

from alembic import context

config = context.config
if config.config_file_name is not None and config.attributes.get("connection") is None:
    fileConfig(config.config_file_name, disable_existing_loggers=False)

VERSION_TABLES = {"ledger": "ledger_alembic_version", "usage": "imagen_usage_alembic_version"}


def _branch() -> str:
    branch = config.attributes.get("branch")
    if branch:
        return branch
    argument = str(context.get_revision_argument() or "")
    for name in VERSION_TABLES:
        if argument.startswith(name) or f"{name}_" in argument or f"{name}@" in argument:
            return name
    raise SystemExit("name the branch: alembic upgrade ledger@head | usage@head")


def _url(branch: str) -> str:
    url = context.get_x_argument(as_dictionary=True).get("url")
    if url:
        return url
    from imagen.app.config import migration_url

    return migration_url(branch)


def run() -> None:
    branch = _branch()
    options = {"version_table": VERSION_TABLES[branch], "transactional_ddl": True}
    connection = config.attributes.get("connection")
    if connection is not None:
        context.configure(connection=connection, **options)
        with context.begin_transaction():
            context.run_migrations()
        return
    engine = create_engine(_url(branch), poolclass=pool.NullPool)
    with engine.connect() as conn:
        context.configure(connection=conn, **options)
        with context.begin_transaction():
            context.run_migrations()
    engine.dispose()


if context.is_offline_mode():
    raise SystemExit("offline SQL generation is not supported; pass a database URL")
run()
