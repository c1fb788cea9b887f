"""usage: mai.imagen_ledger_heads becomes an append-only record, one row per report.

Revision ID: usage_0002
Revises: usage_0001
Create Date: 2026-11-25

Before, each ledger had one row that every sync overwrote, and service_role could UPDATE it: a
rewritten ledger was laundered by the next sync, and a key holder could move a head. Now each
report is a new row (existing rows are kept as the first reports), `(ledger_id, position)` is
unique so no position can be reported with two hashes, service_role gets SELECT and INSERT only,
and a trigger refuses UPDATE, DELETE and TRUNCATE for every role (the owner included), so a
head can be added but never moved. `location` says where on `machine` the ledger lives, so a
ledger that was replaced (a new id at the same place) is noticed. `reported_at` is the
database's clock, not the reporting machine's.
"""

from alembic import op

revision = "usage_0002"
down_revision = "usage_0001"
branch_labels = None
depends_on = None

_UPGRADE = [
    "ALTER TABLE mai.imagen_ledger_heads DROP CONSTRAINT imagen_ledger_heads_pkey",
    "ALTER TABLE mai.imagen_ledger_heads ADD COLUMN report_id bigint GENERATED ALWAYS AS IDENTITY",
    "ALTER TABLE mai.imagen_ledger_heads ADD CONSTRAINT imagen_ledger_heads_pkey "
    "PRIMARY KEY (report_id)",
    "ALTER TABLE mai.imagen_ledger_heads ADD COLUMN location text",
    "ALTER TABLE mai.imagen_ledger_heads ALTER COLUMN reported_at SET DEFAULT now()",
    "ALTER TABLE mai.imagen_ledger_heads ADD CONSTRAINT imagen_ledger_heads_position_key "
    "UNIQUE (ledger_id, position)",
    "CREATE INDEX imagen_ledger_heads_machine_idx ON mai.imagen_ledger_heads (machine, location)",
    """CREATE FUNCTION mai.imagen_ledger_heads_append_only() RETURNS trigger
       LANGUAGE plpgsql AS $$
       BEGIN
         RAISE EXCEPTION 'mai.imagen_ledger_heads is append-only: % rejected', TG_OP
           USING ERRCODE = 'insufficient_privilege';
       END $$""",
    """CREATE TRIGGER imagen_ledger_heads_no_update_delete
       BEFORE UPDATE OR DELETE ON mai.imagen_ledger_heads
       FOR EACH ROW EXECUTE FUNCTION mai.imagen_ledger_heads_append_only()""",
    """CREATE TRIGGER imagen_ledger_heads_no_truncate
       BEFORE TRUNCATE ON mai.imagen_ledger_heads
       FOR EACH STATEMENT EXECUTE FUNCTION mai.imagen_ledger_heads_append_only()""",
    "REVOKE ALL ON mai.imagen_ledger_heads FROM PUBLIC",
    """DO $$
       DECLARE r text;
       BEGIN
         FOREACH r IN ARRAY ARRAY['anon', 'authenticated', 'service_role'] LOOP
           IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = r) THEN
             EXECUTE format('REVOKE ALL ON mai.imagen_ledger_heads FROM %I', r);
             EXECUTE format('REVOKE UPDATE, DELETE, TRUNCATE ON mai.imagen_usage FROM %I', r);
           END IF;
         END LOOP;
         IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'service_role') THEN
           GRANT SELECT, INSERT ON mai.imagen_ledger_heads TO service_role;
         END IF;
       END $$""",
]

_DOWNGRADE = [
    "DROP TRIGGER imagen_ledger_heads_no_truncate ON mai.imagen_ledger_heads",
    "DROP TRIGGER imagen_ledger_heads_no_update_delete ON mai.imagen_ledger_heads",
    "DROP FUNCTION mai.imagen_ledger_heads_append_only()",
    # One row per ledger again: its furthest report.
    """DELETE FROM mai.imagen_ledger_heads h USING mai.imagen_ledger_heads later
       WHERE h.ledger_id = later.ledger_id AND h.position < later.position""",
    "DROP INDEX mai.imagen_ledger_heads_machine_idx",
    "ALTER TABLE mai.imagen_ledger_heads DROP CONSTRAINT imagen_ledger_heads_position_key",
    "ALTER TABLE mai.imagen_ledger_heads ALTER COLUMN reported_at DROP DEFAULT",
    "ALTER TABLE mai.imagen_ledger_heads DROP COLUMN location",
    "ALTER TABLE mai.imagen_ledger_heads DROP CONSTRAINT imagen_ledger_heads_pkey",
    "ALTER TABLE mai.imagen_ledger_heads DROP COLUMN report_id",
    "ALTER TABLE mai.imagen_ledger_heads ADD CONSTRAINT imagen_ledger_heads_pkey "
    "PRIMARY KEY (ledger_id)",
    """DO $$
       BEGIN
         IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'service_role') THEN
           GRANT SELECT, INSERT, UPDATE ON mai.imagen_usage TO service_role;
           GRANT SELECT, INSERT, UPDATE ON mai.imagen_ledger_heads TO service_role;
         END IF;
       END $$""",
]


def upgrade() -> None:
    for statement in _UPGRADE:
        op.execute(statement)


def downgrade() -> None:
    for statement in _DOWNGRADE:
        op.execute(statement)
