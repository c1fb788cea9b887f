"""ledger: protected streams (only the owner role may append to them) and who recorded an event.

Revision ID: ledger_0002
Revises: ledger_0001
Create Date: 2026-12-06

`ledger_protected_streams` holds stream-id prefixes. On PostgreSQL a trigger refuses an INSERT
into `events` whose stream id starts with one of them unless the inserting role is a member of
the role that owns `events` (the ledger's owner, who migrates it): a writer role may append to
every other stream, but not to these, whatever client it uses. The same trigger records the
inserting role in `events.recorded_by` (it overrides whatever the INSERT gave, so a writer cannot
claim to be the owner). `recorded_by` is outside the hash chain: existing events keep their
hashes, and hold NULL (not known). Only the owner may write the prefixes table (the writer is
granted nothing on it); which prefixes are protected is the application's to register.

SQLite has no roles: the table exists, nothing enforces it (on a one-person ledger, whoever can
append can also edit the file).

`events` is altered in place (ADD COLUMN, CREATE INDEX), never rebuilt: its immutability
triggers stay. The index on (type, stream_id) lets a reader find the events of a few types
without reading the whole table (imagen's budget check reads jobs' ends and requests so).
"""

import sqlalchemy as sa

from alembic import op

revision = "ledger_0002"
down_revision = "ledger_0001"
branch_labels = None
depends_on = None

TABLE = "ledger_protected_streams"


def _pg_statements(schema: str) -> list[str]:
    # Names qualified by the ledger's schema, and a search_path with pg_temp last: a temporary
    # table of the same name (any role may make one) must not stand in for the real list.
    s = f'"{schema}"'
    return [
        f"GRANT SELECT ON {s}.{TABLE} TO PUBLIC",
        f"ALTER TABLE {s}.events ADD COLUMN recorded_by TEXT",
        f"ALTER TABLE {s}.events ALTER COLUMN recorded_by SET DEFAULT current_user",
        f"""CREATE FUNCTION {s}.events_protected_streams() RETURNS trigger LANGUAGE plpgsql
            SET search_path = {s}, pg_catalog, pg_temp AS $$
            DECLARE owner_role oid;
            BEGIN
              NEW.recorded_by := current_user;
              IF EXISTS (SELECT 1 FROM {s}.{TABLE} p
                         WHERE left(NEW.stream_id, length(p.prefix)) = p.prefix) THEN
                SELECT relowner INTO owner_role FROM pg_catalog.pg_class WHERE oid = TG_RELID;
                IF NOT pg_catalog.pg_has_role(current_user, owner_role, 'MEMBER') THEN
                  RAISE EXCEPTION 'stream % is protected: only the ledger''s owner role % may append to it',
                    NEW.stream_id, pg_catalog.pg_get_userbyid(owner_role)
                    USING ERRCODE = 'insufficient_privilege';
                END IF;
              END IF;
              RETURN NEW;
            END $$""",
        f"""CREATE TRIGGER events_protected_streams BEFORE INSERT ON {s}.events
            FOR EACH ROW EXECUTE FUNCTION {s}.events_protected_streams()""",
    ]


def upgrade() -> None:
    op.create_table(TABLE, sa.Column("prefix", sa.String(200), primary_key=True))
    op.create_index("ix_events_type_stream", "events", ["type", "stream_id"])
    bind = op.get_bind()
    if bind.dialect.name == "postgresql":
        schema = bind.exec_driver_sql("SELECT current_schema()").scalar()
        for statement in _pg_statements(str(schema)):
            op.execute(statement)


def downgrade() -> None:
    op.drop_index("ix_events_type_stream", "events")
    if op.get_bind().dialect.name == "postgresql":
        op.execute("DROP TRIGGER IF EXISTS events_protected_streams ON events")
        op.execute("DROP FUNCTION IF EXISTS events_protected_streams()")
        op.execute("ALTER TABLE events DROP COLUMN IF EXISTS recorded_by")
    op.drop_table(TABLE)
