"""The notification inbox: BC webhook items stored durably before the webhook answers.

A BC redelivery (same subscription, resource, changeType and lastModifiedDateTime) hits the
unique dedupe key and is not stored twice. The fetch worker claims pending items in batches,
grouped by (company, entity) so it can fetch the changed records together.
Functions take a Session and never commit (see db.session_scope).
"""

from __future__ import annotations

import functools
import hashlib
import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, NamedTuple

import sqlalchemy as sa
from sqlalchemy.engine import Dialect
from sqlmodel import Session, col, select

from server.store.columns import UTCDateTime, require_aware
from server.store.tables import CHANGE_TYPES, InboxNotification

_INBOX = InboxNotification.__table__  # type: ignore[attr-defined]
DEDUPE_KEY_LENGTH = _INBOX.c.dedupe_key.type.length
RECORD_ID_MAX: int = _INBOX.c.record_id.type.length

# `api/v2.0/companies(<id>)/customers(<id>)` or `.../customers?$filter=...`
# (https://learn.microsoft.com/en-us/dynamics365/business-central/dev-itpro/api-reference/v2.0/dynamics-subscriptions);
# ids may be quoted. Absolute URLs and a leading slash are accepted too.
_RESOURCE_RE = re.compile(
    r"companies\(\s*'?(?P<company>[^)'/]+)'?\s*\)/(?P<entity>[A-Za-z][A-Za-z0-9_]*)"
    r"(?:\(\s*'?(?P<record>[^)'/]+)'?\s*\))?"
)


class ResourceRef(NamedTuple):
    # NamedTuples, here and below: made per item of every POST, at a fraction of a frozen dataclass's cost.
    company_id: str | None
    entity: str | None
    record_id: str | None


_NO_REF = ResourceRef(None, None, None)


def parse_resource(resource: str) -> ResourceRef:
    """Company, entity and (for a single record) record id named by a notification's resource."""
    match = _RESOURCE_RE.search(resource)
    if match is None:
        return _NO_REF
    return ResourceRef._make(match.group("company", "entity", "record"))


class ResourceParser:
    """parse_resource for the items of one batch, which mostly name records of one entity set.

    Each item's resource is usually `<head>(<record id>)` with a <head> seen already: then the ref
    is the head's (company, entity) and the record id, found without the regex (1.5 us an item;
    bench: ingest). A head is remembered only when the regex's match ends with a record id that
    starts right after the last "(" and ends right before the closing ")", and a record id is
    taken only if the regex would take it whole: not empty, none of `)'/`, no leading whitespace.
    Anything else goes to parse_resource. Same answers (tests/server/store/test_inbox.py).
    """

    __slots__ = ("_heads",)

    def __init__(self) -> None:
        self._heads: dict[str, ResourceRef] = {}

    def __call__(self, resource: str) -> ResourceRef:
        head, paren, rest = resource.rpartition("(")
        if paren and rest.endswith(")"):
            known = self._heads.get(head)
            record = rest[:-1]
            if (
                known is not None
                and record
                and ")" not in record
                and "'" not in record
                and "/" not in record
                and not record[0].isspace()
            ):
                return ResourceRef(known.company_id, known.entity, record)
        match = _RESOURCE_RE.search(resource)
        if match is None:
            return _NO_REF
        ref = ResourceRef._make(match.group("company", "entity", "record"))
        if paren and match.start("record") == len(head) + 1 and match.end("record") == len(resource) - 1:
            self._heads[head] = ref
        return ref


class NotificationIn(NamedTuple):
    """One validated item of a BC notification (clientState already checked by the webhook)."""

    subscription_id: str
    resource: str
    change_type: str
    last_modified: datetime | None
    # Taken from the subscription by the webhook; when None, parsed from `resource`.
    company_id: str | None = None
    entity: str | None = None
    # parse_resource(resource) when the caller has it already (the webhook does); parsed when None.
    ref: ResourceRef | None = None


def notification_dedupe_key(
    subscription_id: str, resource: str, change_type: str, last_modified: datetime | None
) -> str:
    """What makes a BC delivery the same delivery, in 64 characters: the lastModifiedDateTime (UTC,
    to the microsecond), then the hex SHA-256 of all four parts (the resource can be long), cut short.

    The time comes first so that new keys land together at the end of the unique index, in about
    the order notifications arrive: a bare hash spread each batch's keys over the whole index, and
    on SQLite every page so touched is written again at commit (bench: ingest, 4x the database time
    of a 100-item batch at 100,000 rows). The 172 bits of hash that remain keep apart the keys of
    one microsecond.
    """
    return _dedupe_key(_time_parts(last_modified), subscription_id, resource, change_type)


def _dedupe_key(time_parts: tuple[str, str], subscription_id: str, resource: str, change_type: str) -> str:
    stamp, prefix = time_parts
    digest = hashlib.sha256(
        f"{subscription_id}\x1f{resource}\x1f{change_type}\x1f{stamp}".encode()
    ).hexdigest()
    return f"{prefix}-{digest[:_DIGEST_CHARS]}"


_TIME_PREFIX_CHARS = 20  # %Y%m%d%H%M%S%f
_DIGEST_CHARS = DEDUPE_KEY_LENGTH - _TIME_PREFIX_CHARS - 1


@functools.lru_cache(maxsize=1024)
def _time_parts(last_modified: datetime | None) -> tuple[str, str]:
    # Cached: the items of one POST share a few timestamps, and strftime costs more than the hash.
    if last_modified is None:
        return "", "0" * _TIME_PREFIX_CHARS
    when = require_aware(last_modified, "lastModifiedDateTime")
    return when.isoformat(), when.strftime("%Y%m%d%H%M%S%f")


# Columns written by store_notifications, in the order of its rows; status and attempts are SQL literals.
_INSERT_COLUMNS = (
    "received_at",
    "subscription_id",
    "company_id",
    "entity",
    "resource",
    "change_type",
    "record_id",
    "last_modified",
    "dedupe_key",
)
_PLACEHOLDERS = {"qmark": "?", "format": "%s", "pyformat": "%s"}


@dataclass(frozen=True)
class _InboxInsert:
    sql: str
    # The column type's own conversion (UTCDateTime, then the driver's) of a datetime bound to it.
    to_db_time: Callable[[datetime | None], Any]


@functools.lru_cache(maxsize=16)
def _inbox_insert(dialect: Dialect) -> _InboxInsert:
    mark = _PLACEHOLDERS[dialect.paramstyle]
    # Names from the table definition above, values all bound: nothing from outside goes in the text.
    sql = (
        f"INSERT INTO {_INBOX.name} ({', '.join(_INSERT_COLUMNS)}, status, attempts) "  # noqa: S608
        f"VALUES ({', '.join(mark for _ in _INSERT_COLUMNS)}, 'pending', 0) "
        "ON CONFLICT (dedupe_key) DO NOTHING"
    )
    # dialect_impl: the dialect's own DATETIME after UTCDateTime (SQLite stores text in its format).
    process = _INBOX.c.received_at.type.dialect_impl(dialect).bind_processor(dialect)
    return _InboxInsert(sql, process or (lambda value: value))


def store_notifications(
    session: Session | sa.Connection, items: Iterable[NotificationIn], *, now: datetime
) -> int:
    """Store notification items, ignoring ones already stored. Returns how many were new.
    Takes a Session or, for a caller that needs no ORM (the webhook), a Connection in a transaction.

    One executemany of INSERT .. ON CONFLICT (dedupe_key) DO NOTHING: the unique key, not a prior
    SELECT, decides what is a duplicate, so two racing deliveries still make one row; both drivers
    sum the rows inserted into rowcount, to which a duplicate adds nothing. Rows go to the driver
    as tuples, their timestamps converted once per distinct value by the column type itself: bound
    through SQLAlchemy's statement, each of the 100 rows of a batch had its 11 parameters processed
    one by one, and a multi-VALUES INSERT .. RETURNING (insert_ignoring_conflicts) built and parsed
    a statement of 1,100 parameters per batch; either cost more than the database's own work.
    """
    now = require_aware(now)
    connection = session.connection() if isinstance(session, Session) else session
    insert = _inbox_insert(connection.dialect)
    # Per distinct lastModifiedDateTime (a POST's items share few): its database value and key parts.
    no_time: tuple[Any, tuple[str, str]] = (None, _time_parts(None))
    times: dict[datetime, tuple[Any, tuple[str, str]]] = {}
    received_at = insert.to_db_time(now)
    parse = ResourceParser()
    rows: list[tuple[Any, ...]] = []
    for n, item in enumerate(items):
        if item.change_type not in CHANGE_TYPES:
            raise ValueError(
                f"value[{n}].changeType: {item.change_type!r} is not one of {', '.join(CHANGE_TYPES)}"
            )
        ref = item.ref or parse(item.resource)
        company_id = item.company_id or ref.company_id
        entity = item.entity or ref.entity
        if not company_id or not entity:
            raise ValueError(f"value[{n}].resource: cannot tell company and entity from {item.resource!r}")
        last_modified = item.last_modified
        if last_modified is None:
            time = no_time
        elif (known := times.get(last_modified)) is not None:
            time = known
        else:
            aware = require_aware(last_modified, "lastModifiedDateTime")
            time = times[last_modified] = (insert.to_db_time(aware), _time_parts(aware))
        rows.append(
            (
                received_at,
                item.subscription_id,
                company_id,
                entity,
                item.resource,
                item.change_type,
                ref.record_id if item.change_type != "collection" else None,
                time[0],
                _dedupe_key(time[1], item.subscription_id, item.resource, item.change_type),
            )
        )
    if not rows:
        return 0
    result = connection.exec_driver_sql(insert.sql, rows, execution_options={"preserve_rowcount": True})
    return int(result.rowcount)


@dataclass
class InboxBatch:
    """Claimed notifications for one (company, entity), oldest first."""

    company_id: str
    entity: str
    items: list[InboxNotification] = field(default_factory=list)

    @property
    def ids(self) -> list[int]:
        return [i.id for i in self.items if i.id is not None]

    @property
    def record_ids(self) -> list[str]:
        """Distinct ids of records created/updated (fetch these), in first-seen order."""
        seen: dict[str, None] = {}
        for i in self.items:
            if i.record_id and i.change_type in ("created", "updated"):
                seen.setdefault(i.record_id, None)
        return list(seen)

    @property
    def deleted_ids(self) -> list[str]:
        return list(
            dict.fromkeys(i.record_id for i in self.items if i.record_id and i.change_type == "deleted")
        )

    @property
    def collections(self) -> list[InboxNotification]:
        """'collection' items: more than 1,000 changes; GET the resource URL as given and page through."""
        return [i for i in self.items if i.change_type == "collection"]


def claim_inbox_batch(
    session: Session, worker_id: str, *, now: datetime, limit: int, lease_seconds: float
) -> list[InboxBatch]:
    """Claim up to `limit` pending items (or ones whose claim expired), grouped by (company, entity)."""
    now = require_aware(now)
    if limit <= 0:
        return []
    claimable = sa.or_(
        col(InboxNotification.status) == "pending",
        sa.and_(col(InboxNotification.status) == "processing", col(InboxNotification.claim_expires) < now),
    )
    pick = (
        select(InboxNotification.id)
        .where(claimable)
        .order_by(col(InboxNotification.id))
        .limit(limit)
        .with_for_update(skip_locked=True)
    )
    ids = list(session.exec(pick).all())
    if not ids:
        return []
    session.execute(
        sa.update(_INBOX)
        .where(_INBOX.c.id.in_(ids))
        .values(
            status="processing",
            claimed_by=worker_id,
            claim_expires=now + timedelta(seconds=lease_seconds),
            attempts=_INBOX.c.attempts + 1,
        )
    )
    items = session.exec(
        select(InboxNotification)
        .where(col(InboxNotification.id).in_(ids))
        .order_by(col(InboxNotification.id))
        .execution_options(populate_existing=True)
    ).all()
    batches: dict[tuple[str, str], InboxBatch] = {}
    for item in items:
        key = (item.company_id, item.entity)
        batches.setdefault(key, InboxBatch(item.company_id, item.entity)).items.append(item)
    return list(batches.values())


def mark_inbox_done(session: Session, ids: Sequence[int], *, now: datetime) -> int:
    now = require_aware(now)
    if not ids:
        return 0
    result = session.execute(
        sa.update(_INBOX)
        .where(_INBOX.c.id.in_(list(ids)))
        .values(status="done", processed_at=now, claimed_by=None, claim_expires=None, last_error=None)
    )
    return int(result.rowcount)  # type: ignore[attr-defined]


def release_inbox(
    session: Session, ids: Sequence[int], *, error: str, now: datetime, max_attempts: int
) -> int:
    """Processing failed: back to pending for another try, or 'failed' once attempts reach max_attempts."""
    now = require_aware(now)
    if not ids:
        return 0
    exhausted = _INBOX.c.attempts >= max_attempts
    result = session.execute(
        sa.update(_INBOX)
        .where(_INBOX.c.id.in_(list(ids)))
        .values(
            status=sa.case((exhausted, "failed"), else_="pending"),
            processed_at=sa.case((exhausted, sa.literal(now, UTCDateTime())), else_=None),
            claimed_by=None,
            claim_expires=None,
            last_error=error,
        )
    )
    return int(result.rowcount)  # type: ignore[attr-defined]


def purge_done(session: Session, *, before: datetime) -> int:
    """Delete processed items older than `before` (the inbox is a queue, not an archive)."""
    before = require_aware(before, "before")
    result = session.execute(
        sa.delete(_INBOX).where(_INBOX.c.status == "done", _INBOX.c.processed_at < before)
    )
    return int(result.rowcount)  # type: ignore[attr-defined]


def count_by_status(session: Session) -> dict[str, int]:
    rows = session.execute(sa.select(_INBOX.c.status, sa.func.count()).group_by(_INBOX.c.status)).all()
    return {str(status): int(n) for status, n in rows}


def count_unfinished(session: Session) -> int:
    """Inbox items not yet fetched: pending, or claimed by a fetcher (processing)."""
    return int(
        session.exec(
            select(sa.func.count())
            .select_from(InboxNotification)
            .where(col(InboxNotification.status).in_(["pending", "processing"]))
        ).one()
    )
