"""Named, expiring leases: one instance at a time runs a schedule or the subscription manager.

acquire is one atomic INSERT ... ON CONFLICT DO UPDATE ... WHERE (the current holder renews, or
anyone takes an expired lease), so two processes racing on PostgreSQL or SQLite cannot both win.
Each change of holder bumps `generation`, a fencing token for work done under the lease.
Functions take a Session and never commit: commit right after acquire/renew/release.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

import sqlalchemy as sa
from sqlmodel import Session

from server.store.columns import require_aware
from server.store.db import dialect_insert
from server.store.tables import Lease

_LEASES = Lease.__table__  # type: ignore[attr-defined]


@dataclass(frozen=True)
class LeaseGrant:
    name: str
    holder: str
    expires_at: datetime
    generation: int


def acquire_lease(
    session: Session, name: str, holder: str, *, now: datetime, ttl: timedelta
) -> LeaseGrant | None:
    """Take or renew lease `name` for `holder` until now + ttl. None when someone else holds it."""
    now = require_aware(now)
    if ttl <= timedelta(0):
        raise ValueError("ttl must be positive")
    expires = now + ttl
    stmt = dialect_insert(session)(_LEASES).values(
        name=name, holder=holder, expires_at=expires, acquired_at=now, generation=1
    )
    excluded = stmt.excluded
    # Same holder: a renewal keeps acquired_at and generation. Expired lease: a takeover resets
    # acquired_at and bumps generation. Otherwise the WHERE fails and nothing is returned.
    same = _LEASES.c.holder == excluded.holder
    stmt = stmt.on_conflict_do_update(
        index_elements=["name"],
        set_={
            "holder": excluded.holder,
            "expires_at": excluded.expires_at,
            "acquired_at": sa.case((same, _LEASES.c.acquired_at), else_=excluded.acquired_at),
            "generation": sa.case((same, _LEASES.c.generation), else_=_LEASES.c.generation + 1),
        },
        where=sa.or_(same, _LEASES.c.expires_at <= now),
    ).returning(_LEASES.c.holder, _LEASES.c.expires_at, _LEASES.c.generation)
    row = session.execute(stmt).first()
    if row is None:
        return None
    return LeaseGrant(name=name, holder=row.holder, expires_at=row.expires_at, generation=row.generation)


def release_lease(session: Session, name: str, holder: str) -> bool:
    """Give the lease up early (on shutdown) so another instance need not wait for expiry.

    The row stays (expired: expires_at set back to acquired_at), so the next holder's generation
    still grows and fencing tokens never repeat.
    """
    result = session.execute(
        sa.update(_LEASES)
        .where(_LEASES.c.name == name, _LEASES.c.holder == holder)
        .values(expires_at=_LEASES.c.acquired_at)
    )
    return bool(result.rowcount)  # type: ignore[attr-defined]


def current_holder(session: Session, name: str, *, now: datetime) -> str | None:
    row = session.get(Lease, name)
    if row is None or row.expires_at <= require_aware(now):
        return None
    return row.holder
