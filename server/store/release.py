"""Store side of the release check (server/sending/release.py): a held job's members, its fresh text.

Both writes touch only a job this worker has claimed and not yet submitted, so they can never
change a message Twilio may already hold.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

import sqlalchemy as sa
from sqlmodel import Session, col, select

from server.store.columns import require_aware
from server.store.outbox import _add_events
from server.store.states import CLAIMABLE, EventSource, MessageStatus
from server.store.tables import OutboxMessage

_OUTBOX = OutboxMessage.__table__  # type: ignore[attr-defined]


def group_members(session: Session, group_job_ids: Sequence[str]) -> dict[str, list[OutboxMessage]]:
    """The member rows (one per document) of each grouped message, by the grouped job id."""
    rows = session.exec(
        select(OutboxMessage)
        .where(col(OutboxMessage.group_job_id).in_(list(group_job_ids)))
        .order_by(col(OutboxMessage.id))
    ).all()
    found: dict[str, list[OutboxMessage]] = {}
    for row in rows:
        assert row.group_job_id is not None
        found.setdefault(row.group_job_id, []).append(row)
    return found


def _still_mine(job_id: str, worker_id: str) -> tuple[sa.ColumnElement[bool], ...]:
    return (
        _OUTBOX.c.job_id == job_id,
        _OUTBOX.c.claimed_by == worker_id,
        _OUTBOX.c.status.in_([s.value for s in CLAIMABLE]),
    )


def _event(session: Session, job_id: str, status: str, *, now: datetime, detail: str) -> None:
    # The outbox's own event writer (same store package): a note that does not move the status.
    _add_events(
        session,
        [job_id],
        status=MessageStatus(status),
        source=EventSource.DISPATCHER,
        now=now,
        detail=detail,
        changed=False,
    )


def rewrite_text(
    session: Session,
    job_id: str,
    worker_id: str,
    *,
    body: str,
    segments: int,
    record_number: str | None,
    now: datetime,
    detail: str,
) -> bool:
    """Replace the text of a claimed, unsent job (rendered again from BC's current record); the
    event keeps the text it replaced, so the audit shows both. False if the claim moved on."""
    now = require_aware(now)
    values: dict[str, object] = {"body": body, "segments": segments, "updated_at": now}
    if record_number is not None:
        values["record_number"] = record_number
    old = session.execute(
        sa.select(_OUTBOX.c.body, _OUTBOX.c.status).where(*_still_mine(job_id, worker_id)).with_for_update()
    ).first()
    if old is None:
        return False
    session.execute(sa.update(_OUTBOX).where(*_still_mine(job_id, worker_id)).values(**values))
    _event(session, job_id, old.status, now=now, detail=f"{detail} (was: {old.body})")
    return True


def note_release(session: Session, job_id: str, worker_id: str, *, now: datetime, detail: str) -> bool:
    """Record that a claimed job passed its release check (it still applies). False if the claim moved on."""
    now = require_aware(now)
    row = session.execute(sa.select(_OUTBOX.c.status).where(*_still_mine(job_id, worker_id))).first()
    if row is None:
        return False
    _event(session, job_id, row.status, now=now, detail=detail)
    return True
