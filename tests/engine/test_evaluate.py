"""Planned messages from the shipped rules: stable job ids, dedupe keys, skips, the rule set's indexes."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from engine.evaluate import evaluate
from engine.ruleset import RuleSet

NOW = datetime(2026, 11, 25, 17, 0, tzinfo=UTC)


def invoice(**changes: Any) -> dict[str, Any]:
    record: dict[str, Any] = {
        "id": "5a0e7c12-9d4b-ef11-8a6b-6045bde9c1a2",
        "number": "PS-INV104187",
        "status": "Open",
        "dueDate": "2026-11-17",
        "remainingAmount": 5328.6,
        "currencyCode": "USD",
        "customerId": "b7e2d4a1-5c3f-ef11-8a6b-6045bde9c1a2",
        "customer": {"displayName": "Northwind", "phoneNumber": "503-555-0142", "blocked": " "},
    }
    record.update(changes)
    return record


def test_same_inputs_same_job_id(shipped: RuleSet) -> None:
    # Ten days overdue: the ladder's 7-day stage (it starts on day 9, after two grace days).
    [first] = evaluate("salesInvoices", invoice(dueDate="2026-11-15"), shipped, NOW, event="sweep")
    [again] = evaluate(
        "salesInvoices", invoice(dueDate="2026-11-15"), shipped, NOW + timedelta(days=1), event="sweep"
    )
    assert first.job_id == again.job_id  # the next day's sweep is the same reminder (stage 7)
    assert re.fullmatch(r"mlc-[0-9a-f]{40}", first.job_id)
    assert first.dedupe_key == (
        "invoice-overdue/salesInvoices/id=5a0e7c12-9d4b-ef11-8a6b-6045bde9c1a2,dueDate=2026-11-15,stage=7"
    )
    assert first.to == "+15035550142"
    assert first.record_number == "PS-INV104187"
    assert first.timezone == "America/Los_Angeles"
    assert first.quiet_hours == "20:00-08:00"


def test_new_due_date_or_stage_gives_a_new_job_id(shipped: RuleSet) -> None:
    [base] = evaluate("salesInvoices", invoice(), shipped, NOW, event="sweep")
    [moved] = evaluate("salesInvoices", invoice(dueDate="2026-11-16"), shipped, NOW, event="sweep")
    [later] = evaluate("salesInvoices", invoice(), shipped, NOW + timedelta(days=7), event="sweep")
    assert len({base.job_id, moved.job_id, later.job_id}) == 3
    assert later.dedupe_key.endswith("stage=14")


def test_phone_change_keeps_the_job_id(shipped: RuleSet) -> None:
    # The id names the recipient as written in the rule (customer.phoneNumber), not the number:
    # a corrected number must not produce a second reminder.
    [a] = evaluate("salesInvoices", invoice(), shipped, NOW, event="sweep")
    changed = invoice(customer={"displayName": "Northwind", "phoneNumber": "+1 503 555 0199", "blocked": " "})
    [b] = evaluate("salesInvoices", changed, shipped, NOW, event="sweep")
    assert a.job_id == b.job_id
    assert b.to == "+15035550199"


@pytest.mark.parametrize(
    ("phone", "code"),
    [
        (None, "ML401"),
        ("", "ML401"),
        ("ask reception", "ML401"),
        ("555-01", "ML402"),
        ("+1 503 555 0142 ext. 12", "ML403"),
    ],
)
def test_unusable_phone_is_a_recorded_skip(shipped: RuleSet, phone: str | None, code: str) -> None:
    record = invoice(customer={"displayName": "Northwind", "phoneNumber": phone, "blocked": " "})
    [message] = evaluate("salesInvoices", record, shipped, NOW, event="sweep")
    assert message.to is None
    assert message.skip_code == code
    assert message.skip_reason
    assert message.body.startswith("Northwind: invoice PS-INV104187")


def test_missing_expansion_is_named_in_the_skip(shipped: RuleSet) -> None:
    record = invoice()
    del record["customer"]
    [message] = evaluate("salesInvoices", record, shipped, NOW, event="sweep")
    assert message.skip_code is not None
    assert message.to is None


def test_crossing_fires_once_per_crossing(shipped: RuleSet) -> None:
    customer = {
        "id": "C1",
        "number": "C00420",
        "displayName": "Northwind",
        "currencyCode": "USD",
        "creditLimit": 50000,
    }
    before = {**customer, "balanceDue": 49000, "lastModifiedDateTime": "2026-11-20T10:00:00Z"}
    crossing = {**customer, "balanceDue": 51000, "lastModifiedDateTime": "2026-11-25T10:00:00Z"}
    assert evaluate("customers", crossing, shipped, NOW) == []  # no previous: no claim of a crossing
    [first] = evaluate("customers", crossing, shipped, NOW, before)
    [replay] = evaluate("customers", crossing, shipped, NOW, before)
    assert first.job_id == replay.job_id
    assert first.dedupe_key.endswith("crossing=2026-11-25T10:00:00Z")
    still_over = {**crossing, "balanceDue": 52000, "lastModifiedDateTime": "2026-11-26T10:00:00Z"}
    assert evaluate("customers", still_over, shipped, NOW, crossing) == []
    dropped = {**crossing, "balanceDue": 40000, "lastModifiedDateTime": "2026-11-27T10:00:00Z"}
    again = {**crossing, "balanceDue": 50500, "lastModifiedDateTime": "2026-11-28T10:00:00Z"}
    [second] = evaluate("customers", again, shipped, NOW, dropped)
    assert second.job_id != first.job_id


def test_event_selects_rules(shipped: RuleSet) -> None:
    assert evaluate("salesInvoices", invoice(), shipped, NOW, event="updated") == []
    assert [r.id for r in shipped.rules_for("salesInvoices", "sweep")] == [
        "invoice-due-soon",
        "invoice-overdue",
    ]


def test_ruleset_indexes(shipped: RuleSet) -> None:
    assert shipped.entities(["created", "updated", "deleted"]) == {"customers", "purchaseInvoices"}
    assert shipped.entities(["poll"]) == {"customerPayments", "purchaseOrders"}
    assert shipped.entities(["sweep"]) == {"salesInvoices"}
    assert shipped.expansions("salesInvoices") == {"customer"}
    assert shipped.expansions("customerPayments") == {"customer"}
    assert shipped.expansions("purchaseInvoices") == frozenset()


def test_naive_now_is_refused(shipped: RuleSet) -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        evaluate("salesInvoices", invoice(), shipped, datetime(2026, 11, 25), event="sweep")


@pytest.mark.parametrize(
    ("country", "phone", "expected"),
    [
        ("GB", "020 7946 0018", "+442079460018"),  # a UK customer's national number is read as UK
        ("gb ", "020 7946 0018", "+442079460018"),  # BC text with stray case/space still names GB
        ("", "(415) 555-2671", "+14155552671"),  # no country in BC: the rule's region (US)
        ("XX", "(415) 555-2671", "+14155552671"),  # not a country: the rule's region
        ("GB", "+1 415 555 2671", "+14155552671"),  # a number with +country needs no region
    ],
)
def test_region_from_the_customers_country(shipped: RuleSet, country: str, phone: str, expected: str) -> None:
    customer = {"displayName": "Adatum", "phoneNumber": phone, "blocked": " ", "country": country}
    [message] = evaluate("salesInvoices", invoice(customer=customer), shipped, NOW, event="sweep")
    assert (message.to, message.skip_code) == (expected, None)
