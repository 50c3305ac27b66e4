"""Poll watermarks: how far polling got for (company, entity, kind), with overlap de-duplication.

Polling re-reads a small overlap before the watermark (`lastModifiedDateTime ge watermark -
overlap`), because a record can become visible after others with a later timestamp. The
watermark keeps every (id, lastModifiedDateTime) seen inside that window, so the re-read skips
exactly the versions already handled and still catches a late arrival or a newer version.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta

import sqlalchemy as sa
from sqlmodel import Session, select

from server.store.columns import require_aware
from server.store.db import insert_ignoring_conflicts
from server.store.tables import PollWatermark

_WATERMARKS = PollWatermark.__table__  # type: ignore[attr-defined]


@dataclass(frozen=True)
class Watermark:
    last_modified: datetime | None
    seen: dict[str, datetime] = field(default_factory=dict)

    def query_from(self, overlap: timedelta) -> datetime | None:
        """The lastModifiedDateTime to poll from (inclusive), or None for a first full read."""
        return None if self.last_modified is None else self.last_modified - overlap

    def is_new(self, record_id: str, last_modified: datetime) -> bool:
        """False only for the exact version (id and timestamp) already handled inside the window."""
        return self.seen.get(record_id) != require_aware(last_modified, "lastModifiedDateTime")


def get_watermark(session: Session, company_id: str, entity: str, kind: str) -> Watermark:
    row = session.get(PollWatermark, (company_id, entity, kind))
    if row is None:
        return Watermark(None)
    return Watermark(row.last_modified, {k: datetime.fromisoformat(v) for k, v in row.seen.items()})


def advance_watermark(
    session: Session,
    company_id: str,
    entity: str,
    kind: str,
    records: Iterable[tuple[str, datetime]],
    *,
    overlap: timedelta,
    now: datetime,
) -> Watermark:
    """Record that these (id, lastModifiedDateTime) versions were handled; move the watermark forward.

    The watermark never moves back. Versions older than `watermark - overlap` are dropped from the
    seen set (a poll never asks for them again), which bounds its size.
    """
    now = require_aware(now)
    # Create the row if missing (racing pollers: the constraint picks one), then lock it.
    insert_ignoring_conflicts(
        session,
        _WATERMARKS,
        [{"company_id": company_id, "entity": entity, "kind": kind, "seen": {}, "updated_at": now}],
        conflict_columns=["company_id", "entity", "kind"],
        returning=_WATERMARKS.c.kind,
    )
    row = session.exec(
        select(PollWatermark)
        .where(
            PollWatermark.company_id == company_id,
            PollWatermark.entity == entity,
            PollWatermark.kind == kind,
        )
        .with_for_update()
        .execution_options(populate_existing=True)
    ).one()
    current = Watermark(row.last_modified, {k: datetime.fromisoformat(v) for k, v in row.seen.items()})
    seen = dict(current.seen)
    latest = current.last_modified
    for record_id, stamp in records:
        stamp = require_aware(stamp, "lastModifiedDateTime")
        if seen.get(record_id) is None or stamp > seen[record_id]:
            seen[record_id] = stamp
        if latest is None or stamp > latest:
            latest = stamp
    if latest is not None:
        floor = latest - overlap
        seen = {k: v for k, v in seen.items() if v >= floor}
    stored = {k: v.isoformat() for k, v in sorted(seen.items())}
    session.execute(
        sa.update(_WATERMARKS)
        .where(
            _WATERMARKS.c.company_id == company_id,
            _WATERMARKS.c.entity == entity,
            _WATERMARKS.c.kind == kind,
        )
        .values(last_modified=latest, seen=stored, updated_at=now)
    )
    return Watermark(latest, seen)
