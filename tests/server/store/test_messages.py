"""Audit read API over the outbox: filters, keyset pages, one message with its history."""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy.engine import Engine

from server.runtime.clock import ManualClock
from server.store import outbox
from server.store.audit import list_audit, record_audit
from server.store.db import session_scope
from server.store.messages import MessageFilter, get_message, list_messages

from .conftest import PlannedFactory


def test_filters_and_pages(engine: Engine, clock: ManualClock, planned: PlannedFactory) -> None:
    for n in range(1, 8):
        clock.advance(timedelta(minutes=1))
        rule = "invoice-overdue" if n % 2 else "credit-limit-crossed"
        to = "+447700900999" if n == 3 else "+447700900123"
        with session_scope(engine) as session:
            outbox.insert_planned(
                session, [planned(n, rule_id=rule, to=to)], company_id="c1", now=clock.now()
            )

    with session_scope(engine) as session:
        page1 = list_messages(session, MessageFilter(rule_id="invoice-overdue"), limit=3)
        page2 = list_messages(
            session, MessageFilter(rule_id="invoice-overdue"), limit=3, after=page1.next_cursor
        )
        by_recipient = list_messages(session, MessageFilter(recipient="+447700900999"))
        by_record = list_messages(session, MessageFilter(entity="salesInvoices", record_id="rec-00004"))
        window = list_messages(
            session,
            MessageFilter(created_from=clock.now() - timedelta(minutes=2), created_to=clock.now()),
        )
        by_status = list_messages(session, MessageFilter(statuses=["delivered"]))
    assert [m.record_id for m in page1.items] == ["rec-00007", "rec-00005", "rec-00003"]
    assert [m.record_id for m in page2.items] == ["rec-00001"] and page2.next_cursor is None
    assert [m.record_id for m in by_recipient.items] == ["rec-00003"]
    assert [m.record_id for m in by_record.items] == ["rec-00004"]
    assert [m.record_id for m in window.items] == ["rec-00006", "rec-00005"]
    assert by_status.items == [] and by_status.next_cursor is None


def test_get_message_with_history(engine: Engine, clock: ManualClock, planned: PlannedFactory) -> None:
    job = planned(1).job_id
    with session_scope(engine) as session:
        outbox.insert_planned(session, [planned(1)], company_id="c1", now=clock.now())
        outbox.claim_due(session, "w1", now=clock.now(), limit=1, lease_seconds=30)
        outbox.mark_submitting(session, job, "w1", now=clock.now(), lease_seconds=30)
        outbox.mark_sent(session, job, sid="SM" + "1" * 32, twilio_status="queued", now=clock.now())
        outbox.apply_status(session, sid="SM" + "1" * 32, twilio_status="delivered", now=clock.now())
    with session_scope(engine) as session:
        detail = get_message(session, job)
        assert get_message(session, "nope") is None
    assert detail is not None
    assert (detail.message.company_id, detail.message.record_number) == ("c1", "SI-00001")
    assert [e.status for e in detail.events] == ["planned", "submitting", "queued", "delivered"]


def test_audit_log_pages_newest_first(engine: Engine, clock: ManualClock) -> None:
    with session_scope(engine) as session:
        for n in range(5):
            record_audit(
                session,
                actor="alice",
                action="otp.approved",
                subject=f"change-{n}",
                now=clock.now(),
                details={"n": n},
            )
        record_audit(session, actor="bob", action="credentials.rotated", subject="twilio", now=clock.now())
    with session_scope(engine) as session:
        first = list_audit(session, action="otp.approved", limit=2)
        rest = list_audit(session, action="otp.approved", limit=10, before_id=first[-1].id)
    assert [e.subject for e in first] == ["change-4", "change-3"]
    assert [e.details["n"] for e in rest] == [2, 1, 0]
