"""usage: one row per image with an outcome column; seeds up to 2^64-1.

Revision ID: usage_0003
Revises: usage_0002
Create Date: 2026-11-25

`outcome` tells images ("image") from predictions the provider accepted and that then failed
("paid_failed"), so spend and image counts are separate. ComfyUI seeds run to 2^64-1, past a
signed bigint: the column becomes numeric(20, 0), which holds every one exactly.
"""

import sqlalchemy as sa

from alembic import op

revision = "usage_0003"
down_revision = "usage_0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column(
        "imagen_usage",
        sa.Column("outcome", sa.Text, nullable=False, server_default="image"),
        schema="mai",
    )
    op.alter_column(
        "imagen_usage",
        "seed",
        type_=sa.Numeric(20, 0),
        existing_type=sa.BigInteger,
        schema="mai",
    )


def downgrade() -> None:
    op.alter_column(
        "imagen_usage",
        "seed",
        type_=sa.BigInteger,
        existing_type=sa.Numeric(20, 0),
        schema="mai",
        postgresql_using="CASE WHEN seed <= 9223372036854775807 THEN seed::bigint END",
    )
    op.drop_column("imagen_usage", "outcome", schema="mai")
