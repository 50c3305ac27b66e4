"""Last-seen versions of BC records: crossing rules ("balance went over the limit") compare against them.

put_snapshots never lets an older version overwrite a newer one (two fetches can finish out of
order). Functions take a Session and never commit: store the new snapshot in the same
transaction as the outbox rows it led to, so a crash cannot lose a crossing or repeat it.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlmodel import Session, col, select

from server.store.columns import require_aware
from server.store.db import dialect_insert
from server.store.tables import RecordSnapshot

_SNAPSHOTS = RecordSnapshot.__table__  # type: ignore[attr-defined]
_BATCH = 500
_UPSERTS: dict[Any, Any] = {}  # the upsert statement per backend's INSERT construct, built once


def _upsert(session: Session) -> Any:
    """INSERT ... ON CONFLICT (company, entity, record) DO UPDATE ... WHERE not older, RETURNING.

    Executed with the rows as parameters: compiled once and cached by SQLAlchemy, whatever the row
    count (`.values(rows)` built and compiled a new statement, a bind per cell, on every call: 40%
    of the fetcher's time in a burst). RETURNING lets SQLAlchemy's "insertmanyvalues" send the rows
    as multi-row VALUES batches rather than one execution per row.
    """
    insert = dialect_insert(session)
    stmt = _UPSERTS.get(insert)
    if stmt is None:
        base = insert(_SNAPSHOTS)
        excluded = base.excluded
        stmt = base.on_conflict_do_update(
            index_elements=["company_id", "entity", "record_id"],
            set_={name: excluded[name] for name in ("data", "etag", "last_modified", "seen_at")},
            where=sa.or_(
                _SNAPSHOTS.c.last_modified.is_(None),
                excluded.last_modified.is_(None),
                excluded.last_modified >= _SNAPSHOTS.c.last_modified,
            ),
        ).returning(_SNAPSHOTS.c.record_id)
        _UPSERTS[insert] = stmt
    return stmt


@dataclass(frozen=True)
class SnapshotIn:
    record_id: str
    data: dict[str, Any]
    etag: str | None = None
    last_modified: datetime | None = None


def get_snapshots(
    session: Session, company_id: str, entity: str, record_ids: Iterable[str]
) -> dict[str, RecordSnapshot]:
    """The stored snapshot of each id that has one (absent ids are simply missing from the result)."""
    wanted = list(dict.fromkeys(record_ids))
    found: dict[str, RecordSnapshot] = {}
    for start in range(0, len(wanted), _BATCH):
        chunk = wanted[start : start + _BATCH]
        rows = session.exec(
            select(RecordSnapshot).where(
                RecordSnapshot.company_id == company_id,
                RecordSnapshot.entity == entity,
                col(RecordSnapshot.record_id).in_(chunk),
            )
        ).all()
        found.update({r.record_id: r for r in rows})
    return found


def get_snapshot(session: Session, company_id: str, entity: str, record_id: str) -> RecordSnapshot | None:
    return get_snapshots(session, company_id, entity, [record_id]).get(record_id)


def put_snapshots(
    session: Session, company_id: str, entity: str, snapshots: Sequence[SnapshotIn], *, now: datetime
) -> None:
    """Insert or replace snapshots; a version older than the stored one (by lastModifiedDateTime) is ignored."""
    now = require_aware(now)
    latest: dict[str, SnapshotIn] = {}
    for snap in snapshots:  # one row per id per statement (ON CONFLICT cannot touch a row twice)
        prior = latest.get(snap.record_id)
        if prior is None or _not_older(snap.last_modified, prior.last_modified):
            latest[snap.record_id] = snap
    rows = [
        {
            "company_id": company_id,
            "entity": entity,
            "record_id": s.record_id,
            "data": s.data,
            "etag": s.etag,
            "last_modified": s.last_modified,
            "seen_at": now,
        }
        for s in latest.values()
    ]
    if not rows:
        return
    stmt = _upsert(session)
    for start in range(0, len(rows), _BATCH):
        session.execute(stmt, rows[start : start + _BATCH]).all()


def delete_snapshots(session: Session, company_id: str, entity: str, record_ids: Iterable[str]) -> int:
    """Forget deleted records (a re-created record with the same id starts without history)."""
    ids = list(dict.fromkeys(record_ids))
    if not ids:
        return 0
    result = session.execute(
        sa.delete(_SNAPSHOTS).where(
            _SNAPSHOTS.c.company_id == company_id,
            _SNAPSHOTS.c.entity == entity,
            _SNAPSHOTS.c.record_id.in_(ids),
        )
    )
    return int(result.rowcount)  # type: ignore[attr-defined]


def _not_older(new: datetime | None, old: datetime | None) -> bool:
    return new is None or old is None or new >= old
