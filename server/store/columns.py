"""Column types shared by the tables: timezone-aware UTC timestamps and JSON on both backends."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql
from sqlalchemy.engine import Dialect


class UTCDateTime(sa.types.TypeDecorator[datetime]):
    """A timestamp that is always timezone-aware UTC in Python.

    PostgreSQL stores `timestamptz`; SQLite has no time zones, so values are stored as naive UTC
    text (which also keeps string comparison in SQL correct). A naive datetime is refused on the
    way in: it is a bug (someone called datetime.now() without a zone), not something to guess at.
    """

    impl = sa.DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if not isinstance(value, datetime):
            raise TypeError(f"expected a datetime, got {type(value).__name__}")
        if value.tzinfo is None or value.utcoffset() is None:
            raise ValueError(f"naive datetime {value.isoformat()} given; the store needs timezone-aware UTC")
        value = value.astimezone(UTC)
        if dialect.name == "sqlite":
            return value.replace(tzinfo=None)
        return value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value.astimezone(UTC)


def json_type(*, none_as_null: bool = False) -> sa.types.TypeEngine[Any]:
    """JSON text on SQLite, JSONB on PostgreSQL (indexable, compact).

    With none_as_null, Python None is stored as SQL NULL rather than the JSON value null.
    """
    return sa.JSON(none_as_null=none_as_null).with_variant(
        postgresql.JSONB(none_as_null=none_as_null), "postgresql"
    )


def require_aware(value: datetime, name: str = "now") -> datetime:
    """Check a time handed to the store is timezone-aware; return it in UTC."""
    if value.tzinfo is None or value.utcoffset() is None:
        raise ValueError(f"{name} must be timezone-aware (take it from a server.runtime.clock.Clock)")
    return value.astimezone(UTC)
