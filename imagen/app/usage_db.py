"""The team's usage database (`mai` on Supabase): migrate it and (re)apply its grants.

Grants are applied on every `imagen db upgrade usage`, not only when a migration runs: the
role `service_role` may be created after the tables (a fresh database, the PostgREST double
started later), and a grant skipped then would otherwise never be made.
"""

from __future__ import annotations

from dataclasses import dataclass

from imagen.app.errors import UserError

API_ROLE = "service_role"
# What imagen's sync needs and no more: usage rows and head reports are added and read, never
# changed (an ignore-duplicates upsert is ON CONFLICT DO NOTHING, which needs INSERT only).
_GRANTS = [
    "GRANT USAGE ON SCHEMA mai TO service_role",
    "REVOKE UPDATE, DELETE, TRUNCATE ON mai.imagen_usage FROM service_role",
    "GRANT SELECT, INSERT ON mai.imagen_usage TO service_role",
    "REVOKE ALL ON mai.imagen_ledger_heads FROM service_role",
    "GRANT SELECT, INSERT ON mai.imagen_ledger_heads TO service_role",
]
GRANTS_TEXT = "USAGE on mai; SELECT, INSERT on mai.imagen_usage and mai.imagen_ledger_heads"


@dataclass(frozen=True)
class UsageUpgrade:
    grants_applied: bool  # False: service_role does not exist in that database


def upgrade(url: str) -> UsageUpgrade:
    """Migrate the usage branch to its head, then apply the grants, in one transaction."""
    from sqlalchemy import create_engine, text
    from sqlalchemy.exc import OperationalError

    from alembic import command
    from ledger.migrate import alembic_config

    if url.startswith("postgresql://"):
        url = "postgresql+psycopg://" + url.removeprefix("postgresql://")
    engine = create_engine(url)
    try:
        with engine.connect() as conn, conn.begin():
            command.upgrade(alembic_config(conn, "usage"), "usage@head")
            role = conn.execute(
                text("SELECT 1 FROM pg_roles WHERE rolname = :r"), {"r": API_ROLE}
            ).first()
            if role:
                for statement in _GRANTS:
                    conn.execute(text(statement))
    except OperationalError as exc:
        raise UserError(
            f"cannot connect to the usage database: {str(exc.orig).strip().splitlines()[0]}"
        ) from None
    finally:
        engine.dispose()
    return UsageUpgrade(grants_applied=role is not None)
