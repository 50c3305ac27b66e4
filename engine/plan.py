"""Planning: a fired rule + the evaluation context -> its reason and its planned messages.

The stage a ladder reached, the reason the rule fired, the dedupe key and job id, the rendered body
and its SMS segments, and one message per recipient. Pure: no I/O, no clock reads.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from functools import lru_cache
from typing import Any

from engine import functions as fn
from engine.errors import EngineError, TemplateError
from engine.functions import EvaluationContext
from engine.messages import JOB_ID_HEX, JOB_ID_PREFIX, PlannedMessage, encode_text, make_job_id, new_message
from engine.model import CHANNELS
from engine.recipients import recipient
from engine.render import CompiledTemplate, segment_count
from engine.ruleset import CompiledRule


def template_context(rule: CompiledRule, ctx: EvaluationContext, *, stage: int | None) -> dict[str, Any]:
    """What a template sees: the record's fields by name, plus `record`, `previous`, `rule`, dates."""
    record = ctx.record
    values: dict[str, Any] = dict(record)
    due = record.get("dueDate")
    values.update(
        record=record,
        previous=ctx.previous or {},
        rule={"id": rule.id, "description": rule.description},
        now=ctx.now.astimezone(rule.timezone),
        today=ctx.today,
        days_overdue=fn.days_overdue(ctx, due) if due is not None else None,
        days_until_due=fn.days_until_due(ctx, due) if due is not None else None,
        stage=stage,
    )
    return values


# The names template_context adds on top of the record's fields.
_TEMPLATE_EXTRAS = frozenset(
    {"record", "previous", "rule", "now", "today", "days_overdue", "days_until_due", "stage"}
)


@lru_cache(maxsize=1024)
def _template_names(template: CompiledTemplate) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """The names `template` reads, split into record fields and template_context's extras."""
    names = sorted(template.variables)
    return (
        tuple(n for n in names if n not in _TEMPLATE_EXTRAS),
        tuple(n for n in names if n in _TEMPLATE_EXTRAS),
    )


_UNKNOWN: Any = object()


def _template_values(
    rule: CompiledRule,
    template: CompiledTemplate,
    ctx: EvaluationContext,
    stage: int | None,
    overdue: int | None = _UNKNOWN,
) -> dict[str, Any]:
    """template_context restricted to the names `template` reads: the same values, built per name.

    `overdue` is days_overdue of the record's dueDate when the caller has it already. Like
    template_context it reads the due date whether the template shows it or not, so a record with
    an unreadable dueDate fails here as it fails there.
    """
    record = ctx.record
    if overdue is _UNKNOWN:
        due = record.get("dueDate")
        overdue = fn.days_overdue(ctx, due) if due is not None else None
    fields, extras = _template_names(template)
    values: dict[str, Any] = {}
    for name in fields:
        if name in record:
            values[name] = record[name]
    for name in extras:
        if name == "days_overdue":
            values[name] = overdue
        elif name == "days_until_due":
            # (due - today).days is exactly -(today - due).days, and None together with it.
            values[name] = None if overdue is None else -overdue
        elif name == "stage":
            values[name] = stage
        elif name == "record":
            values[name] = record
        elif name == "today":
            values[name] = ctx.today
        elif name == "now":
            values[name] = ctx.now.astimezone(rule.timezone)
        elif name == "previous":
            values[name] = ctx.previous or {}
        else:
            values[name] = {"id": rule.id, "description": rule.description}
    return values


def _render(
    rule: CompiledRule,
    template: CompiledTemplate,
    ctx: EvaluationContext,
    stage: int | None,
    overdue: int | None = _UNKNOWN,
) -> tuple[str, tuple[str, str] | None]:
    """(body, None) or ("", (skip code, reason)) when the template cannot be rendered."""
    body: str | None
    try:
        body = template.render(_template_values(rule, template, ctx, stage, overdue)).strip()
    except Exception:  # rendered again below with the full context, for the real outcome
        body = None
    if body is not None:
        return body, None
    # The slow path: exactly what evaluation always did, so errors read the same.
    try:
        return template.render(template_context(rule, ctx, stage=stage)).strip(), None
    except TemplateError as exc:
        return "", (exc.code, f"template {exc.template}: {exc.message}")
    except EngineError as exc:
        return "", ("ML203", f"template {template.name}: {exc}")


def render_body(rule: CompiledRule, context: Mapping[str, Any]) -> str:
    return rule.template.render(context).strip()


def dedupe(
    rule: CompiledRule, ctx: EvaluationContext, stage: int | None
) -> tuple[list[Any], str, str | None]:
    """(parts, the human-readable key, the parts' canonical JSON or None when not plain values)."""
    parts: list[Any] = []
    shown: list[str] = []
    encoded: list[str] | None = []
    record = ctx.record
    for entry, entry_json, field_name, getter in rule.once_per_steps:
        value: Any
        if field_name is not None:
            value = record.get(field_name)  # what make_getter(field_name) reads
        elif getter is not None:
            value = getter(record)
        elif entry == "stage":
            value = stage
        elif entry == "crossing":
            crossing = rule.crossing_check
            value = crossing.crossing_key(ctx) if crossing is not None else None
        elif entry == "day":
            value = ctx.today.isoformat()
        elif entry == "week":
            year, week, _ = ctx.today.isocalendar()
            value = f"{year}-W{week:02d}"
        else:
            value = rule.once_per_getters[entry](ctx.record)
        parts.append([entry, value])
        if value is None:
            shown.append(f"{entry}=")
            text = "null"
        else:
            shown.append(f"{entry}={value}")
            kind = type(value)
            text = encode_text(value) if kind is str else int.__repr__(value) if kind is int else ""
        if encoded is not None:
            if text:
                # The canonical JSON of [entry, value], as make_job_id's encoder writes it.
                encoded.append(f"[{entry_json},{text}]")
            else:
                encoded = None  # a float, a bool, a date...: left to the encoder
    json_text = None if encoded is None else "[" + ",".join(encoded) + "]"
    return parts, f"{rule.id}/{rule.entity}/" + ",".join(shown), json_text


def plan(
    rule: CompiledRule, ctx: EvaluationContext, record_id: str, number: str | None
) -> tuple[str, list[PlannedMessage]]:
    """The reason and the messages of a rule whose conditions all hold for `ctx`."""
    stage: int | None = None
    channel = rule.channel
    template = rule.template
    recipients = rule.recipients
    region = rule.region
    grace = 0
    overdue: int | None = _UNKNOWN  # days_overdue of dueDate, when the stage already counted it
    ladder = rule.ladder
    if ladder is not None:
        days = ladder.days(ctx)
        reached = ladder.current(days) if days is not None else None
        if reached is not None:
            stage = reached.days
            channel = reached.channel
            template = reached.template
            region = reached.region
            grace = reached.grace_days
            recipients = reached.recipients
        if ladder.path == "dueDate":
            overdue = days
        # The ladder's part of the reason, from the days just counted.
        explained = [
            ladder.explain_days(ctx, days, reached) if check is ladder else check.explain_held(ctx)
            for check in rule.checks
        ]
    else:
        stage_check = rule.stage_check
        if stage_check is not None:
            days = stage_check.days(ctx)
            stage = stage_check.stage(days) if days is not None else None
            if stage_check.path == "dueDate":
                # (due - today).days is exactly -(today - due).days.
                overdue = days if stage_check.kind == "days_overdue" or days is None else -days
        explained = [check.explain_held(ctx) for check in rule.checks]
    # dict.fromkeys keeps order and drops repeats (changed_from + changed_to explain the same move).
    reason = "; ".join(dict.fromkeys(explained)) or "no conditions"
    parts, dedupe_key, parts_json = dedupe(rule, ctx, stage)
    body, render_error = _render(rule, template, ctx, stage, overdue)
    segments = segment_count(body) if body and CHANNELS[channel].counts_segments else 0
    record = ctx.record
    messages: list[PlannedMessage] = []
    for target in recipients:
        to, skip_code, skip_reason = recipient(region, target, record)
        if render_error is not None:
            skip_code, skip_reason = render_error
            to = None
        messages.append(
            new_message(
                {
                    "job_id": job_id(rule, record_id, parts, parts_json, target.spec),
                    "rule_id": rule.id,
                    "entity": rule.entity,
                    "record_id": record_id,
                    "record_number": number,
                    "channel": channel,
                    "to": to,
                    "body": body,
                    "segments": segments,
                    "dedupe_key": dedupe_key + (f"/to={target.spec}" if len(recipients) > 1 else ""),
                    "reason": reason,
                    "skip_code": skip_code,
                    "skip_reason": skip_reason,
                    "timezone": rule.timezone.key,
                    "quiet_hours": rule.quiet_hours,
                    "stage": stage,
                    "grace_days": grace,
                    "group_job_id": None,
                    "record": record,
                }
            )
        )
    return reason, messages


def job_id(rule: CompiledRule, record_id: str, parts: list[Any], parts_json: str | None, spec: str) -> str:
    """make_job_id([rule.id, rule.entity, record_id, parts, spec]), the JSON written directly."""
    if parts_json is None or type(record_id) is not str or type(spec) is not str:
        # Values the encoder's own rules must write (floats, dates, dicts...).
        return make_job_id([rule.id, rule.entity, record_id, parts, spec])
    canonical = f"{rule.job_id_head}{encode_text(record_id)},{parts_json},{encode_text(spec)}]"
    return JOB_ID_PREFIX + hashlib.sha256(canonical.encode("utf-8")).hexdigest()[:JOB_ID_HEX]
