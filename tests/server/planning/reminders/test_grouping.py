"""One message per customer: grouping a sweep's reminders per recipient, rule and stage."""

from __future__ import annotations

from datetime import UTC, datetime

from engine.evaluate import evaluate
from engine.grouping import GROUPED, group_messages
from engine.messages import PlannedMessage
from engine.ruleset import RuleSet
from tests.server.planning.reminders.conftest import invoice

NOW = datetime(2026, 11, 25, 17, 0, tzinfo=UTC)  # 09:00 in Los Angeles


def plan(shipped: RuleSet, *records: dict[str, object]) -> list[PlannedMessage]:
    out: list[PlannedMessage] = []
    for record in records:
        out += [
            m
            for m in evaluate("salesInvoices", record, shipped, NOW, event="sweep")
            if m.rule_id == "invoice-overdue"
        ]
    return out


def test_several_invoices_at_one_stage_become_one_message(shipped: RuleSet) -> None:
    records = [
        invoice("PS-3", "2026-11-23", 50.25),
        invoice("PS-1", "2026-11-21", 1000),
        invoice("PS-4", "2026-11-24", 10),
        invoice("PS-2", "2026-11-22", 200),
    ]
    planned = plan(shipped, *records)
    assert [m.stage for m in planned] == [1, 1, 1, 1]
    grouped, *members = group_messages(planned, shipped, NOW)
    assert grouped.to == "+15035550142" and grouped.record_id is None and not grouped.skipped
    assert grouped.body == (
        "Northwind Outdoor Supply: 4 invoices (USD 1,260.25) overdue since 21 Nov 2026: "
        "PS-1, PS-2, PS-3 +1 more. Please pay or call us."
    )
    assert grouped.segments == 1 and grouped.stage == 1 and grouped.record_number == "4 documents"
    assert sorted(m.record_number or "" for m in members) == ["PS-1", "PS-2", "PS-3", "PS-4"]
    assert {(m.skip_code, m.group_job_id, m.to) for m in members} == {
        (GROUPED, grouped.job_id, "+15035550142")
    }
    assert {m.job_id for m in members} == {m.job_id for m in planned}  # each invoice keeps its own id


def test_the_group_id_comes_from_the_set_not_the_order(shipped: RuleSet) -> None:
    a, b, c = (invoice(f"PS-{n}", "2026-11-22") for n in (1, 2, 3))
    first = group_messages(plan(shipped, a, b), shipped, NOW)[0]
    again = group_messages(plan(shipped, b, a), shipped, NOW)[0]
    other = group_messages(plan(shipped, a, c), shipped, NOW)[0]
    assert first.job_id == again.job_id != other.job_id
    assert first.job_id.startswith("mlc-")


def test_different_stages_recipients_or_one_invoice_are_not_grouped(shipped: RuleSet) -> None:
    at_stage_1 = invoice("PS-1", "2026-11-22")
    due_soon = invoice("PS-2", "2026-11-27")  # stage -3
    other_customer = invoice(
        "PS-3",
        "2026-11-22",
        customer={"displayName": "Harbour", "phoneNumber": "503-555-0187", "blocked": " "},
    )
    planned = plan(shipped, at_stage_1, due_soon, other_customer)
    assert group_messages(planned, shipped, NOW) == planned


def test_non_grouping_rules_and_skips_pass_through(shipped: RuleSet) -> None:
    bad_phone = invoice(
        "PS-1", "2026-11-22", customer={"displayName": "X", "phoneNumber": "555-01", "blocked": " "}
    )
    good = invoice("PS-2", "2026-11-22")
    planned = plan(shipped, bad_phone, good)
    out = group_messages(planned, shipped, NOW)
    assert [m.skip_code for m in out] == ["ML402", None]


def test_an_account_manager_gets_one_text_per_invoice(shipped: RuleSet) -> None:
    # Stage 14 goes to the account manager (a fixed number): each text is about one invoice,
    # and a group text written for customers would be wrong there, so it is never grouped.
    harbour = {"id": "cust-2", "displayName": "Harbour", "phoneNumber": "503-555-0187", "blocked": " "}
    records = [
        invoice("PS-1", "2026-11-10"),
        invoice("PS-2", "2026-11-10"),
        invoice("PS-3", "2026-11-10", customerId="cust-2", customer=harbour),
    ]
    planned = plan(shipped, *records)
    assert {(m.stage, m.to) for m in planned} == {(14, "+15035550177")}
    assert group_messages(planned, shipped, NOW) == planned


def test_one_customers_group_never_mixes_in_another_customer(shipped: RuleSet) -> None:
    harbour = {"id": "cust-2", "displayName": "Harbour", "phoneNumber": "503-555-0142", "blocked": " "}
    records = [
        invoice("PS-1", "2026-11-22"),
        invoice("PS-2", "2026-11-22"),
        invoice("PS-3", "2026-11-22", customerId="cust-2", customer=harbour),
        invoice("PS-4", "2026-11-22", customerId="cust-2", customer=harbour),
    ]
    out = group_messages(plan(shipped, *records), shipped, NOW)
    grouped = [m for m in out if m.record_id is None]
    assert sorted(m.body.split(":")[0] for m in grouped) == ["Harbour", "Northwind Outdoor Supply"]
