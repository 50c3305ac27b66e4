"""BC change -> notification -> inbox -> fetcher -> outbox, over loopback HTTP with the BC simulator."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path

import httpx
import pytest

from server.bc.models import format_bc_datetime
from server.planning.fetcher import Fetcher
from server.runtime.clock import ManualClock
from server.sandbox.stack import Stack
from server.store.db import read_scope
from server.store.snapshots import get_snapshot
from tests.server.planning.conftest import (
    GB,
    client_state_at_bc,
    deliver,
    inbox_rows,
    make_stack,
    outbox_rows,
    record_by_number,
    subscription_rows,
)

pytestmark = pytest.mark.timeout(90)


def customer_fetches(stack: Stack) -> list[str]:
    """`$filter` of each read the connector made of the customers collection ("" when none)."""
    return [
        r["query"].get("$filter", "")
        for r in stack.bc_sim.requests(path_contains="/customers", method="GET")
        if "/api/v2.0/" in r["path"]
    ]


async def test_credit_limit_crossing_warns_once_and_not_again_above_the_limit(stack: Stack) -> None:
    await stack.run("subscriptions")
    tailspin = record_by_number(stack, "customers", "C10080")  # 9,650 of a 10,000 limit
    stack.bc_sim.update_record(GB, "customers", tailspin["id"], {"balanceDue": 10100.0})
    assert await deliver(stack) == ["delivered"]
    assert await stack.run("fetcher") == 1
    rows = outbox_rows(stack, rule_id="credit-limit-crossed")
    assert [(r.record_number, r.recipient, r.status) for r in rows] == [("C10080", "+12065550118", "planned")]
    assert rows[0].body == (
        "Credit limit crossed: Tailspin Toys (C10080) owes GBP 10,100.00, over its limit of "
        "GBP 10,000.00 (was GBP 9,650.00)."
    )
    stack.bc_sim.advance_clock(timedelta(seconds=5))  # a later change has a later lastModifiedDateTime
    stack.bc_sim.update_record(GB, "customers", tailspin["id"], {"balanceDue": 10500.0})
    await deliver(stack)
    assert await stack.run("fetcher") == 1
    assert len(outbox_rows(stack, rule_id="credit-limit-crossed")) == 1
    with read_scope(stack.services.db) as session:
        snapshot = get_snapshot(session, GB, "customers", tailspin["id"])
        assert snapshot is not None and snapshot.data["balanceDue"] == 10500


async def test_duplicate_notifications_make_one_inbox_row_one_fetch_and_one_outbox_row(stack: Stack) -> None:
    await stack.run("subscriptions")
    tailspin = record_by_number(stack, "customers", "C10080")
    stack.bc_sim.update_record(GB, "customers", tailspin["id"], {"balanceDue": 10100.0})
    assert await deliver(stack) == ["delivered"]
    # BC redelivers the same notification (e.g. our 2xx was lost on the way): one inbox row.
    [first] = inbox_rows(stack)
    [sub] = [s for s in subscription_rows(stack, "active") if s.entity == "customers"]
    redelivery = {
        "subscriptionId": sub.subscription_id,
        "clientState": client_state_at_bc(stack, sub),
        "expirationDateTime": format_bc_datetime(sub.expires_at or first.received_at),
        "resource": first.resource,
        "changeType": first.change_type,
        "lastModifiedDateTime": format_bc_datetime(first.last_modified or first.received_at),
    }
    async with httpx.AsyncClient(timeout=10) as client:
        response = await client.post(f"{stack.url}/webhooks/bc", json={"value": [redelivery]})
    assert response.status_code == 202
    assert len(inbox_rows(stack)) == 1
    # A second, separate change to the same record: coalesced into the same fetch.
    stack.bc_sim.advance_clock(timedelta(seconds=5))
    stack.bc_sim.update_record(GB, "customers", tailspin["id"], {"phoneNumber": "+44 7700 900457"})
    await deliver(stack)
    stack.bc_sim.clear_requests()
    await stack.run("fetcher")
    await stack.run("fetcher")
    assert len(outbox_rows(stack, rule_id="credit-limit-crossed")) == 1
    fetches = [q for q in customer_fetches(stack) if q.startswith("id eq")]
    assert len(fetches) == 1 and fetches[0].count(tailspin["id"]) == 1
    assert all(r.status == "done" for r in inbox_rows(stack))


async def test_purchase_invoice_posted_above_the_amount_plans_the_approver_message(stack: Stack) -> None:
    await stack.run("subscriptions")
    invoice = record_by_number(stack, "purchaseInvoices", "PI108340")  # Draft, 17,400.00 incl. tax
    stack.bc_sim.update_record(GB, "purchaseInvoices", invoice["id"], {"status": "Open"})
    await deliver(stack)
    await stack.run("fetcher")
    rows = outbox_rows(stack, rule_id="purchase-invoice-approval")
    assert [(r.record_number, r.recipient, r.status) for r in rows] == [
        ("PI108340", "+12065550100", "planned")
    ]
    assert "PI108340" in rows[0].body


async def test_payment_journal_line_plans_a_receipt_naming_the_line(stack: Stack) -> None:
    await stack.run("subscriptions")
    journal = record_by_number(stack, "customerPaymentJournals", "GENERAL", field="code")
    adatum = record_by_number(stack, "customers", "C10000")
    invoice = record_by_number(stack, "salesInvoices", "PS-INV103001")
    await stack.run("fetcher")
    line = stack.bc_sim.create_record(
        GB,
        "customerPayments",
        {
            "journalId": journal["id"],
            "customerId": adatum["id"],
            "documentNumber": "G02400",
            "amount": 1500.0,
            "appliesToInvoiceId": invoice["id"],
            "appliesToInvoiceNumber": "PS-INV103001",
        },
    )
    assert await deliver(stack) == ["delivered"]
    [note] = inbox_rows(stack)
    assert (note.entity, note.record_id) == ("customerPaymentJournals", journal["id"])
    await stack.run("fetcher")
    receipts = outbox_rows(stack, rule_id="payment-receipt", record_id=line["id"])
    assert [(r.record_number, r.recipient, r.status) for r in receipts] == [
        (f"GENERAL/G02400/{line['lineNumber']}", "+442079460018", "planned")
    ]
    # The poller's fallback read of the same line plans nothing more (same job id).
    await stack.run("poller")
    assert len(outbox_rows(stack, rule_id="payment-receipt", record_id=line["id"])) == 1


async def test_collection_notification_gets_the_url_as_given_and_pages_through(lite_stack: Stack) -> None:
    stack = lite_stack
    await stack.run("subscriptions")
    stack.bc_sim.set_collection_threshold(1)  # more than 1 change in the window -> one 'collection' item
    tailspin = record_by_number(stack, "customers", "C10080")
    trey = record_by_number(stack, "customers", "C10010")
    stack.bc_sim.update_record(GB, "customers", tailspin["id"], {"balanceDue": 10100.0})
    stack.bc_sim.update_record(GB, "customers", trey["id"], {"phoneNumber": "020 7946 0124"})
    await deliver(stack)
    [note] = inbox_rows(stack)
    assert note.change_type == "collection" and note.record_id is None
    stack.bc_sim.clear_requests()
    assert await stack.run("fetcher") == 1
    assert any(q.startswith("lastModifiedDateTime gt") for q in customer_fetches(stack))
    assert [r.record_number for r in outbox_rows(stack, rule_id="credit-limit-crossed")] == ["C10080"]
    assert inbox_rows(stack)[0].status == "done"


async def test_bc_errors_release_the_batch_and_a_later_pass_completes_it(lite_stack: Stack) -> None:
    stack = lite_stack
    await stack.run("subscriptions")
    tailspin = record_by_number(stack, "customers", "C10080")
    stack.bc_sim.update_record(GB, "customers", tailspin["id"], {"balanceDue": 10100.0})
    await deliver(stack)
    stack.bc_sim.inject_fault(
        status=503, retry_after=0, remaining=None, method="GET", path_contains="/customers"
    )
    assert await stack.run("fetcher") == 0
    [note] = inbox_rows(stack)
    assert (note.status, note.attempts) == ("pending", 1)
    assert note.last_error is not None and "503" in note.last_error
    assert outbox_rows(stack) == []
    stack.bc_sim.clear_faults()
    assert await stack.run("fetcher") == 1
    assert inbox_rows(stack)[0].status == "done"
    assert len(outbox_rows(stack, rule_id="credit-limit-crossed")) == 1


async def test_attempts_are_capped_then_the_item_is_failed_with_its_error(lite_stack: Stack) -> None:
    stack = lite_stack
    await stack.run("subscriptions")
    tailspin = record_by_number(stack, "customers", "C10080")
    stack.bc_sim.update_record(GB, "customers", tailspin["id"], {"balanceDue": 10100.0})
    await deliver(stack)
    stack.bc_sim.inject_fault(status=403, remaining=None, method="GET", path_contains="/customers")
    fetcher = Fetcher(stack.services, max_attempts=2)
    await fetcher.run_once()
    assert inbox_rows(stack)[0].status == "pending"
    await fetcher.run_once()
    [note] = inbox_rows(stack)
    assert (note.status, note.attempts) == ("failed", 2)
    assert note.last_error is not None and "AuthorizationError" in note.last_error


DELETED_RULE = """\
version: 1
id: customer-deleted
description: Tell credit control when a customer record is deleted in BC.
trigger:
  entity: customers
  events: [deleted]
when:
  - creditLimit: {gt: 0}
recipient:
  phone: "+1 206 555 0118"
send:
  channel: sms
  template: customer-deleted.sms.j2
once_per: [id]
"""


@pytest.fixture
async def deleted_rule_stack(tmp_path: Path, clock: ManualClock) -> AsyncIterator[Stack]:
    rules, templates = tmp_path / "rules", tmp_path / "templates"
    rules.mkdir()
    templates.mkdir()
    (rules / "customer-deleted.yaml").write_text(DELETED_RULE)
    (templates / "customer-deleted.sms.j2").write_text(
        "Customer {{ displayName }} ({{ number }}) was deleted."
    )
    url = f"sqlite:///{tmp_path / 'connector.sqlite3'}"
    async with make_stack(url, clock, rules_dir=rules, templates_dir=templates) as running:
        yield running


async def test_deleted_record_is_not_fetched_and_rules_see_its_last_snapshot(
    deleted_rule_stack: Stack,
) -> None:
    stack = deleted_rule_stack
    await stack.run("subscriptions")
    with read_scope(stack.services.db) as session:  # primed when the subscription was created
        assert get_snapshot(session, GB, "customers", record_by_number(stack, "customers", "C10000")["id"])
    trey = record_by_number(stack, "customers", "C10010")
    stack.bc_sim.delete_record(GB, "customers", trey["id"])
    await deliver(stack)
    stack.bc_sim.clear_requests()
    assert await stack.run("fetcher") == 1
    assert customer_fetches(stack) == []  # nothing to fetch for a deleted record
    rows = outbox_rows(stack, rule_id="customer-deleted")
    assert [(r.record_id, r.body) for r in rows] == [
        (trey["id"], "Customer Trey Research (C10010) was deleted.")
    ]
    with read_scope(stack.services.db) as session:
        assert get_snapshot(session, GB, "customers", trey["id"]) is None


async def test_record_deleted_before_the_fetch_is_handled_as_deleted(deleted_rule_stack: Stack) -> None:
    stack = deleted_rule_stack
    await stack.run("subscriptions")
    adatum = record_by_number(stack, "customers", "C10000")
    stack.bc_sim.update_record(GB, "customers", adatum["id"], {"phoneNumber": "+44 20 7946 0019"})
    await deliver(stack)
    stack.bc_sim.delete_record(GB, "customers", adatum["id"])  # gone before the fetcher reads it
    assert await stack.run("fetcher") == 1
    rows = outbox_rows(stack, rule_id="customer-deleted")
    assert [(r.record_id, r.body) for r in rows] == [
        (adatum["id"], "Customer Adatum Corporation (C10000) was deleted.")
    ]
    with read_scope(stack.services.db) as session:
        assert get_snapshot(session, GB, "customers", adatum["id"]) is None
    # BC's own `deleted` notification follows later: the same job id, so no second message.
    await deliver(stack)
    await stack.run("fetcher")
    assert len(outbox_rows(stack, rule_id="customer-deleted")) == 1
