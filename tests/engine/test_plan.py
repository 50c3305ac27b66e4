"""Planning (engine.plan) and what evaluation builds directly give what the general forms give.

The compiled rule predicate against the checks run one by one, the reason of a fired rule against
`explain`, the job id against `make_job_id`, the message object against the dataclass constructor,
whole planned messages on the shipped rules against the render of `template_context`, and
evaluate against engine.plan's messages on rules of every shape.
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import random
from collections.abc import Callable
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Any

from engine.conditions import run_test
from engine.evaluate import evaluate, evaluate_detailed
from engine.functions import EvaluationContext
from engine.messages import PlannedMessage, make_job_id, new_message
from engine.plan import dedupe, job_id, plan, template_context
from engine.render import sms_segments
from engine.ruleset import RuleSet

NOW = datetime(2026, 11, 25, 17, 0, tzinfo=UTC)
TODAY = date(2026, 11, 25)

WHEN = """\
trigger: {entity: salesInvoices, events: [sweep]}
when:
%s
recipient: {phone: "+1 206 555 0118"}
send: {channel: sms, template: t.sms.j2}
once_per: [id]
timezone: UTC
"""

CONDITIONS = [
    "  - status: Open",
    "  - status: {ne: Paid}",
    "  - remainingAmount: {gt: 0}",
    "  - remainingAmount: {gte: 10000}",
    "  - remainingAmount: {lt: 100.5}",
    "  - remainingAmount: {lte: 0.1}",
    "  - remainingAmount: {eq: 10000}",
    "  - remainingAmount: {eq: 0.1}",
    "  - remainingAmount: {gt: 0, lt: 20000}",
    "  - remainingAmount: {in: [0, 10000]}",
    "  - status: {not_in: [Paid, Draft]}",
    "  - pricesIncludeTax: true",
    "  - pricesIncludeTax: null",
    "  - customer.blocked: {ne: All}",
    "  - days_overdue: {gte: 1}",
    "  - days_until_due: {gte: 0, lte: 3, stages: [3]}",
    "  - days_overdue: {stages: [7, 14]}",
    "  - expr: \"customer.blocked != 'All' and remainingAmount > 5\"",
]
VALUES: dict[str, list[Any]] = {
    "status": ["Open", "Paid", None, 3, "open"],
    "remainingAmount": [
        0,
        0.1,
        100.5,
        10000,
        10000.0,
        9999.999999999998,
        Decimal("10000.00"),
        -1,
        float("nan"),
        float("inf"),
        True,
        "12",
        None,
        2**60,
    ],
    "dueDate": ["2026-11-25", "2026-11-28", "2026-11-10", "0001-01-01", "", None, "bad", 20261120],
    "pricesIncludeTax": [True, False, None, 1],
    "customer": [{"blocked": "All"}, {"blocked": " "}, {}, None, "C1"],
}


def records(count: int) -> list[dict[str, Any]]:
    rng = random.Random(5)
    return [
        {"id": f"r{i}", "number": f"N{i}", **{k: rng.choice(v) for k, v in VALUES.items()}}
        for i in range(count)
    ]


def test_compiled_predicate_agrees_with_the_checks_one_by_one(
    ruleset_of: Callable[..., RuleSet],
) -> None:
    samples = records(300)
    rules = [
        ruleset_of(WHEN % "\n".join(combo)).rules[0]
        for size in (1, 2)
        for combo in itertools.combinations(CONDITIONS, size)
    ]
    fired = 0
    for rule in rules:
        for record in samples:
            ctx = EvaluationContext(record=record, previous=None, now=NOW, today=TODAY)
            expected = all(run_test(check, ctx)[0] for check in rule.checks)
            assert rule.holds(ctx) is expected, (rule.model.when, record)
            fired += expected
            if expected:
                # A held rule's reason reads as `explain` reads it.
                for check in rule.checks:
                    assert check.explain_held(ctx) == check.explain(ctx)
    assert 0 < fired < len(rules) * len(samples)


def test_predicate_of_a_record_that_is_not_a_dict_takes_the_checks(
    ruleset_of: Callable[..., RuleSet],
) -> None:
    from types import MappingProxyType

    rule = ruleset_of(WHEN % "  - status: Open\n  - remainingAmount: {gt: 0}").rules[0]
    held = EvaluationContext(
        record=MappingProxyType({"status": "Open", "remainingAmount": 1.5}),
        previous=None,
        now=NOW,
        today=TODAY,
    )
    missed = EvaluationContext(
        record=MappingProxyType({"status": "Open", "remainingAmount": 0}), previous=None, now=NOW, today=TODAY
    )
    assert rule.holds(held) is True
    assert rule.holds(missed) is False


def test_job_id_written_directly_matches_make_job_id(shipped: RuleSet) -> None:
    rule = shipped.get("invoice-overdue")
    assert rule is not None
    values: list[Any] = ["5a0e7c12", 'ä"\\\n\u2028', "", None, 7, -3, 2**70, 1.5, True, date(2026, 1, 2)]
    checked = 0
    for record_id, due, stage in itertools.product(values, values, [7, -3, None]):
        record = {"id": record_id, "dueDate": due}
        ctx = EvaluationContext(record=record, previous=None, now=NOW, today=TODAY)
        parts, key, parts_json = dedupe(rule, ctx, stage)
        assert parts == [["id", record_id], ["dueDate", due], ["stage", stage]]
        assert (
            key
            == f"invoice-overdue/salesInvoices/id={_shown(record_id)},dueDate={_shown(due)},stage={_shown(stage)}"
        )
        plain = all(v is None or type(v) in (str, int) for v in (record_id, due, stage))
        assert (parts_json is not None) is plain
        if parts_json is not None:
            assert parts_json == json.dumps(parts, separators=(",", ":"), ensure_ascii=False)
        for spec in ("customer.phoneNumber", "+1 503 555 0177"):
            identity = str(record_id) if record_id is not None else ""
            expected = make_job_id([rule.id, rule.entity, identity, parts, spec])
            assert job_id(rule, identity, parts, parts_json, spec) == expected
            checked += 1
    assert checked == len(values) ** 2 * 3 * 2


def _shown(value: Any) -> str:
    return "" if value is None else f"{value}"


def test_message_built_without_the_constructor_is_the_same_object() -> None:
    fields: dict[str, Any] = {f.name: f"v-{f.name}" for f in dataclasses.fields(PlannedMessage)}
    fields.update(segments=2, stage=7, grace_days=0, record={"id": "a"})
    made = new_message(dict(fields))
    built = PlannedMessage(**fields)
    assert made == built
    assert hash(made) == hash(built)
    assert repr(made) == repr(built)
    assert dataclasses.asdict(made) == dataclasses.asdict(built)
    assert dataclasses.replace(made, body="other").body == "other"


def invoices(count: int) -> list[dict[str, Any]]:
    rng = random.Random(7)
    customers = [
        {
            "displayName": f"Customer {n} Ünïcødé" if n % 7 == 0 else f"Customer {n}",
            "phoneNumber": ["503-555-0142", "020 7946 0018", "", "12"][n % 4],
            "country": "GB" if n % 4 == 1 else None,
            "blocked": "All" if n % 9 == 0 else " ",
        }
        for n in range(40)
    ]
    return [
        {
            "id": f"00000000-0000-4000-8000-{i:012d}",
            "number": f"PS-INV{100000 + i}",
            "status": rng.choice(["Open", "Open", "Open", "Paid"]),
            "dueDate": (TODAY + timedelta(days=rng.randint(-45, 15))).isoformat(),
            "remainingAmount": rng.choice([round(rng.uniform(1, 30_000), 2), 0, 10000, Decimal("12000.10")]),
            "currencyCode": rng.choice(["USD", "GBP", ""]),
            "customer": customers[i % len(customers)],
        }
        for i in range(count)
    ]


def test_planned_messages_match_the_general_paths(shipped: RuleSet) -> None:
    planned = 0
    for record in invoices(1500):
        messages = evaluate("salesInvoices", record, shipped, NOW, event="sweep")
        outcomes = evaluate_detailed("salesInvoices", record, shipped, NOW, event="sweep")
        assert messages == [m for o in outcomes for m in o.messages]
        for message in messages:
            planned += 1
            rule = shipped.get(message.rule_id)
            assert rule is not None
            ctx = EvaluationContext(record=record, previous=None, now=NOW, today=TODAY)
            assert message.reason == "; ".join(dict.fromkeys(c.explain(ctx) for c in rule.checks))
            template = next(
                (
                    s.template
                    for s in rule.stages
                    if s.days == message.stage and message.rule_id == "invoice-overdue"
                ),
                rule.template,
            )
            if message.skip_code != "ML203":
                body = template._render_jinja(template_context(rule, ctx, stage=message.stage)).strip()
                assert message.body == body
            segments = sms_segments(message.body).segments if message.channel == "sms" else 0
            assert message.segments == segments
            parts = [[e, message.stage if e == "stage" else record.get(e)] for e in rule.once_per]
            spec = message.dedupe_key  # one recipient per stage here: the key carries no /to=
            assert "/to=" not in spec
            specs = [
                t.spec
                for t in (rule.recipients if message.stage is None else _stage_recipients(rule, message))
            ]
            assert message.job_id == make_job_id([rule.id, rule.entity, record["id"], parts, specs[0]])
    assert planned > 500


def _stage_recipients(rule: Any, message: PlannedMessage) -> Any:
    for stage in rule.stages:
        if stage.days == message.stage:
            return stage.recipients
    return rule.recipients


# --- evaluate against engine.plan on rules of every shape ------------------------------------------

SHAPE_TEMPLATES = {
    "t.sms.j2": "{{ number }}",
    "plain.sms.j2": "{{ customer.displayName }}: {{ number }} {{ remainingAmount | money(currencyCode) }} "
    "due {{ dueDate | date }} ({{ days_overdue }} / {{ days_until_due }}) stage {{ stage }}\n",
    "extras.sms.j2": "{{ rule.id }} {{ today }} {{ now }} {{ record.number }} {{ previous }} €{ }",
    "loop.sms.j2": "{% for c in [number, status] %}{{ c }} {% endfor %}{{ days_overdue }}",
    "unicode.sms.j2": "{{ customer.displayName }} ő {{ 'x' if days_overdue == 1 else 'y' }}",
    "long.sms.j2": "{{ number }} " + "a" * 400,
    "t.say.j2": "{{ number }} is {{ days_overdue }} days overdue",
}

SHAPE_RULES = [
    # A ladder: per-stage templates, channels, fixed numbers, grace days, the recipient's own region.
    """\
trigger: {entity: salesInvoices, events: [sweep]}
when:
  - status: Open
  - remainingAmount: {gt: 0}
  - expr: "customer.blocked != 'All'"
recipient: {phone: customer.phoneNumber, region: US, region_from: customer.country}
send: {channel: sms, template: plain.sms.j2}
stages:
  - {days_overdue: -3, template: unicode.sms.j2}
  - {days_overdue: 1, grace_days: 0}
  - {days_overdue: 7, grace_days: 2, template: long.sms.j2}
  - {days_overdue: 14, recipient: {phone: ["+1 503 555 0177", customer.phoneNumber]}}
  - {days_overdue: 30, channel: voice, template: t.say.j2}
once_per: [id, dueDate, stage]
timezone: America/Los_Angeles
""",
    # A days_overdue window with stages, two recipients, generic checks, computed once_per tokens.
    """\
trigger: {entity: salesInvoices, events: [sweep]}
when:
  - status: {in: [Open, Paid]}
  - currencyCode: {not_in: [EUR]}
  - remainingAmount: {gt: 0}
  - remainingAmount: {gt: 0}
  - days_overdue: {gte: 0, stages: [0, 7, 14]}
recipient: {phone: [customer.phoneNumber, "+44 20 7946 0018"], region: GB}
send: {channel: sms, template: plain.sms.j2}
once_per: [id, customer.number, number, day, week, stage]
timezone: Europe/London
""",
    # No stages: the template reads the extras; and one that only Jinja renders (a loop).
    """\
trigger: {entity: salesInvoices, events: [sweep]}
when:
  - remainingAmount: {gte: 100}
recipient: {phone: customer.phoneNumber, region: US}
send: {channel: sms, template: extras.sms.j2}
once_per: [id, remainingAmount]
timezone: UTC
""",
    """\
trigger: {entity: salesInvoices, events: [sweep]}
when:
  - days_until_due: {gte: -5, lte: 5, stages: [1, 5]}
  - expr: "status != 'Paid'"
  - remainingAmount: {gt: 0}
recipient: {phone: "+1 206 555 0118"}
send: {channel: sms, template: loop.sms.j2}
once_per: [id, stage]
timezone: UTC
""",
]

SHAPE_VALUES: dict[str, list[Any]] = {
    "id": ["5a0e7c12", "5a0e7c13", "5a0e7c14", 'ä"\\\n\u2028', "", None, 7, True, 1.5],
    "number": ["PS-INV1", "N{}%s", None, 12],
    "status": ["Open", "Open", "Paid", None, "open"],
    "remainingAmount": [12.5, 100, 10000.0, Decimal("250.10"), 0, "12", None, 5.0],
    "currencyCode": ["USD", "GBP", "", "EUR", None],
    "dueDate": ["2026-11-25", "2026-11-28", "2026-11-10", "2026-10-20", "2026-11-24", "0001-01-01", None],
    "customer": [
        {"displayName": "Contoso", "phoneNumber": "503-555-0142", "blocked": " ", "number": "C1"},
        {"displayName": "Fabrikam Ünïcødé", "phoneNumber": "020 7946 0018", "country": "GB", "blocked": " "},
        {"displayName": "Adatum", "phoneNumber": "", "blocked": " ", "number": 5},
        {"displayName": "Tailspin", "phoneNumber": "12", "blocked": " ", "country": " gb "},
        {"displayName": "Litware", "phoneNumber": "+1 206 555 0100", "blocked": "All"},
        {"phoneNumber": "503-555-0199", "country": 44},
        None,
    ][:4]
    + [{"displayName": "Northwind", "phoneNumber": "503-555-0101", "blocked": " ", "number": "C2"}] * 3
    + [
        {"displayName": "Litware", "phoneNumber": "+1 206 555 0100", "blocked": "All"},
        {"phoneNumber": "503-555-0199", "country": 44},
        None,
    ],
}


def shaped_records(count: int) -> list[dict[str, Any]]:
    rng = random.Random(11)
    out = []
    for _ in range(count):
        record = {key: rng.choice(values) for key, values in SHAPE_VALUES.items()}
        for key in list(record):
            if rng.random() < 0.03:
                del record[key]  # a field the record does not have at all
        out.append(record)
    return out


def test_evaluate_plans_what_plan_plans(ruleset_of: Callable[..., RuleSet]) -> None:
    rules = [ruleset_of(body, templates=SHAPE_TEMPLATES).rules[0] for body in SHAPE_RULES]
    planned = 0
    for rule in rules:
        for record in shaped_records(2500):
            today = NOW.astimezone(rule.timezone).date()
            ctx = EvaluationContext(record=record, previous=None, now=NOW, today=today)
            if not rule.holds(ctx):
                continue
            raw_id, raw_number = record.get("id"), record.get("number")
            identity = (
                str(raw_id) if raw_id is not None else "",
                str(raw_number) if raw_number is not None else None,
            )
            expected = plan(rule, ctx, *identity)[1]
            planned += len(expected)
            assert all(m.record is record for m in expected)
            assert evaluate(rule.entity, record, RuleSet([rule]), NOW, event="sweep") == expected
    assert planned > 500


def test_context_built_directly_is_the_constructed_one() -> None:
    from zoneinfo import ZoneInfo

    from engine.evaluate import _context

    zone = ZoneInfo("Pacific/Kiritimati")
    record = {"id": "a"}
    made = _context(record, None, NOW, zone)
    built = EvaluationContext(record=record, previous=None, now=NOW, today=date(2026, 11, 26))
    assert made == built
    assert _context(record, {}, NOW, ZoneInfo("UTC")).today == TODAY
