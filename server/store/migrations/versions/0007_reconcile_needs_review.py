"""reconcile: a send whose outcome cannot be proven waits for an operator (needs_review)

The outbox's status CHECK admits one more value, 'needs_review': the reconciler could prove neither
that Twilio holds the message nor that it does not, so a person decides (`ml-connector messages
resolve`). SQLite rebuilds the table (batch mode) to change a CHECK; PostgreSQL drops and adds the
constraint. Downgrading first hands any needs_review row back to 'unknown' (reconciled again), so
the old CHECK holds.

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-07 23:40:00.000000
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# As in 0001, plus needs_review (the values are fixed here: a later change needs its own migration).
BEFORE = (
    "planned",
    "held",
    "submitting",
    "unknown",
    "queued",
    "sending",
    "sent",
    "delivered",
    "undelivered",
    "failed",
    "skipped",
    "opted_out",
)
AFTER = (*BEFORE[:4], "needs_review", *BEFORE[4:])


def _in(column: str, values: Sequence[str]) -> str:
    items = ", ".join(f"'{v}'" for v in values)
    return f"{column} IN ({items})"


def _replace_status_check(before: Sequence[str], after: Sequence[str]) -> None:
    if op.get_bind().dialect.name != "sqlite":
        op.drop_constraint(op.f("ck_outbox_status"), "outbox", type_="check")
        op.create_check_constraint(op.f("ck_outbox_status"), "outbox", _in("status", after))
        return
    # SQLite changes a CHECK only by rebuilding the table, and the rebuild's DROP of the old outbox
    # fails while message_events rows refer to it (foreign keys are on, and cannot be turned off
    # inside the migration's transaction). No row's stored form changes here, so the table's
    # definition is edited in place, SQLite's own procedure for changing a table's constraints
    # (https://www.sqlite.org/lang_altertable.html#otheralter): every row already satisfies the
    # new rule (the downgrade first moves needs_review rows back to 'unknown').
    bind = op.get_bind()
    old_sql = bind.execute(
        sa.text("SELECT sql FROM sqlite_master WHERE type = 'table' AND name = 'outbox'")
    ).scalar_one()
    old_check, new_check = _in("status", before), _in("status", after)
    if old_check not in old_sql:
        raise RuntimeError(f"outbox: expected the CHECK {old_check!r} in its definition")
    version = int(bind.execute(sa.text("PRAGMA schema_version")).scalar_one())
    bind.execute(sa.text("PRAGMA writable_schema = ON"))
    bind.execute(
        sa.text("UPDATE sqlite_master SET sql = :sql WHERE type = 'table' AND name = 'outbox'"),
        {"sql": old_sql.replace(old_check, new_check)},
    )
    bind.execute(sa.text(f"PRAGMA schema_version = {version + 1}"))
    bind.execute(sa.text("PRAGMA writable_schema = OFF"))


def upgrade() -> None:
    _replace_status_check(BEFORE, AFTER)


def downgrade() -> None:
    op.execute(sa.text("UPDATE outbox SET status = 'unknown' WHERE status = 'needs_review'"))
    _replace_status_check(AFTER, BEFORE)
