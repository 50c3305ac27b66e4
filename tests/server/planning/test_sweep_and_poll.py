"""The daily sweep (time-based rules) and the watermark poller, against the BC simulator over HTTP."""

from __future__ import annotations

from datetime import timedelta

import pytest

from server.planning.poller import Poller
from server.planning.sweep import Sweeper
from server.runtime.clock import ManualClock
from server.sandbox.stack import Stack
from tests.server.planning.conftest import GB, outbox_rows, record_by_number

pytestmark = pytest.mark.timeout(90)


def new_invoice(
    stack: Stack, clock: ManualClock, *, due_days_ago: int, number: str = "PS-INV109000"
) -> dict[str, object]:
    adatum = record_by_number(stack, "customers", "C10000")
    today = clock.now().date()
    return stack.bc_sim.create_record(
        GB,
        "salesInvoices",
        {
            "number": number,
            "customerId": adatum["id"],
            "invoiceDate": (today - timedelta(days=30 + due_days_ago)).isoformat(),
            "postingDate": (today - timedelta(days=30 + due_days_ago)).isoformat(),
            "dueDate": (today - timedelta(days=due_days_ago)).isoformat(),
            "totalAmountIncludingTax": 1234.5,
            "remainingAmount": 1234.5,
            "status": "Open",
        },
    )


async def test_invoice_becoming_overdue_is_swept_into_one_planned_message(
    stack: Stack, clock: ManualClock
) -> None:
    invoice = new_invoice(stack, clock, due_days_ago=-5)  # due in 5 days: before the ladder's first stage
    sweeper = Sweeper(stack.services)
    assert await sweeper.sweep_now() > 0
    assert outbox_rows(stack, record_id=invoice["id"]) == []
    clock.advance(timedelta(days=6))  # one day overdue: the first reminder
    await sweeper.sweep_now()
    await sweeper.sweep_now()  # a second sweep the same day plans nothing new
    rows = outbox_rows(stack, record_id=invoice["id"])
    assert [(r.rule_id, r.recipient, r.status) for r in rows] == [
        ("invoice-overdue", "+442079460018", "planned")
    ]
    due = (clock.now().date() - timedelta(days=1)).strftime("%d %b %Y").lstrip("0")
    assert rows[0].body == (
        f"Adatum Corporation: invoice PS-INV109000 for GBP 1,234.50 was due {due} and is 1 day overdue. "
        "Please pay or call us if this is wrong."
    )


async def test_one_customers_invoices_at_the_same_stage_become_one_grouped_message(
    lite_stack: Stack, clock: ManualClock
) -> None:
    stack = lite_stack
    first = new_invoice(stack, clock, due_days_ago=-5, number="PS-INV109001")
    second = new_invoice(stack, clock, due_days_ago=-5, number="PS-INV109002")
    clock.advance(timedelta(days=6))
    await Sweeper(stack.services, page_size=1).sweep_now()  # the two invoices sit on different pages
    members = {
        r.record_id: r
        for r in outbox_rows(stack, rule_id="invoice-overdue")
        if r.record_id in (first["id"], second["id"])
    }
    assert {r.status for r in members.values()} == {"skipped"}
    [group_id] = {r.group_job_id for r in members.values()}
    [grouped] = outbox_rows(stack, job_id=group_id)
    assert (grouped.status, grouped.recipient, grouped.record_id) == ("planned", "+442079460018", None)
    assert "PS-INV109001" in grouped.body and "PS-INV109002" in grouped.body


async def test_sweep_streams_open_invoices_page_by_page_with_the_rules_expansions(lite_stack: Stack) -> None:
    stack = lite_stack
    open_invoices = [
        r
        for r in stack.bc_sim.records(GB, "salesInvoices")
        if r["status"] == "Open" and r["remainingAmount"] > 0
    ]
    stack.bc_sim.clear_requests()
    assert await Sweeper(stack.services, page_size=2).sweep_now() == len(open_invoices)
    reads = [r for r in stack.bc_sim.requests(path_contains="/salesInvoices", method="GET")]
    assert len(reads) == (len(open_invoices) + 1) // 2  # followed @odata.nextLink, two per page
    assert reads[0]["query"]["$filter"] == "status eq 'Open' and remainingAmount gt 0"
    assert reads[0]["query"]["$expand"] == "customer"
    assert all("$skiptoken" in r["query"] for r in reads[1:])


async def test_scheduled_sweep_runs_once_a_day_after_the_sweep_time(
    lite_stack: Stack, clock: ManualClock
) -> None:
    stack = lite_stack
    sweeper = Sweeper(stack.services)  # 08:00 Europe/London; the clock starts at 09:00 London
    assert await sweeper.run_once() > 0
    assert await sweeper.run_once() == 0  # already swept today
    clock.advance(timedelta(hours=22))  # 07:00 the next day: before the sweep time
    assert await sweeper.run_once() == 0
    clock.advance(timedelta(hours=1, minutes=30))
    assert await sweeper.run_once() > 0


async def test_purchase_order_change_is_picked_up_by_polling_once(stack: Stack, clock: ManualClock) -> None:
    poller = Poller(stack.services)
    await poller.run_once()  # the first poll reads everything: no previous versions, nothing changed
    assert outbox_rows(stack, rule_id="purchase-order-changed") == []
    clock.advance(timedelta(minutes=1))
    order = record_by_number(stack, "purchaseOrders", "PO106070")
    stack.bc_sim.update_record(GB, "purchaseOrders", order["id"], {"totalAmountIncludingTax": 4500.0})
    stack.bc_sim.clear_requests()
    assert await poller.run_once() == 1
    [read] = stack.bc_sim.requests(path_contains="/purchaseOrders", method="GET")
    assert read["query"]["$filter"].startswith("lastModifiedDateTime gt ")
    rows = outbox_rows(stack, rule_id="purchase-order-changed")
    assert [(r.record_number, r.recipient) for r in rows] == [("PO106070", "+12065550123")]
    assert rows[0].body.startswith(
        "Purchase order PO106070 (Cascade Packaging Ltd.) changed: total GBP 4,092.00 -> GBP 4,500.00;"
    )
    # The next poll re-reads the overlap window but skips the version it already handled.
    assert await poller.run_once() == 0
    assert len(outbox_rows(stack, rule_id="purchase-order-changed")) == 1


async def test_poller_reads_payment_lines_as_a_fallback_and_names_the_journal_line(lite_stack: Stack) -> None:
    stack = lite_stack
    await Poller(stack.services).run_once()
    receipts = outbox_rows(stack, rule_id="payment-receipt")
    assert sorted(r.record_number or "" for r in receipts) == ["GENERAL/G02318/10000", "GENERAL/G02319/20000"]
