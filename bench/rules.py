"""Benchmark 1: the shipped sweep rules over synthetic sales invoices.

Contenders, all over the same invoices (the customer expanded on each, as the fetcher does):
- conditions only: which of the two sweep rules (invoice-overdue with its ladder, invoice-due-soon)
  fire on each invoice -- the engine's compiled checks, the same conditions hand-written in Python
  (the baseline), and simpleeval (expressions parsed per record, and parsed once);
- whole evaluation: engine.evaluate (conditions, the stage, phone normalisation, the message text and
  the job id) against the same work hand-written.
Every contender must agree on how many rules fire, and the two whole evaluations on every message
they plan (rule, stage, number, text, job id); the bench says so loudly when they do not.
"""

from __future__ import annotations

import hashlib
import json
import random
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any

import simpleeval

from bench.report import ROOT, Section, Target
from engine.evaluate import evaluate
from engine.functions import EvaluationContext, days_overdue, days_until_due
from engine.loader import load_ruleset
from engine.phones import to_e164
from engine.render import format_date, money
from engine.ruleset import RuleSet

NOW = datetime(2026, 11, 25, 17, 0, tzinfo=UTC)
TODAY = date(2026, 11, 25)  # America/Los_Angeles (the rules' zone) at NOW
ENTITY = "salesInvoices"
OVERDUE_STARTS = (-3, 1, 9, 14, 30)  # invoice-overdue's stages: days_overdue + grace_days
# The stage each start belongs to (its days_overdue as written: what the job id and once_per name).
OVERDUE_STAGE = {-3: -3, 1: 1, 9: 7, 14: 14, 30: 30}
CUSTOMER_PHONE = "customer.phoneNumber"  # the recipients as the rules write them (part of the job id)
MANAGER_PHONE = "+1 503 555 0177"
DESK_PHONE = "+1 206 555 0118"
OVERDUE_EXPR = "status == 'Open' and remainingAmount > 0 and customer['blocked'] != 'All' and days_overdue(dueDate) >= -3"
DUE_SOON_EXPR = "status == 'Open' and remainingAmount >= 10000 and 0 <= days_until_due(dueDate) <= 3"


@dataclass(frozen=True)
class Params:
    records: int
    simpleeval_records: int  # simpleeval parsed per record is slow: a sample


SIZES = {
    "full": Params(records=100_000, simpleeval_records=20_000),
    "issue": Params(records=100_000, simpleeval_records=20_000),
    "quick": Params(records=30_000, simpleeval_records=5_000),
    "tiny": Params(records=300, simpleeval_records=100),
}


def synthetic_invoices(count: int, seed: int = 7) -> list[dict[str, Any]]:
    """Posted sales invoices in BC v2.0 shape with the customer expanded."""
    rng = random.Random(seed)
    customers = [
        {
            "number": f"C{n:05d}",
            "displayName": f"Customer {n}",
            "phoneNumber": f"503-555-{n % 10_000:04d}",
            "blocked": "All" if n % 25 == 0 else " ",
        }
        for n in range(max(1, count // 20))
    ]
    out = []
    for i in range(count):
        status = rng.choice(["Open", "Open", "Open", "Open", "Paid", "Draft"])
        amount = round(rng.uniform(50, 30_000), 2)
        out.append(
            {
                "id": f"00000000-0000-4000-8000-{i:012d}",
                "number": f"PS-INV{100000 + i}",
                "status": status,
                "dueDate": (TODAY + timedelta(days=rng.randint(-45, 15))).isoformat(),
                "remainingAmount": amount if status == "Open" and rng.random() < 0.9 else 0,
                "currencyCode": "USD",
                "customer": customers[i % len(customers)],
            }
        )
    return out


# ------------------------------------------------------------------------------------ hand-written


def hand_conditions(record: Mapping[str, Any], today: date) -> int:
    """How many of the two sweep rules fire (their `when:` and the ladder), written directly."""
    if record["status"] != "Open":
        return 0
    remaining = record["remainingAmount"]
    if remaining is None:
        return 0
    overdue = (today - date.fromisoformat(record["dueDate"])).days
    fired = 0
    if remaining > 0 and record["customer"]["blocked"] != "All" and overdue >= OVERDUE_STARTS[0]:
        fired += 1
    if remaining >= 10_000 and 0 <= -overdue <= 3:
        fired += 1
    return fired


def _job_id(parts: list[Any]) -> str:
    canonical = json.dumps(parts, sort_keys=True, separators=(",", ":"), default=str, ensure_ascii=False)
    return "mlc-" + hashlib.sha256(canonical.encode()).hexdigest()[:40]


_PHONES: dict[str, str] = {}


def _phone(raw: str) -> str:
    number = _PHONES.get(raw)
    if number is None:
        number = _PHONES[raw] = to_e164(raw, "US").number
    return number


# (rule id, stage, job id, to, body): what both sides must agree on.
Message = tuple[str, int, str, str, str]


def hand_messages(record: Mapping[str, Any], today: date) -> list[Message]:
    """The messages the two rules plan, hand-written: the same rules, stages, numbers, text and job ids."""
    out: list[Message] = []
    if record["status"] != "Open" or record["remainingAmount"] is None:
        return out
    remaining = record["remainingAmount"]
    customer = record["customer"]
    due = record["dueDate"]
    overdue = (today - date.fromisoformat(due)).days
    amount = money(remaining, record["currencyCode"])
    if remaining >= 10_000 and 0 <= -overdue <= 3:
        body = (
            f"Due in {-overdue} days: {customer['displayName']} invoice {record['number']}, {amount} open, "
            f"due {format_date(due)}. Worth a call?"
        )
        job = _job_id(
            [
                "invoice-due-soon",
                ENTITY,
                record["id"],
                [["id", record["id"]], ["dueDate", due], ["stage", 3]],
                DESK_PHONE,
            ]
        )
        out.append(("invoice-due-soon", 3, job, "+12065550118", body))
    if remaining > 0 and customer["blocked"] != "All" and overdue >= OVERDUE_STARTS[0]:
        stage = OVERDUE_STAGE[max(s for s in OVERDUE_STARTS if overdue >= s)]
        name = customer["displayName"]
        spec = CUSTOMER_PHONE
        if stage == -3:
            when = "today" if overdue == 0 else f"on {format_date(due)}"
            body = f"{name}: invoice {record['number']} for {amount} is due {when}. Thank you for paying on time."
            to = _phone(customer["phoneNumber"])
        elif stage == 14:
            body = (
                f"{name} has not paid invoice {record['number']} ({amount}, due {format_date(due)}), "
                f"{overdue} days overdue. Please call them ({customer['phoneNumber']})."
            )
            to = "+15035550177"
            spec = MANAGER_PHONE
        elif stage == 30:
            body = (
                f"Hello, this is an automated call for {name}. Invoice {record['number']} for {amount} was "
                f"due on {format_date(due)} and is now {overdue} days overdue. Please pay it today, or call "
                "us back if you believe this is wrong. Thank you."
            )
            to = _phone(customer["phoneNumber"])
        else:
            plural = "" if overdue == 1 else "s"
            body = (
                f"{name}: invoice {record['number']} for {amount} was due {format_date(due)} and is "
                f"{overdue} day{plural} overdue. Please pay or call us if this is wrong."
            )
            to = _phone(customer["phoneNumber"])
        job = _job_id(
            [
                "invoice-overdue",
                ENTITY,
                record["id"],
                [["id", record["id"]], ["dueDate", due], ["stage", stage]],
                spec,
            ]
        )
        out.append(("invoice-overdue", stage, job, to, body))
    return out


def planned_differences(ruleset: RuleSet, records: list[dict[str, Any]]) -> list[str]:
    """Records on which engine.evaluate and hand_messages plan different messages (outside the timing)."""
    differences: list[str] = []
    for record in records:
        engine_side = [
            (m.rule_id, m.stage, m.job_id, m.to, m.body)
            for m in evaluate(ENTITY, record, ruleset, NOW, event="sweep")
        ]
        hand_side = hand_messages(record, TODAY)
        if engine_side != hand_side:
            differences.append(f"{record['number']}: engine {engine_side!r} != hand-written {hand_side!r}")
    return differences


# ------------------------------------------------------------------------------------ engine sides


def engine_conditions(ruleset: RuleSet, records: list[dict[str, Any]]) -> int:
    """The engine's condition path (what evaluate runs before a rule fires), without the messages."""
    rules = ruleset.rules_for(ENTITY, "sweep")
    fired = 0
    for record in records:
        ctx = EvaluationContext(record=record, previous=None, now=NOW, today=TODAY)
        for rule in rules:
            if rule.holds(ctx):  # the rule's checks compiled into one function, as evaluate runs them
                fired += 1
    return fired


def simpleeval_functions(ctx: EvaluationContext) -> dict[str, Callable[[Any], int | None]]:
    return {
        "days_overdue": lambda due: days_overdue(ctx, due),
        "days_until_due": lambda due: days_until_due(ctx, due),
    }


def simpleeval_per_record(records: list[dict[str, Any]]) -> int:
    fired = 0
    for record in records:
        ctx = EvaluationContext(record=record, previous=None, now=NOW, today=TODAY)
        functions = simpleeval_functions(ctx)
        for expr in (OVERDUE_EXPR, DUE_SOON_EXPR):
            if simpleeval.simple_eval(expr, names=record, functions=functions):
                fired += 1
    return fired


def simpleeval_parsed_once(records: list[dict[str, Any]]) -> int:
    evaluator = simpleeval.SimpleEval()
    trees = [(expr, evaluator.parse(expr)) for expr in (OVERDUE_EXPR, DUE_SOON_EXPR)]
    fired = 0
    for record in records:
        ctx = EvaluationContext(record=record, previous=None, now=NOW, today=TODAY)
        evaluator.names = record
        evaluator.functions = simpleeval_functions(ctx)
        for expr, tree in trees:
            if evaluator.eval(expr, previously_parsed=tree):
                fired += 1
    return fired


def timed(run: Callable[[], int]) -> tuple[float, int]:
    start = time.perf_counter()
    result = run()
    return time.perf_counter() - start, result


def run(params: Params, runs: int) -> Section:
    section = Section(
        key="rules",
        title="1. Rule evaluation",
        method=(
            f"The shipped sweep rules on `salesInvoices` (invoice-overdue with its 5-stage ladder, "
            f"invoice-due-soon) over {params.records:,} synthetic posted sales invoices with the customer "
            "expanded, in one process. *Conditions* decides which rules fire; *whole evaluation* also "
            "plans the messages (stage, E.164 number, rendered text, job id). simpleeval evaluates the "
            f"same conditions as expressions, parsed per record on a {params.simpleeval_records:,}-invoice "
            "sample and parsed once over all of them."
        ),
    )
    ruleset = load_ruleset(ROOT / "rules", ROOT / "templates")
    records = synthetic_invoices(params.records)
    sample = records[: params.simpleeval_records]
    n, s = len(records), len(sample)
    # Equal work: both sides must plan the very same messages, invoice by invoice (checked untimed).
    differences = planned_differences(ruleset, records)
    if differences:
        print(
            f"ERROR bench rules: engine.evaluate and the hand-written baseline plan different messages "
            f"on {len(differences):,} of {n:,} invoices; first: {differences[0]}",
            file=sys.stderr,
        )
    contenders: dict[str, tuple[int, Callable[[], int]]] = {
        "conditions: hand-written Python": (n, lambda: sum(hand_conditions(r, TODAY) for r in records)),
        "conditions: engine (compiled checks)": (n, lambda: engine_conditions(ruleset, records)),
        "conditions: simpleeval parsed once": (n, lambda: simpleeval_parsed_once(records)),
        "conditions: simpleeval per record": (s, lambda: simpleeval_per_record(sample)),
        "whole evaluation: hand-written Python": (
            n,
            lambda: sum(len(hand_messages(r, TODAY)) for r in records),
        ),
        "whole evaluation: engine.evaluate": (
            n,
            lambda: sum(len(evaluate(ENTITY, r, ruleset, NOW, event="sweep")) for r in records),
        ),
    }
    rates: dict[str, list[float]] = {label: [] for label in contenders}
    results: dict[str, int] = {}
    for _ in range(runs):
        for label, (count, func) in contenders.items():
            seconds, result = timed(func)
            rates[label].append(count / seconds)
            results[label] = result
    baselines = {
        "conditions: engine (compiled checks)": "conditions: hand-written Python",
        "conditions: simpleeval parsed once": "conditions: hand-written Python",
        "conditions: simpleeval per record": "conditions: hand-written Python",
        "whole evaluation: engine.evaluate": "whole evaluation: hand-written Python",
    }
    for label, samples in rates.items():
        section.add(label, "invoices/s", samples, baseline=baselines.get(label))

    conditions = {k: v for k, v in results.items() if k.startswith("conditions") and "per record" not in k}
    section.notes.append(
        f"Rules fired over {n:,} invoices: "
        + ", ".join(f"{k.split(': ')[1]} {v:,}" for k, v in conditions.items())
        + f"; messages planned: hand-written {results['whole evaluation: hand-written Python']:,}, "
        f"engine {results['whole evaluation: engine.evaluate']:,}."
    )
    per_record_expected = sum(hand_conditions(r, TODAY) for r in sample)
    agree = (
        len(set(conditions.values())) == 1
        and results["conditions: simpleeval per record"] == per_record_expected
        and results["whole evaluation: hand-written Python"] == results["whole evaluation: engine.evaluate"]
        and not differences
    )
    if differences:
        section.notes.append(
            f"WARNING: engine.evaluate and the hand-written baseline plan different messages on "
            f"{len(differences):,} invoices (first: {differences[0]}); the ratio compares unlike work."
        )
    elif agree:
        section.notes.append(
            f"Both whole evaluations plan the same messages on every one of the {n:,} invoices (rule, "
            "stage, E.164 number, rendered text, job id; checked outside the timing)."
        )
    if not agree:
        section.notes.append(
            "WARNING: the contenders disagree on what fires; the ratios compare unlike work."
        )
    whole = section.ratio("whole evaluation: engine.evaluate") or 0.0
    whole_slowdown = 1 / whole if whole else float("inf")
    section.target(
        "engine.evaluate within 2x of the same rules hand-written (same messages)",
        whole_slowdown <= 2.0 and agree,
        f"{whole_slowdown:.2f}x slower",
    )
    conditions_ratio = section.ratio("conditions: engine (compiled checks)") or 0.0
    section.notes.append(
        f"Conditions alone: the engine's compiled checks are {1 / conditions_ratio:.1f}x slower than "
        "the hand-written `if`s (a context per record and one generated function per rule, with the "
        "engine's missing-data and decimal rules, against a few inlined comparisons), and "
        f"{(section.figure('conditions: engine (compiled checks)').value / section.figure('conditions: simpleeval per record').value):.1f}x "
        "faster than simpleeval parsed per record."
        if conditions_ratio
        else "Conditions ratio unavailable."
    )
    return section


EVALUATION = "whole evaluation: engine.evaluate"
SHARE_TARGET = 0.05  # evaluation is under 5% of the sweep's wall time
SWEEP_SIZE = 100_000


def evaluation_share(rules: Section, sweep: Section | None) -> None:
    """The headline target of rule evaluation, put first: its share of the sweep's wall time in the run.

    Evaluating N invoices takes N / (engine.evaluate's rate); the sweep of N invoices (reading pages
    from BC, evaluating, storing) took its wall time. N is 100,000 when the sweep ran at that size,
    else its largest size (named in the target). Without a sweep section the target says so.
    """
    text = f"evaluation is under {SHARE_TARGET:.0%} of the sweep's wall time"
    rate = rules.figure(EVALUATION).value
    if sweep is None or sweep.error:
        why = "the sweep section was not run" if sweep is None else f"the sweep could not run ({sweep.error})"
        rules.notes.append(f"Evaluation beside the sweep: not computed, {why} in this bench run.")
        rules.targets.insert(0, Target(text, None, f"no figure: {why}"))
        return
    walls = {
        int(f.label.split()[0].replace(",", "")): f
        for f in sweep.figures
        if f.label.endswith("invoices: wall time")
    }
    if not walls:
        rules.notes.append("Evaluation beside the sweep: not computed, the sweep reported no wall time.")
        rules.targets.insert(0, Target(text, None, "no figure: the sweep reported no wall time"))
        return
    size = SWEEP_SIZE if SWEEP_SIZE in walls else max(walls)
    wall = walls[size].value
    evaluating = size / rate
    share = evaluating / wall
    at = "" if size == SWEEP_SIZE else f" (at {size:,} invoices: the sweep did not run at {SWEEP_SIZE:,})"
    rules.targets.insert(
        0, Target(text + at, share < SHARE_TARGET, f"{share:.1%}: {evaluating:.2f} s of {wall:.1f} s")
    )
    summary = (
        f"Evaluation beside the sweep: {size:,} invoices at {rate:,.0f} invoices/s take {evaluating:.2f} s "
        f"of evaluation, {share:.1%} of the {size:,}-invoice sweep's {wall:.1f} s wall time in this run."
    )
    rules.notes.append(summary)
    sweep.notes.append(summary)
