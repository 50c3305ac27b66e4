"""Every shorthand condition, through a compiled rule: fires or not, with the reason given."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Any

import pytest

from engine.evaluate import evaluate, evaluate_detailed
from engine.ruleset import RuleSet

NOW = datetime(2026, 11, 25, 9, 0, tzinfo=UTC)
TAIL = """
recipient: {phone: "+1 206 555 0100"}
send: {channel: sms, template: t.sms.j2}
once_per: [id]
"""


def rule(trigger: str, when: str) -> str:
    return f"trigger: {trigger}\nwhen:\n{when}{TAIL}"


INVOICE = "{entity: salesInvoices, events: [sweep, updated, created]}"
CUSTOMER = "{entity: customers, events: [updated, created]}"


def fired(
    ruleset: RuleSet,
    entity: str,
    record: Mapping[str, Any],
    previous: Mapping[str, Any] | None = None,
    event: str = "updated",
) -> tuple[bool, str]:
    [outcome] = evaluate_detailed(
        entity, {"id": "X", "number": "N1", **record}, ruleset, NOW, previous, event=event
    )
    return outcome.fired, outcome.reason


CASES: list[tuple[str, str, dict[str, Any], bool, str]] = [
    ("  - status: Open\n", INVOICE, {"status": "Open"}, True, "status is 'Open'"),
    ("  - status: Open\n", INVOICE, {"status": "Paid"}, False, "status is 'Paid', not 'Open'"),
    ("  - remainingAmount: {gt: 0}\n", INVOICE, {"remainingAmount": 0.01}, True, "remainingAmount 0.01 > 0"),
    (
        "  - remainingAmount: {gt: 0}\n",
        INVOICE,
        {"remainingAmount": 0},
        False,
        "remainingAmount 0 is not > 0",
    ),
    ("  - remainingAmount: {gt: 0}\n", INVOICE, {}, False, "remainingAmount is empty"),
    (
        "  - totalAmountIncludingTax: {gte: 10000, lt: 20000}\n",
        INVOICE,
        {"totalAmountIncludingTax": 10000},
        True,
        "",
    ),
    (
        "  - totalAmountIncludingTax: {gte: 10000, lt: 20000}\n",
        INVOICE,
        {"totalAmountIncludingTax": 20000},
        False,
        "totalAmountIncludingTax 20000 is not < 20000",
    ),
    (
        "  - totalAmountIncludingTax: {lte: 0.3}\n",
        INVOICE,
        {"totalAmountIncludingTax": 0.30000000000000004},
        False,
        "",
    ),
    ("  - status: {ne: Draft}\n", INVOICE, {"status": "Draft"}, False, "status is 'Draft'"),
    ("  - status: {in: [Open, Paid]}\n", INVOICE, {"status": "Paid"}, True, ""),
    (
        "  - status: {in: [Open, Paid]}\n",
        INVOICE,
        {"status": "Draft"},
        False,
        "status is 'Draft', not one of 'Open', 'Paid'",
    ),
    (
        "  - status: {not_in: [Canceled]}\n",
        INVOICE,
        {"status": "Canceled"},
        False,
        "status is 'Canceled', which is excluded",
    ),
    (
        "  - days_overdue: {gte: 7}\n",
        INVOICE,
        {"dueDate": "2026-11-18"},
        True,
        "7 days overdue (dueDate 2026-11-18, today 2026-11-25)",
    ),
    (
        "  - days_overdue: {gte: 7}\n",
        INVOICE,
        {"dueDate": "2026-11-19"},
        False,
        "6 days overdue (dueDate 2026-11-19, today 2026-11-25); needs >= 7",
    ),
    ("  - days_overdue: {gte: 7}\n", INVOICE, {"dueDate": "0001-01-01"}, False, "dueDate is empty"),
    (
        "  - days_overdue: {gte: 1, field: promisedPayDate}\n",
        INVOICE,
        {"promisedPayDate": "2026-11-24"},
        True,
        "",
    ),
    ("  - days_until_due: {lte: 3, gte: 0}\n", INVOICE, {"dueDate": "2026-11-28"}, True, "3 days until due"),
    (
        "  - days_until_due: {lte: 3, gte: 0}\n",
        INVOICE,
        {"dueDate": "2026-11-24"},
        False,
        "-1 day until due (dueDate 2026-11-24, today 2026-11-25); needs >= 0 and <= 3",
    ),
    (
        "  - days_overdue: {stages: [7, 14]}\n",
        INVOICE,
        {"dueDate": "2026-11-10"},
        True,
        "15 days overdue (dueDate 2026-11-10, today 2026-11-25), stage 14",
    ),
    (
        "  - expr: \"remainingAmount > 100 and customer.blocked != 'All'\"\n",
        INVOICE,
        {"remainingAmount": 101, "customer": {"blocked": " "}},
        True,
        "is true",
    ),
    (
        '  - expr: "remainingAmount > 100"\n',
        INVOICE,
        {"remainingAmount": 99},
        False,
        "`remainingAmount > 100` is false",
    ),
]


@pytest.mark.parametrize(("when", "trigger", "record", "expected", "reason"), CASES)
def test_shorthand_condition(
    ruleset_of: Callable[..., RuleSet],
    when: str,
    trigger: str,
    record: dict[str, Any],
    expected: bool,
    reason: str,
) -> None:
    ruleset = ruleset_of(rule(trigger, when))
    result, why = fired(ruleset, "salesInvoices", record)
    assert result is expected, why
    assert reason in why


CROSSING = "  - creditLimit: {gt: 0}\n  - crossed_above: {value: balanceDue, limit: creditLimit}\n"


def test_crossed_above_needs_previous(ruleset_of: Callable[..., RuleSet]) -> None:
    ruleset = ruleset_of(rule(CUSTOMER, CROSSING))
    now = {"creditLimit": 1000, "balanceDue": 1200}
    assert fired(ruleset, "customers", now) == (
        False,
        "no previous version of the record, so no crossing of creditLimit can be seen",
    )
    assert fired(ruleset, "customers", now, {"creditLimit": 1000, "balanceDue": 1000}) == (
        True,
        "creditLimit 1000 > 0; balanceDue went from 1000 (<= creditLimit 1000) to 1200 (> 1000)",
    )
    # Already above before: no second warning for the same crossing.
    assert fired(ruleset, "customers", {**now, "balanceDue": 1500}, now)[0] is False
    # The limit was raised above the balance, then the balance crossed the new limit: a new crossing.
    assert fired(
        ruleset,
        "customers",
        {"creditLimit": 2000, "balanceDue": 2100},
        {"creditLimit": 2000, "balanceDue": 1200},
    )[0]


def test_crossed_below_with_a_number_limit(ruleset_of: Callable[..., RuleSet]) -> None:
    ruleset = ruleset_of(rule(CUSTOMER, "  - crossed_below: {value: balanceDue, limit: 100}\n"))
    assert fired(ruleset, "customers", {"balanceDue": 50}, {"balanceDue": 100})[0] is True
    assert fired(ruleset, "customers", {"balanceDue": 50}, {"balanceDue": 60})[0] is False


def test_changed_lists_what_changed(ruleset_of: Callable[..., RuleSet]) -> None:
    ruleset = ruleset_of(rule(INVOICE, "  - changed: [dueDate, status]\n"))
    assert fired(
        ruleset,
        "salesInvoices",
        {"dueDate": "2026-12-01", "status": "Open"},
        {"dueDate": "2026-11-01", "status": "Open"},
    ) == (
        True,
        "changed: dueDate '2026-11-01' -> '2026-12-01'",
    )
    assert fired(ruleset, "salesInvoices", {"status": "Open"}, {"status": "Open"}) == (
        False,
        "none of dueDate, status changed",
    )
    assert fired(ruleset, "salesInvoices", {"status": "Open"}) == (
        False,
        "no previous version of the record to compare with",
    )


def test_changed_to_and_from(ruleset_of: Callable[..., RuleSet]) -> None:
    ruleset = ruleset_of(rule(INVOICE, "  - changed_from: {status: Draft}\n  - changed_to: {status: Open}\n"))
    assert fired(ruleset, "salesInvoices", {"status": "Open"}, {"status": "Draft"})[0] is True
    assert fired(ruleset, "salesInvoices", {"status": "Open"}, {"status": "Open"}) == (
        False,
        "status did not change from 'Draft' (was 'Open', now 'Open')",
    )
    assert fired(ruleset, "salesInvoices", {"status": "Paid"}, {"status": "Draft"}) == (
        False,
        "status did not change to 'Open' (was 'Draft', now 'Paid')",
    )


def test_changed_to_holds_for_a_created_record(ruleset_of: Callable[..., RuleSet]) -> None:
    ruleset = ruleset_of(rule(INVOICE, "  - changed_to: {status: Open}\n"))
    assert fired(ruleset, "salesInvoices", {"status": "Open"}, event="created")[0] is True
    assert fired(ruleset, "salesInvoices", {"status": "Open"}, event="updated")[0] is False


def test_bad_data_is_a_reported_non_firing(ruleset_of: Callable[..., RuleSet]) -> None:
    ruleset = ruleset_of(rule(INVOICE, "  - days_overdue: {gte: 1}\n"))
    [outcome] = evaluate_detailed(
        "salesInvoices", {"id": "X", "dueDate": "next week"}, ruleset, NOW, event="sweep"
    )
    assert outcome.fired is False
    assert outcome.error is True
    assert (
        outcome.reason
        == "could not evaluate days_overdue: ML306 'next week' is not an ISO date (expected YYYY-MM-DD)"
    )
    assert evaluate("salesInvoices", {"id": "X", "dueDate": "next week"}, ruleset, NOW, event="sweep") == []


def test_rule_time_zone_decides_today(ruleset_of: Callable[..., RuleSet]) -> None:
    body = rule(INVOICE, "  - days_overdue: {gte: 1}\n") + "timezone: Pacific/Auckland\n"
    ruleset = ruleset_of(body)
    # 2026-11-25T12:00Z is already 26 November in Auckland.
    [outcome] = evaluate_detailed(
        "salesInvoices",
        {"id": "X", "dueDate": "2026-11-25"},
        ruleset,
        datetime(2026, 11, 25, 12, tzinfo=UTC),
        event="sweep",
    )
    assert outcome.fired
    assert "today 2026-11-26" in outcome.reason
