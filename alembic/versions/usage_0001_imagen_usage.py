"""usage: mai.imagen_usage and mai.imagen_ledger_heads for Supabase, with grants and RLS.

Revision ID: usage_0001
Revises:
Create Date: 2026-11-24

New tables in a custom schema get no automatic grants on Supabase, so they are explicit here.
RLS is enabled with no policies: only service_role (BYPASSRLS) reads and writes.
"""

import sqlalchemy as sa

from alembic import op

revision = "usage_0001"
down_revision = None
branch_labels = ("usage",)
depends_on = None

_GRANTS = """
DO $$
BEGIN
  IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'service_role') THEN
    GRANT USAGE ON SCHEMA mai TO service_role;
    GRANT SELECT, INSERT, UPDATE ON mai.imagen_usage TO service_role;
    GRANT SELECT, INSERT, UPDATE ON mai.imagen_ledger_heads TO service_role;
  END IF;
END $$;
"""


def upgrade() -> None:
    op.execute("CREATE SCHEMA IF NOT EXISTS mai")
    op.create_table(
        "imagen_usage",
        sa.Column("id", sa.Text, primary_key=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("backend", sa.Text, nullable=False),
        sa.Column("model", sa.Text, nullable=False),
        sa.Column("seed", sa.BigInteger),
        sa.Column("prompt_hash", sa.String(64), nullable=False),
        sa.Column("latency_ms", sa.Integer),
        sa.Column("cost_usd_estimate", sa.Numeric(12, 6)),
        sa.Column("caller", sa.Text),
        schema="mai",
    )
    op.create_index(
        "imagen_usage_created_at_idx", "imagen_usage", [sa.text("created_at DESC")], schema="mai"
    )
    op.create_index("imagen_usage_caller_idx", "imagen_usage", ["caller"], schema="mai")
    op.create_table(
        "imagen_ledger_heads",
        sa.Column("ledger_id", sa.String(64), primary_key=True),
        sa.Column("machine", sa.Text, nullable=False),
        sa.Column("position", sa.BigInteger, nullable=False),
        sa.Column("hash", sa.String(64), nullable=False),
        sa.Column("reported_at", sa.DateTime(timezone=True), nullable=False),
        schema="mai",
    )
    op.execute("ALTER TABLE mai.imagen_usage ENABLE ROW LEVEL SECURITY")
    op.execute("ALTER TABLE mai.imagen_ledger_heads ENABLE ROW LEVEL SECURITY")
    op.execute(_GRANTS)


def downgrade() -> None:
    op.drop_table("imagen_ledger_heads", schema="mai")
    op.drop_index("imagen_usage_caller_idx", table_name="imagen_usage", schema="mai")
    op.drop_index("imagen_usage_created_at_idx", table_name="imagen_usage", schema="mai")
    op.drop_table("imagen_usage", schema="mai")
