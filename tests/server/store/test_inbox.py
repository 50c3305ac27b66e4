"""Notification inbox: BC redeliveries stored once; claims grouped by (company, entity)."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import Engine
from sqlmodel import col, select

from server.runtime.clock import ManualClock
from server.store import inbox
from server.store.db import create_db_engine, session_scope
from server.store.inbox import NotificationIn, parse_resource
from server.store.migrate import upgrade_database
from server.store.tables import InboxNotification

CO = "5d1b3a4c-0000-4000-8000-000000000001"
LM = datetime(2026, 11, 25, 8, 59, 30, tzinfo=UTC)


def _note(entity: str, record: str | None, change: str = "updated", lm: datetime = LM) -> NotificationIn:
    resource = (
        f"api/v2.0/companies({CO})/{entity}({record})"
        if record
        else (f"api/v2.0/companies({CO})/{entity}?$filter=lastModifiedDateTime%20gt%202026-11-25T08:59:00Z")
    )
    return NotificationIn(
        subscription_id=f"sub-{entity}", resource=resource, change_type=change, last_modified=lm
    )


def test_parse_resource() -> None:
    assert parse_resource(f"api/v2.0/companies({CO})/customers(abc-1)") == inbox.ResourceRef(
        CO, "customers", "abc-1"
    )
    assert parse_resource(f"https://bc/api/v2.0/companies('{CO}')/salesInvoices('x-2')") == inbox.ResourceRef(
        CO, "salesInvoices", "x-2"
    )
    assert parse_resource(f"/api/v2.0/companies({CO})/customers?$filter=x") == inbox.ResourceRef(
        CO, "customers", None
    )
    assert parse_resource("nonsense") == inbox.ResourceRef(None, None, None)


def test_redelivery_is_stored_once(engine: Engine, clock: ManualClock) -> None:
    items = [_note("customers", "c1"), _note("customers", "c1"), _note("customers", "c2")]
    with session_scope(engine) as session:
        first = inbox.store_notifications(session, items, now=clock.now())
    with session_scope(engine) as session:
        again = inbox.store_notifications(session, items, now=clock.now())
        # a later change of the same record is a new notification
        later = inbox.store_notifications(
            session, [_note("customers", "c1", lm=LM + timedelta(minutes=1))], now=clock.now()
        )
        counts = inbox.count_by_status(session)
    assert (first, again, later) == (2, 0, 1)
    assert counts == {"pending": 3}


def test_bad_change_type_names_the_item(engine: Engine, clock: ManualClock) -> None:
    with (
        pytest.raises(ValueError, match=r"value\[1\]\.changeType: 'renamed' is not one of created"),
        session_scope(engine) as session,
    ):
        inbox.store_notifications(
            session, [_note("customers", "c1"), _note("customers", "c2", "renamed")], now=clock.now()
        )
    with session_scope(engine) as session:
        assert inbox.count_by_status(session) == {}  # one transaction: nothing stored


def test_claim_groups_by_company_and_entity(engine: Engine, clock: ManualClock) -> None:
    items = [
        _note("customers", "c1"),
        _note("salesInvoices", "i1"),
        _note("customers", "c2"),
        _note("customers", "c1", lm=LM + timedelta(seconds=5)),
        _note("customers", "c3", "deleted"),
        _note("salesInvoices", None, "collection"),
    ]
    with session_scope(engine) as session:
        inbox.store_notifications(session, items, now=clock.now())
    with session_scope(engine) as session:
        batches = inbox.claim_inbox_batch(session, "f1", now=clock.now(), limit=100, lease_seconds=60)
    by_entity = {b.entity: b for b in batches}
    assert set(by_entity) == {"customers", "salesInvoices"}
    assert by_entity["customers"].record_ids == ["c1", "c2"]
    assert by_entity["customers"].deleted_ids == ["c3"]
    assert by_entity["salesInvoices"].record_ids == ["i1"]
    assert len(by_entity["salesInvoices"].collections) == 1
    with session_scope(engine) as session:
        assert inbox.claim_inbox_batch(session, "f2", now=clock.now(), limit=100, lease_seconds=60) == []
        done = inbox.mark_inbox_done(session, by_entity["customers"].ids, now=clock.now())
    assert done == 4
    with session_scope(engine) as session:
        assert inbox.count_by_status(session) == {"done": 4, "processing": 2}


def test_failed_processing_retries_then_gives_up(engine: Engine, clock: ManualClock) -> None:
    with session_scope(engine) as session:
        inbox.store_notifications(session, [_note("customers", "c1")], now=clock.now())
    for attempt in range(1, 4):
        with session_scope(engine) as session:
            (batch,) = inbox.claim_inbox_batch(session, "f1", now=clock.now(), limit=10, lease_seconds=60)
            assert batch.items[0].attempts == attempt
            inbox.release_inbox(session, batch.ids, error="BC 503", now=clock.now(), max_attempts=3)
    with session_scope(engine) as session:
        assert inbox.count_by_status(session) == {"failed": 1}
        assert inbox.claim_inbox_batch(session, "f1", now=clock.now(), limit=10, lease_seconds=60) == []


def test_expired_claim_is_taken_over(engine: Engine, clock: ManualClock) -> None:
    with session_scope(engine) as session:
        inbox.store_notifications(session, [_note("customers", "c1")], now=clock.now())
        inbox.claim_inbox_batch(session, "f1", now=clock.now(), limit=10, lease_seconds=60)
    clock.advance(timedelta(seconds=61))
    with session_scope(engine) as session:
        (batch,) = inbox.claim_inbox_batch(session, "f2", now=clock.now(), limit=10, lease_seconds=60)
    assert (batch.items[0].claimed_by, batch.items[0].attempts) == ("f2", 2)


def test_purge_removes_only_old_done_items(engine: Engine, clock: ManualClock) -> None:
    with session_scope(engine) as session:
        inbox.store_notifications(
            session, [_note("customers", "c1"), _note("customers", "c2")], now=clock.now()
        )
        (batch,) = inbox.claim_inbox_batch(session, "f1", now=clock.now(), limit=1, lease_seconds=60)
        inbox.mark_inbox_done(session, batch.ids, now=clock.now())
    clock.advance(timedelta(days=8))
    with session_scope(engine) as session:
        assert inbox.purge_done(session, before=clock.now() - timedelta(days=7)) == 1
        assert inbox.count_by_status(session) == {"pending": 1}


def test_stored_rows_read_back_as_given_and_compare_in_sql(engine: Engine, clock: ManualClock) -> None:
    # Rows go to the driver as tuples with their timestamps converted by the column type: what is
    # read back, and what SQL compares against a bound time, must be what the ORM would have written.
    lm = datetime(2026, 11, 25, 9, 59, 30, 123456, tzinfo=timezone(timedelta(hours=1)))
    with session_scope(engine) as session:
        inbox.store_notifications(
            session,
            [_note("customers", "c1", lm=lm), _note("customers", None, "collection", lm=LM)],
            now=clock.now(),
        )
    with session_scope(engine) as session:
        rows = session.exec(
            select(InboxNotification)
            .where(InboxNotification.received_at == clock.now(), col(InboxNotification.last_modified) > LM)
            .order_by(col(InboxNotification.id))
        ).all()
        every = session.exec(select(InboxNotification).order_by(col(InboxNotification.id))).all()
    [row] = rows
    assert (row.subscription_id, row.company_id, row.entity, row.record_id) == (
        "sub-customers",
        CO,
        "customers",
        "c1",
    )
    assert (row.change_type, row.status, row.attempts, row.claimed_by) == ("updated", "pending", 0, None)
    assert row.received_at == clock.now() and row.received_at.tzinfo is not None
    assert row.last_modified == lm and row.last_modified.utcoffset() == timedelta(0)
    assert [(r.change_type, r.record_id, r.last_modified) for r in every] == [
        ("updated", "c1", lm),
        ("collection", None, LM),
    ]


def test_dedupe_key_leads_with_the_time_and_ignores_the_offset(engine: Engine, clock: ManualClock) -> None:
    key = inbox.notification_dedupe_key
    earlier = key("sub", "api/v2.0/companies(x)/customers(zzz)", "updated", LM)
    later = key("sub", "api/v2.0/companies(x)/customers(aaa)", "updated", LM + timedelta(microseconds=1))
    assert len(earlier) == len(later) == 64
    assert earlier.startswith("20261125085930000000-") and earlier < later  # new keys sort last
    assert key("sub", "r", "updated", None) != key("sub", "r", "deleted", None)
    same_instant = LM.astimezone(timezone(timedelta(hours=-5)))
    assert key("sub", "r", "updated", same_instant) == key("sub", "r", "updated", LM)
    with session_scope(engine) as session:
        first = inbox.store_notifications(session, [_note("customers", "c1")], now=clock.now())
        again = inbox.store_notifications(
            session, [_note("customers", "c1", lm=same_instant)], now=clock.now()
        )
    assert (first, again) == (1, 0)


@pytest.mark.parametrize(("column", "value"), [("status", "pendng"), ("change_type", "renamed")])
def test_database_rejects_an_unknown_status_or_change_type(engine: Engine, column: str, value: str) -> None:
    row = {
        "received_at": LM,
        "subscription_id": "sub",
        "company_id": CO,
        "entity": "customers",
        "resource": "r",
        "change_type": "updated",
        "dedupe_key": "k",
        "status": "pending",
        "attempts": 0,
    }
    table = InboxNotification.__table__  # type: ignore[attr-defined]
    with (
        pytest.raises(sa.exc.IntegrityError, match=f"ck_notification_inbox_{column}"),
        engine.begin() as connection,
    ):
        connection.execute(table.insert(), [{**row, column: value}])
    with engine.begin() as connection:
        connection.execute(table.insert(), [row])  # the same row with known values is stored


def test_sqlite_checks_the_inbox_without_a_temporary_index(tmp_path: Path) -> None:
    # `x IN (a, b, c, ...)` in a CHECK makes SQLite build a temporary index for every row inserted
    # (about half the database time of a webhook batch); the inbox's checks are OR-ed comparisons.
    engine = create_db_engine(f"sqlite:///{tmp_path / 'inbox.sqlite3'}")
    try:
        upgrade_database(engine)
        with engine.connect() as connection:
            program = connection.exec_driver_sql(
                "EXPLAIN " + inbox._inbox_insert(connection.dialect).sql, tuple(range(9))
            ).all()
        opcodes = {step[1] for step in program}
        assert "Insert" in opcodes and "OpenEphemeral" not in opcodes
    finally:
        engine.dispose()


def test_resource_parser_answers_as_parse_resource() -> None:
    # The batch parser's shortcut (a known head, then `(<record id>)`) must never change an answer.
    head = f"api/v2.0/companies({CO})/customers"
    tricky = [
        f"{head}(c1)",
        f"{head}(c2)",
        f"{head}( c3)",
        f"{head}(c4 )",
        f"{head}('c5')",
        f"{head}(c6')",
        f"{head}(c/7)",
        f"{head}(c8))",
        f"{head}()",
        f"{head}(a(b)",
        f"{head}(c9",
        f"{head}?$filter=x",
        f"{head}(c1)/salesInvoiceLines(l1)",
        f"https://bc/{head}(c10)",
        f"api/v2.0/companies('{CO}')/vendors(v1)",
        f"api/v2.0/companies('{CO}')/vendors(v2)",
        "nonsense(x)",
        "nonsense(y)",
    ]
    rng = random.Random(20261125)
    pieces = [
        "api/v2.0/",
        "/",
        "companies(",
        CO,
        "'",
        ")",
        "/customers",
        "(",
        "c1",
        " ",
        "?$filter=a",
        "a(b",
        "",
    ]
    heads = ["".join(rng.choice(pieces) for _ in range(rng.randint(1, 8))) for _ in range(200)] + [head]
    chars = "ab1-_ ()'/\t"
    generated = [
        rng.choice(heads)
        + rng.choice(["(", "('", "( ", ""])
        + "".join(rng.choice(chars) for _ in range(rng.randint(0, 5)))
        + rng.choice([")", "')", " )", "", "))"])
        for _ in range(5000)
    ]
    for batch in (tricky, tricky[::-1], generated):
        parse = inbox.ResourceParser()
        assert [parse(r) for r in batch] == [parse_resource(r) for r in batch]
