"""A reminder held overnight is checked against BC again when its send window opens (server/sending/release.py).

End to end with both simulators: the sweep plans at night, the send window holds, BC changes (the
customer pays, pays part, BC is down), the clock reaches the window, the dispatcher decides.
"""

from __future__ import annotations

from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import pytest
from sqlmodel import col, select

from server.planning.sweep import Sweeper
from server.runtime.clock import ManualClock
from server.sandbox.stack import Stack
from server.store.db import read_scope
from server.store.tables import MessageEvent, OutboxMessage
from simulators.bc.seeds.demo import GB_COMPANY_ID
from tests.server.planning.reminders.conftest import (
    customer_with_invoice,
    row_for,
    start,
    sweep_and_dispatch,
    texts_to,
)

pytestmark = pytest.mark.timeout(90)

# Tuesday 24 Nov 2026 21:00 in New York: outside the recipient's send window, which opens at 08:00
# (13:00 UTC on the 25th).
EVENING = datetime(2026, 11, 25, 2, 0, tzinfo=UTC)
MORNING = datetime(2026, 11, 25, 13, 0, tzinfo=UTC)
PHONE, E164 = "+1 212 555 0100", "+12125550100"


def invoice_id(stack: Stack, number: str) -> str:
    [record] = [r for r in stack.bc_sim.records(GB_COMPANY_ID, "salesInvoices") if r["number"] == number]
    return str(record["id"])


def pay(stack: Stack, number: str, remaining: float) -> None:
    changes: dict[str, Any] = {"remainingAmount": remaining}
    if remaining == 0:
        changes["status"] = "Paid"
    stack.bc_sim.update_record(GB_COMPANY_ID, "salesInvoices", invoice_id(stack, number), changes)


def events(stack: Stack, job_id: str) -> list[MessageEvent]:
    with read_scope(stack.services.db) as session:
        rows = session.exec(
            select(MessageEvent).where(col(MessageEvent.job_id) == job_id).order_by(col(MessageEvent.id))
        ).all()
        for row in rows:
            session.expunge(row)
        return list(rows)


def second_invoice(stack: Stack, number: str, *, like: str, amount: float) -> None:
    [first] = [r for r in stack.bc_sim.records(GB_COMPANY_ID, "salesInvoices") if r["number"] == like]
    stack.bc_sim.create_record(
        GB_COMPANY_ID,
        "salesInvoices",
        {
            "number": number,
            "customerId": first["customerId"],
            "invoiceDate": first["invoiceDate"],
            "postingDate": first["postingDate"],
            "dueDate": first["dueDate"],
            "totalAmountIncludingTax": amount,
            "remainingAmount": amount,
            "status": "Open",
        },
    )


async def held_overnight(tmp_path: Path, stacks: list[Stack], *numbers: str) -> tuple[Stack, ManualClock]:
    stack, clock = await start(tmp_path, EVENING)
    stacks.append(stack)
    customer_with_invoice(stack, PHONE, date(2026, 11, 23), numbers[0])
    for number in numbers[1:]:
        second_invoice(stack, number, like=numbers[0], amount=250.0)
    await sweep_and_dispatch(stack)
    clock.advance(MORNING - clock.now())
    return stack, clock


async def release(stack: Stack) -> None:
    await stack.run("dispatcher")
    await stack.twilio_sim.asettle()


async def test_an_invoice_paid_overnight_is_not_reminded(tmp_path: Path, stacks: list[Stack]) -> None:
    stack, _ = await held_overnight(tmp_path, stacks, "PS-RC0001")
    assert row_for(stack, "PS-RC0001").status == "held"
    pay(stack, "PS-RC0001", 0)
    await release(stack)
    row = row_for(stack, "PS-RC0001")
    assert (row.status, row.error_code) == ("skipped", "no-longer-due")
    assert row.error_message is not None and "no longer due at release" in row.error_message
    assert "Open" in row.error_message or "remainingAmount" in row.error_message
    assert texts_to(stack, E164) == []
    # Nothing is left to send later either.
    await release(stack)
    assert texts_to(stack, E164) == []


async def test_a_part_payment_sends_the_amount_still_open(tmp_path: Path, stacks: list[Stack]) -> None:
    stack, _ = await held_overnight(tmp_path, stacks, "PS-RC0002")
    planned = row_for(stack, "PS-RC0002")
    assert "for 99.00" in planned.body
    pay(stack, "PS-RC0002", 40.0)
    await release(stack)
    [body] = texts_to(stack, E164)
    assert "for 40.00" in body and "99.00" not in body
    row = row_for(stack, "PS-RC0002")
    assert row.body == body and row.job_id == planned.job_id
    # The audit keeps the text that was replaced.
    [rewritten] = [e for e in events(stack, row.job_id) if e.detail and "rendered from BC" in e.detail]
    assert rewritten.detail is not None and planned.body in rewritten.detail


async def test_an_unchanged_invoice_is_sent_once_with_a_recorded_release_check(
    tmp_path: Path, stacks: list[Stack]
) -> None:
    stack, _ = await held_overnight(tmp_path, stacks, "PS-RC0003")
    await release(stack)
    await release(stack)
    [body] = texts_to(stack, E164)
    assert "PS-RC0003" in body
    row = row_for(stack, "PS-RC0003")
    assert any(e.detail and e.detail.startswith("still due at release") for e in events(stack, row.job_id))


async def test_a_grouped_reminder_lists_only_the_invoices_still_open(
    tmp_path: Path, stacks: list[Stack]
) -> None:
    stack, _ = await held_overnight(tmp_path, stacks, "PS-RC0004", "PS-RC0005", "PS-RC0006")
    with read_scope(stack.services.db) as session:
        [grouped] = session.exec(
            select(OutboxMessage).where(
                col(OutboxMessage.record_id).is_(None), OutboxMessage.status == "held"
            )
        ).all()
        session.expunge(grouped)
    assert "3 invoices" in grouped.body and "PS-RC0005" in grouped.body
    pay(stack, "PS-RC0005", 0)
    await release(stack)
    [body] = texts_to(stack, E164)
    assert "2 invoices" in body and "PS-RC0004" in body and "PS-RC0006" in body
    assert "PS-RC0005" not in body
    assert "(349.00)" in body  # 99 + 250, without the 250 paid
    with read_scope(stack.services.db) as session:
        sent = session.exec(select(OutboxMessage).where(OutboxMessage.job_id == grouped.job_id)).one()
        assert sent.record_number == "2 documents" and sent.twilio_sid is not None
    detail = " ".join(e.detail or "" for e in events(stack, grouped.job_id))
    assert "no longer listed: PS-RC0005" in detail


async def test_a_grouped_reminder_whose_invoices_were_all_paid_is_skipped(
    tmp_path: Path, stacks: list[Stack]
) -> None:
    stack, _ = await held_overnight(tmp_path, stacks, "PS-RC0007", "PS-RC0008")
    pay(stack, "PS-RC0007", 0)
    pay(stack, "PS-RC0008", 0)
    await release(stack)
    assert texts_to(stack, E164) == []
    with read_scope(stack.services.db) as session:
        [grouped] = session.exec(select(OutboxMessage).where(col(OutboxMessage.record_id).is_(None))).all()
        session.expunge(grouped)
    assert grouped.status == "skipped" and grouped.error_code == "no-longer-due"
    assert grouped.error_message is not None
    assert "PS-RC0007" in grouped.error_message and "PS-RC0008" in grouped.error_message


async def test_bc_down_at_release_holds_again_then_sends_once(tmp_path: Path, stacks: list[Stack]) -> None:
    stack, clock = await held_overnight(tmp_path, stacks, "PS-RC0009")
    # Retry-After keeps the client's in-line retries short; every one of them fails.
    stack.bc_sim.inject_fault(
        status=503, retry_after=0.05, remaining=None, method="GET", path_contains="salesInvoices"
    )
    await release(stack)
    row = row_for(stack, "PS-RC0009")
    assert row.status == "held" and row.hold_until is not None and row.hold_until > MORNING
    assert texts_to(stack, E164) == []
    stack.bc_sim.state.clear_faults()
    clock.advance(row.hold_until - clock.now())
    await release(stack)
    assert len(texts_to(stack, E164)) == 1


async def test_a_job_sent_inside_its_window_reads_nothing_more_from_bc(
    tmp_path: Path, stacks: list[Stack]
) -> None:
    # 10:00 in New York: inside the window, so nothing is held and nothing is re-read.
    stack, _ = await start(tmp_path, datetime(2026, 11, 25, 15, 0, tzinfo=UTC))
    stacks.append(stack)
    customer_with_invoice(stack, PHONE, date(2026, 11, 23), "PS-RC0010")
    await Sweeper(stack.services).sweep_now()
    reads = len(invoice_reads(stack))
    await release(stack)
    assert len(texts_to(stack, E164)) == 1
    assert len(invoice_reads(stack)) == reads


def invoice_reads(stack: Stack) -> list[dict[str, Any]]:
    return [
        entry
        for entry in stack.bc_sim.state.request_log
        if entry.get("method") == "GET" and "salesInvoices" in str(entry.get("path"))
    ]


def test_the_release_check_is_for_held_sweep_reminders_only(tmp_path: Path) -> None:
    from engine.loader import load_ruleset
    from server.sending.release import needs_release_check

    ruleset = load_ruleset(Path(__file__).resolve().parents[4] / "rules")
    now = datetime(2026, 11, 25, tzinfo=UTC)

    def row(rule_id: str, status: str, record_id: str | None = "r1", is_test: bool = False) -> OutboxMessage:
        return OutboxMessage(
            job_id="mlc-x",
            rule_id=rule_id,
            entity="salesInvoices",
            company_id=GB_COMPANY_ID,
            record_id=record_id,
            channel="sms",
            body="",
            dedupe_key="",
            status=status,
            next_attempt_at=now,
            created_at=now,
            updated_at=now,
            is_test=is_test,
        )

    assert needs_release_check(row("invoice-overdue", "held"), ruleset)
    assert needs_release_check(row("invoice-overdue", "held", record_id=None), ruleset)  # grouped
    assert not needs_release_check(row("invoice-overdue", "planned"), ruleset)
    assert not needs_release_check(row("invoice-overdue", "held", is_test=True), ruleset)
    assert not needs_release_check(row("payment-receipt", "held"), ruleset)  # an event rule
    assert not needs_release_check(row("no-such-rule", "held"), ruleset)
