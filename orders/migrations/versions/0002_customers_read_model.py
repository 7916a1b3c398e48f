"""customers: the users orders knows of, fed by user events

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-28 03:50:00.704995
"""

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade():
    # no backfill: a user created before this table existed is asked of the
    # users service on their first order, then recorded (orders.logic)
    op.create_table(
        "customers",
        sa.Column("user_id", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("deleted_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("user_id"),
    )


def downgrade():
    op.drop_table("customers")
