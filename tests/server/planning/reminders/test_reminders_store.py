"""Reminders between the engine and the outbox (server.planning.reminders.store_reminders) on a real store:
a full ladder with a promise to pay and a payment, pauses with an end date, caps, the BC-side
switch, test mode, and grouping across a sweep."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from typing import Any

from sqlalchemy import Engine
from sqlmodel import col, select

from engine.evaluate import evaluate
from engine.ruleset import RuleSet
from server.planning.reminders import ReminderReport, store_reminders
from server.settings import ReminderSettings, TestModeSettings
from server.store.db import session_scope
from server.store.pauses import add_pause, lift_pause
from server.store.snapshots import SnapshotIn, put_snapshots
from server.store.tables import OutboxMessage
from tests.server.planning.reminders.conftest import invoice

COMPANY = "c1"
NO_CAPS = ReminderSettings(cap_per_day=0, cap_per_week=0)


def at(day: str) -> datetime:
    return datetime.fromisoformat(day).replace(hour=17, tzinfo=UTC)  # 09:00 in Los Angeles


def sweep(
    db: Engine,
    shipped: RuleSet,
    now: datetime,
    *records: dict[str, Any],
    settings: ReminderSettings = NO_CAPS,
    test_mode: TestModeSettings | None = None,
) -> ReminderReport:
    messages = [m for r in records for m in evaluate("salesInvoices", r, shipped, now, event="sweep")]
    with session_scope(db) as session:
        return store_reminders(
            session, messages, shipped, company_id=COMPANY, now=now, settings=settings, test_mode=test_mode
        )


def rows(db: Engine) -> list[OutboxMessage]:
    with session_scope(db) as session:
        found = list(session.exec(select(OutboxMessage).order_by(col(OutboxMessage.id))).all())
        for row in found:
            session.expunge(row)
        return found


def summary(db: Engine) -> list[tuple[str, str, str | None, str | None]]:
    return [
        (
            r.created_at.date().isoformat(),
            r.status,
            r.error_code,
            r.body[:40] if r.status == "planned" else None,
        )
        for r in rows(db)
        if r.rule_id == "invoice-overdue"
    ]


def test_a_full_ladder_with_a_promise_to_pay_and_a_payment_in_the_middle(
    db: Engine, shipped: RuleSet
) -> None:
    record = invoice("PS-9001", "2026-12-10", 480)
    day = date(2026, 12, 6)
    while day <= date(2026, 12, 31):
        if day == date(2026, 12, 12):
            record = {**record, "dueDate": "2026-12-20"}  # the customer promised to pay by the 20th
        if day == date(2026, 12, 28):
            with session_scope(db) as session:  # a payment journal line for the invoice shows up
                put_snapshots(
                    session,
                    COMPANY,
                    "customerPayments",
                    [
                        SnapshotIn(
                            "pay-1", {"id": "pay-1", "appliesToInvoiceNumber": "PS-9001", "amount": 480}
                        )
                    ],
                    now=at(day.isoformat()),
                )
        if day == date(2026, 12, 30):
            record = {**record, "status": "Paid", "remainingAmount": 0}  # the payment was posted
        sweep(db, shipped, at(day.isoformat()), record)
        day += timedelta(days=1)
    assert summary(db) == [
        ("2026-12-07", "planned", None, "Northwind Outdoor Supply: invoice PS-900"),  # 3 days before due
        ("2026-12-11", "planned", None, "Northwind Outdoor Supply: invoice PS-900"),  # 1 day overdue
        ("2026-12-17", "planned", None, "Northwind Outdoor Supply: invoice PS-900"),  # new due date: -3 again
        ("2026-12-21", "planned", None, "Northwind Outdoor Supply: invoice PS-900"),  # 1 day overdue again
        ("2026-12-29", "skipped", "payment-grace", None),  # stage 7 (day 9) while a payment is on its way
    ]
    bodies = [r.body for r in rows(db)]
    assert "is due on 10 Dec 2026" in bodies[0] and "is due on 20 Dec 2026" in bodies[2]
    assert "is 1 day overdue" in bodies[1] and "was due 20 Dec 2026" in bodies[3]


def test_a_pause_holds_reminders_until_its_end_then_the_ladder_resumes(db: Engine, shipped: RuleSet) -> None:
    record = invoice("PS-9002", "2026-11-20")
    with session_scope(db) as session:
        add_pause(
            session,
            scope="customer",
            subject="C00420",
            until=datetime(2026, 11, 30, 8, 0, tzinfo=UTC),
            reason="promise to pay",
            created_by="test",
            now=at("2026-11-21"),
        )
    report = sweep(db, shipped, at("2026-11-21"), record)
    assert (report.paused, report.inserted != []) == (1, True)
    sweep(db, shipped, at("2026-11-22"), record)  # the same pause is recorded once
    [held] = rows(db)
    assert (held.status, held.error_code) == ("skipped", "paused")
    assert held.error_message == "customer C00420 paused until 2026-11-30T08:00:00+00:00 (promise to pay)"
    sweep(db, shipped, at("2026-11-30"), record)  # the pause ended this morning: stage 7 (day 10) goes
    assert [(r.status, r.error_code) for r in rows(db)] == [("skipped", "paused"), ("planned", None)]
    assert "10 days overdue" in rows(db)[1].body


def test_a_lifted_invoice_pause_no_longer_holds(db: Engine, shipped: RuleSet) -> None:
    record = invoice("PS-9003", "2026-11-20")
    with session_scope(db) as session:
        pause = add_pause(
            session,
            scope="invoice",
            subject="ps-9003",  # numbers match case-insensitively
            until=datetime(2026, 12, 31, tzinfo=UTC),
            reason="disputed",
            created_by="test",
            now=at("2026-11-21"),
        )
        pause_id = pause.id
    assert sweep(db, shipped, at("2026-11-21"), record).paused == 1
    with session_scope(db) as session:
        assert pause_id is not None and lift_pause(session, pause_id, by="test", now=at("2026-11-22"))
    assert sweep(db, shipped, at("2026-11-22"), record).paused == 0
    assert [r.status for r in rows(db)] == ["skipped", "planned"]


def test_caps_record_the_excess_and_retry_on_a_later_sweep(db: Engine, shipped: RuleSet) -> None:
    capped = ReminderSettings(cap_per_day=1, cap_per_week=5)
    # Different stages for one customer: not grouped, so three messages to one number.
    records = [invoice("PS-1", "2026-11-24"), invoice("PS-2", "2026-11-15"), invoice("PS-3", "2026-11-27")]
    report = sweep(db, shipped, at("2026-11-25"), *records, settings=capped)
    assert report.capped == 2
    assert [(r.status, r.error_code) for r in rows(db)] == [
        ("planned", None),
        ("skipped", "capped"),
        ("skipped", "capped"),
    ]
    assert (
        rows(db)[1].error_message
        == "recipient already had 1 reminder(s) per day; tried again on the next sweep"
    )
    sweep(db, shipped, at("2026-11-25"), *records, settings=capped)  # same day: nothing new recorded
    assert len(rows(db)) == 3
    sweep(db, shipped, at("2026-11-26"), *records, settings=capped)  # a day later one more goes out
    assert [r.status for r in rows(db)].count("planned") == 2


def test_a_bc_field_switches_reminders_off(db: Engine, shipped: RuleSet) -> None:
    settings = ReminderSettings(cap_per_day=0, cap_per_week=0, suppress_field="customer.blocked")
    blocked = invoice(
        "PS-1",
        "2026-11-24",
        customer={"displayName": "N", "phoneNumber": "503-555-0142", "blocked": "Invoice"},
    )
    report = sweep(db, shipped, at("2026-11-25"), blocked, settings=settings)
    assert report.suppressed == 1
    [row] = rows(db)
    assert (row.status, row.error_code) == ("skipped", "suppressed")
    assert row.error_message == "reminders are switched off in BC: customer.blocked is 'Invoice'"


def test_grouping_through_the_store_and_members_point_at_the_group(db: Engine, shipped: RuleSet) -> None:
    records = [invoice(f"PS-{n}", "2026-11-24", 10 * n) for n in (1, 2, 3)]
    report = sweep(db, shipped, at("2026-11-25"), *records)
    assert report.grouped == 1
    grouped = [r for r in rows(db) if r.record_id is None]
    assert len(grouped) == 1 and grouped[0].status == "planned"
    members = [r for r in rows(db) if r.record_id is not None]
    assert {(m.status, m.error_code, m.group_job_id) for m in members} == {
        ("skipped", "grouped", grouped[0].job_id)
    }
    # A fourth invoice reaching the stage the next day is sent alone: the others are not listed again.
    sweep(db, shipped, at("2026-11-26"), *records, invoice("PS-4", "2026-11-25", 40))
    new = [r for r in rows(db) if r.record_number == "PS-4"]
    assert [(r.status, r.group_job_id) for r in new] == [("planned", None)]
    assert len(rows(db)) == 5


def test_test_mode_diverts_every_send_and_marks_it(db: Engine, shipped: RuleSet) -> None:
    divert = TestModeSettings(enabled=True, number="+44 7700 900123")
    records = [invoice("PS-1", "2026-11-24"), invoice("PS-2", "2026-11-15")]
    sweep(db, shipped, at("2026-11-25"), *records, test_mode=divert)
    sent = [r for r in rows(db) if r.status == "planned"]
    assert {r.recipient for r in sent} == {"+447700900123"}
    assert all(r.is_test for r in rows(db))
    assert all(r.body.startswith("[TEST for +1 50** ***142] ") for r in sent)
    # Switching test mode off: the real reminders are not taken for repeats of the test sends.
    sweep(db, shipped, at("2026-11-25"), *records)
    real = [r for r in rows(db) if not r.is_test]
    assert {r.recipient for r in real} == {"+15035550142"} and len(real) == 2


def test_test_mode_without_a_number_only_logs(db: Engine, shipped: RuleSet) -> None:
    sweep(
        db,
        shipped,
        at("2026-11-25"),
        invoice("PS-1", "2026-11-24"),
        test_mode=TestModeSettings(enabled=True),
    )
    [row] = rows(db)
    assert (row.status, row.error_code, row.is_test) == ("skipped", "test-log-only", True)
