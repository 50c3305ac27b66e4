"""Notification inbox: BC redeliveries stored once; claims grouped by (company, entity)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy.engine import Engine

from server.clock import ManualClock
from server.store import inbox
from server.store.db import session_scope
from server.store.inbox import NotificationIn, parse_resource

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
