"""What the reminder steps (server/planning/reminders.py) read from the store before they insert.

The job ids already in the outbox, the customer payments seen lately (payment grace) and the
reminders each recipient already had (the caps). Functions take a Session and never commit.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime

import sqlalchemy as sa
from sqlmodel import Session, col, select

from server.store.states import MessageStatus
from server.store.tables import OutboxMessage, RecordSnapshot

NOT_COUNTED = (MessageStatus.SKIPPED.value, MessageStatus.OPTED_OUT.value)
_BATCH = 500


def existing_job_ids(session: Session, job_ids: Iterable[str]) -> set[str]:
    wanted = list(dict.fromkeys(job_ids))
    found: set[str] = set()
    for start in range(0, len(wanted), _BATCH):
        chunk = wanted[start : start + _BATCH]
        found |= set(
            session.exec(select(OutboxMessage.job_id).where(col(OutboxMessage.job_id).in_(chunk))).all()
        )
    return found


def recent_payments(session: Session, company_id: str, since: datetime) -> dict[str, datetime]:
    """Invoice id/number (lower case) -> when a customer payment line applying to it was last seen."""
    rows = session.exec(
        select(RecordSnapshot).where(
            RecordSnapshot.company_id == company_id,
            RecordSnapshot.entity == "customerPayments",
            col(RecordSnapshot.seen_at) >= since,
        )
    ).all()
    seen: dict[str, datetime] = {}
    for row in rows:
        for key in ("appliesToInvoiceId", "appliesToInvoiceNumber"):
            value = row.data.get(key)
            if value:
                name = str(value).lower()
                if name not in seen or row.seen_at > seen[name]:
                    seen[name] = row.seen_at
    return seen


def sent_counts(
    session: Session, recipients: Iterable[str], rule_ids: Iterable[str], since: datetime
) -> dict[str, int]:
    """Reminder messages (not skipped) per recipient created since `since`."""
    wanted = list(dict.fromkeys(recipients))
    rules = list(rule_ids)
    counts: dict[str, int] = {}
    if not wanted or not rules:
        return counts
    for start in range(0, len(wanted), _BATCH):
        chunk = wanted[start : start + _BATCH]
        query = (
            sa.select(col(OutboxMessage.recipient), sa.func.count())
            .where(
                col(OutboxMessage.recipient).in_(chunk),
                col(OutboxMessage.rule_id).in_(rules),
                col(OutboxMessage.created_at) >= since,
                col(OutboxMessage.status).not_in(NOT_COUNTED),
            )
            .group_by(col(OutboxMessage.recipient))
        )
        for recipient, count in session.execute(query).all():
            counts[str(recipient)] = int(count)
    return counts
