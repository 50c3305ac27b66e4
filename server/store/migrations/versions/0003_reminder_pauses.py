"""reminder pauses and grouped-reminder links on the outbox

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-25 13:00:00.000000
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "reminder_pauses",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("scope", sa.String(length=16), nullable=False),
        sa.Column("subject", sa.String(length=64), nullable=False),
        sa.Column("company_id", sa.String(length=64), nullable=True),
        sa.Column("until", sa.DateTime(timezone=True), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("created_by", sa.String(length=128), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("lifted_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("lifted_by", sa.String(length=128), nullable=True),
        sa.CheckConstraint("scope IN ('customer', 'invoice')", name=op.f("ck_reminder_pauses_scope")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_reminder_pauses")),
    )
    op.create_index(
        op.f("ix_reminder_pauses_scope_subject"), "reminder_pauses", ["scope", "subject"], unique=False
    )
    op.create_index(op.f("ix_reminder_pauses_until"), "reminder_pauses", ["until"], unique=False)
    op.add_column("outbox", sa.Column("group_job_id", sa.String(length=128), nullable=True))
    op.create_index(op.f("ix_outbox_group_job_id"), "outbox", ["group_job_id"], unique=False)


def downgrade() -> None:
    op.drop_index(op.f("ix_outbox_group_job_id"), table_name="outbox")
    with op.batch_alter_table("outbox") as batch:
        batch.drop_column("group_job_id")
    op.drop_index(op.f("ix_reminder_pauses_until"), table_name="reminder_pauses")
    op.drop_index(op.f("ix_reminder_pauses_scope_subject"), table_name="reminder_pauses")
    op.drop_table("reminder_pauses")
