"""credentials (encrypted at rest) and OTP-gated pending changes

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-25 12:00:00.000000
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

# Frozen copies of the column types as they were at this revision (never import the models here).
JSON = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

CHANGE_STATUSES = (
    "'new', 'pending', 'approved', 'writing', 'written', 'conflict', 'rejected', "
    "'code_expired', 'expired', 'failed'"
)


def upgrade() -> None:
    op.create_table(
        "credentials",
        sa.Column("name", sa.String(length=16), nullable=False),
        sa.Column("ciphertext", sa.Text(), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_by", sa.String(length=128), nullable=False),
        sa.CheckConstraint("name IN ('bc', 'twilio')", name=op.f("ck_credentials_name")),
        sa.PrimaryKeyConstraint("name", name=op.f("pk_credentials")),
    )
    op.create_table(
        "pending_changes",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("company_id", sa.String(length=64), nullable=False),
        sa.Column("entity", sa.String(length=64), nullable=False),
        sa.Column("record_id", sa.String(length=64), nullable=False),
        sa.Column("changes", JSON, nullable=False),
        sa.Column("etag", sa.String(length=255), nullable=False),
        sa.Column("approver", sa.String(length=32), nullable=False),
        sa.Column("approver_role", sa.String(length=64), nullable=True),
        sa.Column("channel", sa.String(length=8), nullable=False),
        sa.Column("verification_sid", sa.String(length=64), nullable=True),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("max_attempts", sa.Integer(), nullable=False),
        sa.Column("requested_by", sa.String(length=128), nullable=False),
        sa.Column("reason", sa.Text(), nullable=True),
        sa.Column("result_etag", sa.String(length=255), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("written_at", sa.DateTime(timezone=True), nullable=True),
        sa.CheckConstraint(f"status IN ({CHANGE_STATUSES})", name=op.f("ck_pending_changes_status")),
        sa.CheckConstraint("channel IN ('sms', 'call')", name=op.f("ck_pending_changes_channel")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_pending_changes")),
        sa.UniqueConstraint("verification_sid", name=op.f("uq_pending_changes_verification_sid")),
    )
    op.create_index(
        op.f("ix_pending_changes_status_expires_at"),
        "pending_changes",
        ["status", "expires_at"],
        unique=False,
    )
    op.create_index(
        op.f("ix_pending_changes_entity_record_id"),
        "pending_changes",
        ["entity", "record_id"],
        unique=False,
    )


def downgrade() -> None:
    op.drop_index(op.f("ix_pending_changes_entity_record_id"), table_name="pending_changes")
    op.drop_index(op.f("ix_pending_changes_status_expires_at"), table_name="pending_changes")
    op.drop_table("pending_changes")
    op.drop_table("credentials")
