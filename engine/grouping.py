"""One message per customer: a sweep's reminders for one recipient, rule and stage become one text.

Pure. Input: the planned messages of one sweep (or of one page of it); output: the same list with
each group of at least `group.min_size` messages - same rule, stage, channel, recipient, customer
and currency, for a rule with `group:` - replaced by ONE grouped message followed by its members.
The grouped message's job id is derived from the SET of its members' job ids (order does not
matter, a replay of the same sweep gives the same id). Each member keeps its own job id and
becomes a recorded skip (`skip_code="grouped"`) whose `group_job_id` points at the grouped one,
so the audit shows, per invoice, which message carried it.

The caller removes members whose job id is already in the outbox BEFORE grouping: an invoice
already reminded at this stage must not be listed again just because another one joined it.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from datetime import date, datetime
from decimal import Decimal, InvalidOperation
from typing import Any

from engine.errors import EngineError, TemplateError
from engine.functions import to_date
from engine.messages import PlannedMessage, make_job_id
from engine.model import CHANNELS
from engine.render import CompiledTemplate, sms_segments
from engine.ruleset import CompiledRule, RuleSet

GROUPED = "grouped"  # skip_code of a member row
RECORD_NUMBER_MAX = 64

GroupKey = tuple[str, int | None, str, str, str, str]


def _amount(record: Mapping[str, Any]) -> Decimal:
    raw = record.get("remainingAmount", record.get("totalAmountIncludingTax"))
    try:
        return Decimal(str(raw)) if raw is not None else Decimal(0)
    except InvalidOperation:
        return Decimal(0)


def _key(message: PlannedMessage) -> GroupKey | None:
    if message.skipped or message.to is None:
        return None
    record = message.record or {}
    currency = str(record.get("currencyCode") or "")
    # The customer too: an account manager who gets a stage for several customers gets one
    # message per customer (the text names one customer), not one mixing them.
    customer = record.get("customer")
    owner = record.get("customerId") or (customer.get("id") if isinstance(customer, Mapping) else None)
    return (message.rule_id, message.stage, message.channel, message.to, currency, str(owner or ""))


def group_context(
    rule: CompiledRule, members: Sequence[PlannedMessage], now: datetime, numbers: int
) -> dict[str, Any]:
    """What a group template sees: count, total, currency, oldest_due, numbers (first N), more, invoices."""
    records = [m.record or {} for m in members]
    # Oldest due first, then by number: the list reads in the order the customer should pay.
    ordered = sorted(
        zip(members, records, strict=True),
        key=lambda pair: (to_date(pair[1].get("dueDate")) or date.max, pair[0].record_number or ""),
    )
    invoices = [
        {
            "number": m.record_number,
            "amount": _amount(r),
            "dueDate": r.get("dueDate"),
            "currencyCode": r.get("currencyCode"),
        }
        for m, r in ordered
    ]
    dues = [d for d in (to_date(r.get("dueDate")) for _, r in ordered) if d is not None]
    first = ordered[0][1]
    listed = [str(i["number"]) for i in invoices[:numbers] if i["number"] is not None]
    return {
        "customer": first.get("customer") or {},
        "count": len(members),
        "total": sum((_amount(r) for r in records), Decimal(0)),
        "currencyCode": first.get("currencyCode") or "",
        "oldest_due": min(dues).isoformat() if dues else None,
        "numbers": listed,
        "more": len(members) - len(listed),
        "invoices": invoices,
        "stage": members[0].stage,
        "rule": {"id": rule.id, "description": rule.description},
        "now": now.astimezone(rule.timezone),
        "today": now.astimezone(rule.timezone).date(),
    }


def group_job_id(rule_id: str, members: Sequence[PlannedMessage]) -> str:
    return make_job_id(["group", rule_id, sorted(m.job_id for m in members)])


def _grouped(
    rule: CompiledRule, template: CompiledTemplate, members: Sequence[PlannedMessage], now: datetime
) -> tuple[PlannedMessage, list[PlannedMessage]]:
    assert rule.group is not None
    gid = group_job_id(rule.id, members)
    context = group_context(rule, members, now, rule.group.numbers)
    head = members[0]
    body, skip_code, skip_reason = "", None, None
    try:
        body = template.render(context).strip()
    except TemplateError as exc:
        skip_code, skip_reason = exc.code, f"template {exc.template}: {exc.message}"
    except EngineError as exc:
        skip_code, skip_reason = "ML203", f"template {template.name}: {exc}"
    numbers = ", ".join(context["numbers"]) + (f" +{context['more']}" if context["more"] else "")
    grouped = PlannedMessage(
        job_id=gid,
        rule_id=rule.id,
        entity=head.entity,
        record_id=None,
        record_number=f"{len(members)} documents"[:RECORD_NUMBER_MAX],
        channel=head.channel,
        to=None if skip_code else head.to,
        body=body,
        segments=sms_segments(body).segments if body and CHANNELS[head.channel].counts_segments else 0,
        dedupe_key=f"{rule.id}/{head.entity}/group,stage={head.stage},n={len(members)}: {numbers}"[:512],
        reason=f"{len(members)} documents at stage {head.stage} for the same recipient: {numbers}",
        skip_code=skip_code,
        skip_reason=skip_reason,
        timezone=head.timezone,
        quiet_hours=head.quiet_hours,
        stage=head.stage,
        grace_days=head.grace_days,
    )
    listed = [
        dataclasses.replace(
            m, skip_code=GROUPED, skip_reason=f"sent in grouped message {gid}", group_job_id=gid
        )
        for m in members
    ]
    return grouped, listed


def group_messages(
    messages: Sequence[PlannedMessage], ruleset: RuleSet, now: datetime
) -> list[PlannedMessage]:
    """The messages with each eligible group replaced by its grouped message and its members."""
    buckets: dict[GroupKey, list[PlannedMessage]] = {}
    for message in messages:
        rule = ruleset.get(message.rule_id)
        if rule is None or rule.group is None or message.channel not in rule.group.templates:
            continue
        if rule.to_staff(message.stage):
            continue  # an account manager gets one text per document (the group text is for customers)
        key = _key(message)
        if key is not None:
            buckets.setdefault(key, []).append(message)
    replaced: dict[str, GroupKey] = {}
    for key, members in buckets.items():
        rule = ruleset.get(key[0])
        assert rule is not None and rule.group is not None
        if len(members) >= rule.group.min_size:
            for m in members:
                replaced[m.job_id] = key
    out: list[PlannedMessage] = []
    done: set[GroupKey] = set()
    for message in messages:
        key = replaced.get(message.job_id)
        if key is None:
            out.append(message)
            continue
        if key in done:
            continue
        done.add(key)
        rule = ruleset.get(key[0])
        assert rule is not None and rule.group is not None
        grouped, listed = _grouped(rule, rule.group.templates[key[2]], buckets[key], now)
        out.append(grouped)
        out.extend(listed)
    return out


def sample_group_context(rule: CompiledRule, record: Mapping[str, Any], now: datetime) -> dict[str, Any]:
    """A group of two copies of a sample record (for lint's render check)."""
    numbers = rule.group.numbers if rule.group is not None else 3
    members = [
        PlannedMessage(
            job_id=f"sample-{n}",
            rule_id=rule.id,
            entity=rule.entity,
            record_id=str(record.get("id")),
            record_number=f"{record.get('number', 'DOC')}-{n}",
            channel="sms",
            to="+15035550100",
            body="",
            segments=0,
            dedupe_key="",
            reason="",
            stage=rule.stages[0].days if rule.stages else None,
            record=record,
        )
        for n in (1, 2)
    ]
    return group_context(rule, members, now, numbers)
