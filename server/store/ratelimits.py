"""Rate-limit counts and lockouts, in fixed windows, shared by every instance on one database.

A count is one atomic INSERT .. ON CONFLICT (scope, key, window_start) DO UPDATE SET count = count
+ 1 RETURNING count, on SQLite and PostgreSQL alike: two instances counting the same key in the
same window add to one row, and each request learns its own position in the window. A lockout is
a row of a `lock-*` scope whose expires_at is the moment it is lifted; starting one is an upsert
that succeeds only where no lockout is active, so exactly one caller learns that it began.
Functions never commit.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import sqlalchemy as sa
from sqlmodel import Session

from server.store.columns import require_aware
from server.store.db import dialect_insert
from server.store.tables import RateLimitCount

_LIMITS = RateLimitCount.__table__  # type: ignore[attr-defined]
# Rows stay a while past their window so a look at the table explains a recent 429.
PRUNE_AFTER = timedelta(hours=1)


@dataclass(frozen=True)
class Window:
    start: datetime
    end: datetime


@dataclass(frozen=True)
class Hit:
    count: int  # this request's place in the window, 1 for the first
    window: Window


def window_at(now: datetime, seconds: int) -> Window:
    """The fixed window of `seconds` that holds `now` (windows start on multiples of it since the epoch)."""
    now = require_aware(now)
    epoch = int(now.timestamp())
    start = epoch - epoch % seconds
    return Window(start=datetime.fromtimestamp(start, UTC), end=datetime.fromtimestamp(start + seconds, UTC))


def count_hit(session: Session, scope: str, key: str, *, now: datetime, window_seconds: int) -> Hit:
    """Add one to `key`'s count in the window holding `now`; returns the count after it."""
    window = window_at(now, window_seconds)
    stmt = dialect_insert(session)(_LIMITS).values(
        scope=scope, key=key, window_start=window.start, count=1, expires_at=window.end
    )
    stmt = stmt.on_conflict_do_update(
        index_elements=["scope", "key", "window_start"], set_={"count": _LIMITS.c.count + 1}
    ).returning(_LIMITS.c.count)
    return Hit(count=int(session.execute(stmt).scalar_one()), window=window)


def active_lockout(session: Session, keys: Iterable[tuple[str, str]], *, now: datetime) -> datetime | None:
    """When the latest active lockout of any (scope, key) in `keys` ends; None when none is active."""
    pairs = [sa.and_(_LIMITS.c.scope == scope, _LIMITS.c.key == key) for scope, key in keys]
    if not pairs:
        return None
    stmt = sa.select(sa.func.max(_LIMITS.c.expires_at)).where(
        sa.or_(*pairs), _LIMITS.c.expires_at > require_aware(now)
    )
    ends = session.execute(stmt).scalar_one_or_none()
    if ends is None:
        return None
    # max() loses the column type on SQLite (naive text): read it back as UTC.
    if isinstance(ends, str):
        ends = datetime.fromisoformat(ends)
    return ends if ends.tzinfo else ends.replace(tzinfo=UTC)


def start_lockout(
    session: Session, scope: str, key: str, *, window: Window, failures: int, until: datetime, now: datetime
) -> bool:
    """Lock `key` out until `until`; True only for the caller that started it (none was active)."""
    stmt = dialect_insert(session)(_LIMITS).values(
        scope=scope, key=key, window_start=window.start, count=failures, expires_at=require_aware(until)
    )
    stmt = stmt.on_conflict_do_update(
        index_elements=["scope", "key", "window_start"],
        set_={"count": stmt.excluded.count, "expires_at": stmt.excluded.expires_at},
        where=_LIMITS.c.expires_at <= require_aware(now),
    ).returning(_LIMITS.c.expires_at)
    return session.execute(stmt).first() is not None


def prune_expired(session: Session, *, now: datetime) -> int:
    """Delete the rows of windows and lockouts that ended over PRUNE_AFTER ago."""
    result = session.execute(
        sa.delete(_LIMITS).where(_LIMITS.c.expires_at < require_aware(now) - PRUNE_AFTER)
    )
    return int(result.rowcount)  # type: ignore[attr-defined]
