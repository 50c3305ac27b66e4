"""inbound messages: seen MessageSids, and opt-out changes ordered by the message that made them

A signed inbound webhook proves Twilio sent it, not that it is new: the same request can come
again (Twilio's retry, or a captured request replayed). inbound_messages keeps every MessageSid
once; opt_outs keeps when the message that set each row's state happened (state_at), so an older
message arriving later cannot undo a newer one. Existing rows take their updated_at as state_at.
opted_out_at becomes nullable: a START with no opt-out before it now leaves a row (inactive) that
holds its time.

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-07 23:40:00.000000
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "inbound_messages",
        sa.Column("sid", sa.String(length=64), nullable=False),
        sa.Column("phone", sa.String(length=32), nullable=False),
        sa.Column("action", sa.String(length=16), nullable=True),
        sa.Column("message_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("twilio_created_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("received_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("applied", sa.Boolean(), nullable=False),
        sa.PrimaryKeyConstraint("sid", name=op.f("pk_inbound_messages")),
    )
    with op.batch_alter_table("opt_outs") as batch:
        batch.add_column(sa.Column("state_at", sa.DateTime(timezone=True), nullable=True))
        batch.add_column(sa.Column("state_sid", sa.String(length=64), nullable=True))
    op.execute("UPDATE opt_outs SET state_at = updated_at")
    with op.batch_alter_table("opt_outs") as batch:
        batch.alter_column("state_at", existing_type=sa.DateTime(timezone=True), nullable=False)
        batch.alter_column("opted_out_at", existing_type=sa.DateTime(timezone=True), nullable=True)


def downgrade() -> None:
    op.execute("DELETE FROM opt_outs WHERE opted_out_at IS NULL")
    with op.batch_alter_table("opt_outs") as batch:
        batch.alter_column("opted_out_at", existing_type=sa.DateTime(timezone=True), nullable=False)
        batch.drop_column("state_sid")
        batch.drop_column("state_at")
    op.drop_table("inbound_messages")
