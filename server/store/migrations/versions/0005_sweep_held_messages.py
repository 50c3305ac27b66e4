"""sweep staging: held reminders wait in the database, not in memory, until the sweep's last page

Grouping and per-recipient caps need the whole sweep, so the messages of grouping and ladder rules
wait for its end. They used to wait in a Python list (memory grew with the invoices); they now
wait in this table, written with the page that planned them and read back a recipient at a time.

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-25 15:00:00.000000
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "sweep_held_messages",
        sa.Column("run_id", sa.String(length=32), nullable=False),
        sa.Column("seq", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("company_id", sa.String(length=64), nullable=False),
        sa.Column("entity", sa.String(length=64), nullable=False),
        sa.Column("phase", sa.SmallInteger(), nullable=False),
        sa.Column("part", sa.String(length=128), nullable=False),
        sa.Column(
            "message",
            sa.JSON().with_variant(postgresql.JSONB(), "postgresql"),
            nullable=False,
        ),
        sa.PrimaryKeyConstraint("run_id", "seq", name=op.f("pk_sweep_held_messages")),
    )
    op.create_index(
        op.f("ix_sweep_held_messages_run_id_phase_part_seq"),
        "sweep_held_messages",
        ["run_id", "phase", "part", "seq"],
        unique=False,
    )


def downgrade() -> None:
    op.drop_index(op.f("ix_sweep_held_messages_run_id_phase_part_seq"), table_name="sweep_held_messages")
    op.drop_table("sweep_held_messages")
