"""token versions and the shared login throttle

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-02 06:40:00.000000
"""

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade():
    with op.batch_alter_table("users", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("token_version", sa.Integer(), server_default="0", nullable=False)
        )
    op.create_table(
        "login_failures",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("key", sa.String(length=300), nullable=False),
        sa.Column("failed_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("login_failures", schema=None) as batch_op:
        batch_op.create_index("ix_login_failures_key_failed_at", ["key", "failed_at"])
        batch_op.create_index(batch_op.f("ix_login_failures_failed_at"), ["failed_at"])
    op.create_table(
        "login_locks",
        sa.Column("key", sa.String(length=300), nullable=False),
        sa.Column("locked_until", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("key"),
    )


def downgrade():
    op.drop_table("login_locks")
    with op.batch_alter_table("login_failures", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_login_failures_failed_at"))
        batch_op.drop_index("ix_login_failures_key_failed_at")
    op.drop_table("login_failures")
    with op.batch_alter_table("users", schema=None) as batch_op:
        batch_op.drop_column("token_version")
