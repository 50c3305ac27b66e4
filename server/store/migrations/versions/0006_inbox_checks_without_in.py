"""notification inbox: CHECK constraints as OR-ed comparisons, not IN lists

SQLite evaluates `status IN ('pending', 'processing', 'done', 'failed')` in a CHECK by building a
temporary index of the list each time the INSERT runs, that is once per row of the webhook's
executemany: the inbox's two such checks cost about half the database time of a 100-item batch.
The same rule written as `status = 'pending' OR status = 'processing' OR ...` costs nothing
measurable. The rules themselves do not change. SQLite rebuilds the table (batch mode) to change
a CHECK; PostgreSQL drops and adds the two constraints.

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-25 16:00:00.000000
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# As in 0001 (the values are fixed here: a later change to the enums needs its own migration).
STATUSES = ("pending", "processing", "done", "failed")
CHANGE_TYPES = ("created", "updated", "deleted", "collection")


def _in(column: str, values: Sequence[str]) -> str:
    items = ", ".join(f"'{v}'" for v in values)
    return f"{column} IN ({items})"


def _any_of(column: str, values: Sequence[str]) -> str:
    return " OR ".join(f"{column} = '{v}'" for v in values)


def _replace_checks(*, any_of: bool) -> None:
    render = _any_of if any_of else _in
    with op.batch_alter_table("notification_inbox") as batch:
        batch.drop_constraint(op.f("ck_notification_inbox_status"), type_="check")
        batch.drop_constraint(op.f("ck_notification_inbox_change_type"), type_="check")
        batch.create_check_constraint(op.f("ck_notification_inbox_status"), render("status", STATUSES))
        batch.create_check_constraint(
            op.f("ck_notification_inbox_change_type"), render("change_type", CHANGE_TYPES)
        )


def upgrade() -> None:
    _replace_checks(any_of=True)


def downgrade() -> None:
    _replace_checks(any_of=False)
