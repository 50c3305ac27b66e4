"""BC subscriptions keep only a hash of their clientState

The clientState is a shared secret we only ever need to compare, so the store keeps its SHA-256
(the value is 256 random bits: a plain hash cannot be reversed or guessed). Existing secrets are
hashed in place.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-25 14:00:00.000000
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("bc_subscriptions") as batch:
        batch.alter_column(
            "client_state_secret",
            new_column_name="client_state_hash",
            existing_type=sa.String(length=255),
            type_=sa.String(length=80),
            existing_nullable=False,
        )
    table = sa.table("bc_subscriptions", sa.column("id", sa.Integer), sa.column("client_state_hash", sa.String))
    bind = op.get_bind()
    for row_id, value in bind.execute(sa.select(table.c.id, table.c.client_state_hash)).all():
        if not value.startswith("sha256:"):
            digest = "sha256:" + hashlib.sha256(value.encode("utf-8")).hexdigest()
            bind.execute(table.update().where(table.c.id == row_id).values(client_state_hash=digest))


def downgrade() -> None:
    # A hash cannot be turned back into the secret: the subscriptions must be re-created.
    with op.batch_alter_table("bc_subscriptions") as batch:
        batch.alter_column(
            "client_state_hash",
            new_column_name="client_state_secret",
            existing_type=sa.String(length=80),
            type_=sa.String(length=255),
            existing_nullable=False,
        )
