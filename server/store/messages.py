"""Read side of the outbox for the audit API: filtered, keyset-paginated lists and one message with its history."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

import sqlalchemy as sa
from sqlmodel import Session, col, select

from server.store.columns import require_aware
from server.store.tables import MessageEvent, OutboxMessage

MAX_PAGE = 500


@dataclass(frozen=True)
class MessageFilter:
    """All given filters must hold. Times are on created_at: from inclusive, to exclusive."""

    statuses: Sequence[str] | None = None
    rule_id: str | None = None
    entity: str | None = None
    record_id: str | None = None
    recipient: str | None = None
    created_from: datetime | None = None
    created_to: datetime | None = None
    is_test: bool | None = None
    # Free text for people: part of the BC record number (any case) or of the recipient's digits.
    search: str | None = None


@dataclass(frozen=True)
class MessagePage:
    items: list[OutboxMessage]
    # Pass as `after` to get the next page; None when this is the last page.
    next_cursor: int | None


@dataclass(frozen=True)
class MessageDetail:
    message: OutboxMessage
    events: list[MessageEvent]


def list_messages(
    session: Session, filters: MessageFilter | None = None, *, limit: int = 50, after: int | None = None
) -> MessagePage:
    """Newest first. Keyset pagination on the row id, so pages stay stable while new rows arrive."""
    f = filters or MessageFilter()
    limit = max(1, min(limit, MAX_PAGE))
    stmt = select(OutboxMessage)
    if f.statuses:
        stmt = stmt.where(col(OutboxMessage.status).in_(list(f.statuses)))
    if f.rule_id is not None:
        stmt = stmt.where(OutboxMessage.rule_id == f.rule_id)
    if f.entity is not None:
        stmt = stmt.where(OutboxMessage.entity == f.entity)
    if f.record_id is not None:
        stmt = stmt.where(OutboxMessage.record_id == f.record_id)
    if f.recipient is not None:
        stmt = stmt.where(OutboxMessage.recipient == f.recipient)
    if f.created_from is not None:
        stmt = stmt.where(col(OutboxMessage.created_at) >= require_aware(f.created_from, "created_from"))
    if f.created_to is not None:
        stmt = stmt.where(col(OutboxMessage.created_at) < require_aware(f.created_to, "created_to"))
    if f.is_test is not None:
        stmt = stmt.where(OutboxMessage.is_test == f.is_test)
    if f.search and f.search.strip():
        term = f.search.strip().lower()
        digits = "".join(ch for ch in term if ch.isdigit())
        matches = [sa.func.lower(col(OutboxMessage.record_number)).contains(term, autoescape=True)]
        if len(digits) >= 3:  # numbers are stored in E.164: compare digits, whatever separators were typed
            matches.append(col(OutboxMessage.recipient).contains(digits, autoescape=True))
        stmt = stmt.where(sa.or_(*matches))
    if after is not None:
        stmt = stmt.where(col(OutboxMessage.id) < after)
    rows = list(session.exec(stmt.order_by(col(OutboxMessage.id).desc()).limit(limit + 1)).all())
    more = len(rows) > limit
    items = rows[:limit]
    return MessagePage(items=items, next_cursor=items[-1].id if more and items else None)


def get_message(session: Session, job_id: str) -> MessageDetail | None:
    message = session.exec(select(OutboxMessage).where(OutboxMessage.job_id == job_id)).first()
    if message is None:
        return None
    events = session.exec(
        select(MessageEvent).where(MessageEvent.job_id == job_id).order_by(col(MessageEvent.id))
    ).all()
    return MessageDetail(message=message, events=list(events))


def count_by_status(session: Session) -> dict[str, int]:
    """How many outbox messages are in each status (statuses with none are absent)."""
    rows = session.exec(select(OutboxMessage.status, sa.func.count()).group_by(OutboxMessage.status)).all()
    return {status: int(count) for status, count in rows}


def all_messages(session: Session) -> list[OutboxMessage]:
    """Every outbox row, oldest first (the sandbox's report; a real outbox is read page by page)."""
    return list(session.exec(select(OutboxMessage).order_by(col(OutboxMessage.id))).all())


def jobs_with_status_event(session: Session, status: str) -> set[str]:
    """The job ids whose history holds an event of `status` (e.g. held for a send window)."""
    return set(session.exec(select(MessageEvent.job_id).where(MessageEvent.status == status)).all())


def count_events_with_error(session: Session, codes: Sequence[str]) -> int:
    """How many status events carry one of these error codes (e.g. 429 / 20429 requeues)."""
    return len(session.exec(select(MessageEvent).where(col(MessageEvent.error_code).in_(list(codes)))).all())
