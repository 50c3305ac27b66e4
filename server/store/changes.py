"""Pending changes of the OTP gate (server/changes/gate.py): reads and conditional transitions.

Every transition is a conditional UPDATE (`... WHERE id = ? AND status IN (...)`), so the database
decides which of two racing requests wins. Functions take a Session and never commit (the caller's
session_scope does).
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlmodel import Session, col, select

from server.store.db import is_postgres
from server.store.tables import PendingChange

OPEN = ("new", "pending")


def transition(
    session: Session, change_id: int, from_: Collection[str], to: str, now: datetime, **values: Any
) -> bool:
    """Move a change to `to` only if it is still in one of `from_`: the database decides who wins."""
    stmt = (
        sa.update(PendingChange)
        .where(col(PendingChange.id) == change_id, col(PendingChange.status).in_(list(from_)))
        .values(status=to, updated_at=now, **values)
    )
    result = session.execute(stmt)
    return bool(getattr(result, "rowcount", 0) == 1)


def get_change(session: Session, change_id: int) -> PendingChange | None:
    return session.get(PendingChange, change_id)


def list_changes(
    session: Session,
    *,
    statuses: Collection[str] | None = None,
    limit: int = 50,
    before_id: int | None = None,
) -> list[PendingChange]:
    """Newest first; pass the last id seen as before_id for the next page."""
    stmt = select(PendingChange).order_by(col(PendingChange.id).desc()).limit(max(1, min(limit, 500)))
    if statuses:
        stmt = stmt.where(col(PendingChange.status).in_(list(statuses)))
    if before_id is not None:
        stmt = stmt.where(col(PendingChange.id) < before_id)
    return list(session.exec(stmt).all())


def due_to_expire(session: Session, now: datetime, *, limit: int = 500) -> Sequence[int | None]:
    """Ids of open changes past their expiry, oldest first."""
    return session.exec(
        select(PendingChange.id)
        .where(col(PendingChange.status).in_(OPEN), col(PendingChange.expires_at) <= now)
        .order_by(col(PendingChange.id))
        .limit(limit)
    ).all()


def reclaim_write(session: Session, change_id: int, *, cutoff: datetime, now: datetime, reason: str) -> bool:
    """writing -> approved, only when the change has been 'writing' since before `cutoff`."""
    result = session.execute(
        sa.update(PendingChange)
        .where(
            col(PendingChange.id) == change_id,
            col(PendingChange.status) == "writing",
            col(PendingChange.updated_at) < cutoff,
        )
        .values(status="approved", updated_at=now, reason=reason)
    )
    return bool(getattr(result, "rowcount", 0) == 1)


def open_change_for(session: Session, approver: str) -> int | None:
    """The oldest open change waiting for `approver`'s code, if any."""
    found: int | None = session.exec(
        select(PendingChange.id)
        .where(col(PendingChange.approver) == approver, col(PendingChange.status).in_(OPEN))
        .order_by(col(PendingChange.id))
        .limit(1)
    ).first()
    return found


def add_change(session: Session, change: PendingChange) -> None:
    """Insert a new change; its id is set when this returns."""
    session.add(change)
    session.flush()


def count_wrong_code(session: Session, change_id: int, *, now: datetime) -> bool:
    """One more wrong code on a pending change; False when it is no longer pending."""
    counted = session.execute(
        sa.update(PendingChange)
        .where(col(PendingChange.id) == change_id, col(PendingChange.status) == "pending")
        .values(attempts=col(PendingChange.attempts) + 1, updated_at=now)
    )
    return getattr(counted, "rowcount", 0) == 1


# A fixed 64-bit key: the PostgreSQL advisory lock that serialises proposals (their limit checks and
# inserts), so two instances cannot both pass a limit with one slot left.
PROPOSAL_LOCK_KEY = 0x6D6C_635F_6368_6731


def lock_proposals(session: Session) -> None:
    """Hold the proposals lock until the transaction ends. On SQLite the transaction's BEGIN
    IMMEDIATE already holds the database's one write lock (server/store/db.py)."""
    if is_postgres(session):
        session.execute(sa.text("SELECT pg_advisory_xact_lock(:key)"), {"key": PROPOSAL_LOCK_KEY})


def proposal_times(
    session: Session,
    *,
    since: datetime,
    approver: str | None = None,
    record: tuple[str, str, str] | None = None,
) -> list[datetime]:
    """When changes were proposed after `since` (any status: each one sent a code), oldest first, for
    one approver's number or one (company, entity, record id)."""
    stmt = select(PendingChange.created_at).where(col(PendingChange.created_at) > since)
    if approver is not None:
        stmt = stmt.where(col(PendingChange.approver) == approver)
    if record is not None:
        company_id, entity, record_id = record
        stmt = stmt.where(
            col(PendingChange.company_id) == company_id,
            col(PendingChange.entity) == entity,
            col(PendingChange.record_id) == record_id,
        )
    return list(session.exec(stmt.order_by(col(PendingChange.created_at))).all())
