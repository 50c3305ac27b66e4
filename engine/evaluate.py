"""Evaluation: a record + the rule set + now -> planned messages. Pure: no I/O, no clock reads.

`PlannedMessage` is what the service stores in its outbox as-is; its `job_id` is stable (same rule,
record and dedupe-key values -> same id), so replays and re-sweeps are harmless. A recipient that
cannot be normalised becomes a recorded skip (`to=None`, `skip_code`), never a send to a guess.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import date, datetime
from functools import lru_cache
from typing import TYPE_CHECKING, Any

import phonenumbers

from engine import functions as fn
from engine.conditions import run_test
from engine.errors import EngineError, PhoneError, TemplateError
from engine.functions import EvaluationContext
from engine.model import CHANNELS
from engine.phones import to_e164
from engine.render import segment_count

if TYPE_CHECKING:
    from zoneinfo import ZoneInfo

    from engine.render import CompiledTemplate
    from engine.ruleset import CompiledRule, RecipientTarget, RuleSet

JOB_ID_PREFIX = "mlc-"
JOB_ID_HEX = 40  # "mlc-" + 40 hex = 44 characters, well under the 64 the outbox allows


@dataclass(frozen=True)
class PlannedMessage:
    job_id: str
    rule_id: str
    entity: str
    record_id: str | None  # None for a grouped message (its members name the records)
    record_number: str | None
    channel: str
    to: str | None  # E.164; None when skipped
    body: str
    segments: int
    dedupe_key: str  # human-readable form of what job_id hashes
    reason: str  # why the rule fired
    skip_code: str | None = None  # e.g. ML401 (phone unparseable), ML203 (template failed)
    skip_reason: str | None = None
    timezone: str = "UTC"  # the rule's time zone, for quiet hours
    quiet_hours: str | None = None  # "HH:MM-HH:MM" local, or None
    stage: int | None = None  # the ladder / day stage reached (days), for reminders
    grace_days: int = 0  # the stage's grace period: stay silent if a payment was seen this recently
    group_job_id: str | None = None  # set on an invoice's row that was sent inside a grouped message
    # The (expanded) record the message is about: grouping lists its documents. Not part of equality.
    record: Mapping[str, Any] | None = field(default=None, compare=False, repr=False)

    @property
    def skipped(self) -> bool:
        return self.skip_code is not None


@dataclass(frozen=True)
class RuleOutcome:
    """What one rule did with one record: fired (with its messages) or not (with the reason)."""

    rule_id: str
    fired: bool
    reason: str
    messages: tuple[PlannedMessage, ...] = ()
    error: bool = False  # a condition failed to evaluate (bad data), rather than simply not holding


# What json.dumps(parts, sort_keys=True, separators=(",", ":"), default=str, ensure_ascii=False) uses,
# built once: the encoder keeps no state between calls.
_CANONICAL = json.JSONEncoder(sort_keys=True, separators=(",", ":"), default=str, ensure_ascii=False)
# How that encoder writes a str (ensure_ascii=False): the C function json itself calls.
_encode_text: Callable[[str], str] = json.encoder.encode_basestring


def make_job_id(parts: list[Any]) -> str:
    """`mlc-` + 40 hex of sha256 over the canonical JSON of the identifying parts."""
    canonical = _CANONICAL.encode(parts)
    return JOB_ID_PREFIX + hashlib.sha256(canonical.encode("utf-8")).hexdigest()[:JOB_ID_HEX]


@lru_cache(maxsize=64)
def _today(now: datetime, zone: ZoneInfo) -> date:
    # A sweep evaluates every record at the same `now`: convert it once per zone.
    return now.astimezone(zone).date()


def _context_for(
    rule: CompiledRule,
    record: Mapping[str, Any],
    previous: Mapping[str, Any] | None,
    now: datetime,
    cache: dict[str, EvaluationContext],
) -> EvaluationContext:
    # `today` depends on the rule's time zone; one context per zone per call.
    key = rule.timezone.key
    ctx = cache.get(key)
    if ctx is None:
        ctx = EvaluationContext(record=record, previous=previous, now=now, today=_today(now, rule.timezone))
        cache[key] = ctx
    return ctx


def template_context(rule: CompiledRule, ctx: EvaluationContext, *, stage: int | None) -> dict[str, Any]:
    """What a template sees: the record's fields by name, plus `record`, `previous`, `rule`, dates."""
    from engine import functions as fn

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


def _dedupe(
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
            text = _encode_text(value) if kind is str else int.__repr__(value) if kind is int else ""
        if encoded is not None:
            if text:
                # The canonical JSON of [entry, value], as make_job_id's encoder writes it.
                encoded.append(f"[{entry_json},{text}]")
            else:
                encoded = None  # a float, a bool, a date...: left to the encoder
    json_text = None if encoded is None else "[" + ",".join(encoded) + "]"
    return parts, f"{rule.id}/{rule.entity}/" + ",".join(shown), json_text


@lru_cache(maxsize=16_384)
def _normalise(raw: str, region: str | None) -> str:
    # A sweep meets the same customer number on many invoices; phonenumbers is the costly part.
    # Failures raise PhoneError and are not cached.
    return to_e164(raw, region).number


def _recipient(
    region: str | None, target: RecipientTarget, record: Mapping[str, Any]
) -> tuple[str | None, str | None, str | None]:
    """(E.164, skip_code, skip_reason)."""
    if target.number is not None:
        return target.number, None, None
    assert target.getter is not None
    raw = target.getter(record)
    if raw is None or (isinstance(raw, str) and not raw.strip()):
        head = (target.path or "").split(".")[0]
        if target.path and "." in target.path and not isinstance(record.get(head), Mapping):
            return None, "ML401", f"{head} was not expanded on the record, so {target.path} is unknown"
        return None, "ML401", f"{target.path} is empty"
    if target.region_getter is not None:
        # The recipient's own country reads a national number; the rule's region is the fallback.
        country = target.region_getter(record)
        if isinstance(country, str) and country.strip().upper() in phonenumbers.SUPPORTED_REGIONS:
            region = country.strip().upper()
    try:
        return _normalise(str(raw), region), None, None
    except PhoneError as exc:
        return None, exc.code, f"{target.path} {raw!r}: {exc.reason}"


def _fire(rule: CompiledRule, ctx: EvaluationContext, record_id: str, number: str | None) -> RuleOutcome:
    reason, messages = _plan(rule, ctx, record_id, number)
    return RuleOutcome(rule.id, True, reason, tuple(messages))


def _plan(
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
    parts, dedupe_key, parts_json = _dedupe(rule, ctx, stage)
    body, render_error = _render(rule, template, ctx, stage, overdue)
    segments = segment_count(body) if body and CHANNELS[channel].counts_segments else 0
    record = ctx.record
    messages: list[PlannedMessage] = []
    for target in recipients:
        to, skip_code, skip_reason = _recipient(region, target, record)
        if render_error is not None:
            skip_code, skip_reason = render_error
            to = None
        messages.append(
            _new_message(
                {
                    "job_id": _job_id(rule, record_id, parts, parts_json, target.spec),
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


def _new_message(fields: dict[str, Any]) -> PlannedMessage:
    """PlannedMessage(**fields) with every field given, without the frozen dataclass's __init__.

    That __init__ sets each of its 19 fields through object.__setattr__ (the frozen guard), which
    cost more than the rest of planning a message. PlannedMessage has no __post_init__ and no
    slots, so filling its __dict__ makes the very same object (tests compare the two).
    """
    message = object.__new__(PlannedMessage)
    message.__dict__.update(fields)
    return message


def _job_id(rule: CompiledRule, record_id: str, parts: list[Any], parts_json: str | None, spec: str) -> str:
    """make_job_id([rule.id, rule.entity, record_id, parts, spec]), the JSON written directly."""
    if parts_json is None or type(record_id) is not str or type(spec) is not str:
        # Values the encoder's own rules must write (floats, dates, dicts...).
        return make_job_id([rule.id, rule.entity, record_id, parts, spec])
    canonical = f"{rule.job_id_head}{_encode_text(record_id)},{parts_json},{_encode_text(spec)}]"
    return JOB_ID_PREFIX + hashlib.sha256(canonical.encode("utf-8")).hexdigest()[:JOB_ID_HEX]


def _record_identity(entity_spec_number: str, record: Mapping[str, Any]) -> tuple[str, str | None]:
    record_id = record.get("id")
    number = record.get(entity_spec_number)
    return (str(record_id) if record_id is not None else "", str(number) if number is not None else None)


@lru_cache(maxsize=256)
def _number_field(entity: str) -> str:
    from engine.catalogue import default_catalogue

    spec = default_catalogue().get(entity)
    return spec.number_field if spec is not None else "number"


def _prepare(
    entity: str,
    record: Mapping[str, Any],
    ruleset: RuleSet,
    now: datetime,
    previous: Mapping[str, Any] | None,
    event: str | None,
) -> tuple[tuple[CompiledRule, ...], Mapping[str, Any] | None]:
    if now.tzinfo is None:
        raise ValueError("evaluate needs a timezone-aware `now`")
    if event == "created" and previous is None:
        # A new record has an empty past: `changed_to: {status: Open}` holds for a record created Open.
        previous = {}
    return ruleset.rules_for(entity, event), previous


def evaluate_detailed(
    entity: str,
    record: Mapping[str, Any],
    ruleset: RuleSet,
    now: datetime,
    previous: Mapping[str, Any] | None = None,
    *,
    event: str | None = "updated",
) -> list[RuleOutcome]:
    """Every rule on `entity` for `event` (all events when None), fired or not, with the reason."""
    rules, previous = _prepare(entity, record, ruleset, now, previous, event)
    record_id, number = _record_identity(_number_field(entity), record)
    cache: dict[str, EvaluationContext] = {}
    outcomes: list[RuleOutcome] = []
    for rule in rules:
        ctx = _context_for(rule, record, previous, now, cache)
        failed: RuleOutcome | None = None
        for check in rule.checks:
            holds, error = run_test(check, ctx)
            if error is not None:
                failed = RuleOutcome(rule.id, False, f"could not evaluate {check.kind}: {error}", error=True)
                break
            if not holds:
                failed = RuleOutcome(rule.id, False, check.explain(ctx))
                break
        outcomes.append(failed or _fire(rule, ctx, record_id, number))
    return outcomes


def evaluate(
    entity: str,
    record: Mapping[str, Any],
    ruleset: RuleSet,
    now: datetime,
    previous: Mapping[str, Any] | None = None,
    *,
    event: str | None = "updated",
) -> list[PlannedMessage]:
    """The messages `record` (an `entity` record in BC v2.0 shape) plans under `ruleset` at `now`.

    `previous` is the last seen version of the record (needed for crossings and changes);
    `event` selects the rules triggered by it (created, updated, deleted, sweep, poll).
    """
    if now.tzinfo is None:
        raise ValueError("evaluate needs a timezone-aware `now`")
    if event == "created" and previous is None:
        # A new record has an empty past: `changed_to: {status: Open}` holds for a record created Open.
        previous = {}
    planned: list[PlannedMessage] = []
    identified = False
    record_id = ""
    number: str | None = None
    # One context per time zone (`today` depends on it); the rules nearly always share one.
    zone: ZoneInfo | None = None
    ctx: EvaluationContext | None = None
    for rule in ruleset.rules_for(entity, event):
        if rule.timezone is not zone:
            zone = rule.timezone
            ctx = _context(record, previous, now, zone)
        assert ctx is not None
        if rule.holds(ctx):
            if not identified:
                # _record_identity, written out.
                raw_id = record.get("id")
                record_id = str(raw_id) if raw_id is not None else ""
                raw_number = record.get(_number_field(entity))
                number = str(raw_number) if raw_number is not None else None
                identified = True
            # The rule's generated planner (engine.planner) answers the common case; None sends the
            # record through the general path, which gives the real outcome of anything unusual.
            fast = rule.planner if rule._planner_built else rule.fast_planner()
            messages = fast(ctx, record_id, number) if fast is not None else None
            planned.extend(messages if messages is not None else _plan(rule, ctx, record_id, number)[1])
    return planned


# The last (now, zone) -> today that _context worked out: a sweep evaluates every record at one `now`.
_last_day: tuple[datetime | None, ZoneInfo | None, date | None] = (None, None, None)
_new_context = object.__new__
# EvaluationContext's slots, set directly: its __init__ (the frozen guard on each field, and
# __post_init__'s check of `now`) cost as much as a rule's conditions.
_set_record = getattr(EvaluationContext, "record").__set__  # noqa: B009 - the slot descriptor
_set_previous = getattr(EvaluationContext, "previous").__set__  # noqa: B009
_set_now = getattr(EvaluationContext, "now").__set__  # noqa: B009
_set_today = getattr(EvaluationContext, "today").__set__  # noqa: B009


def _context(
    record: Mapping[str, Any], previous: Mapping[str, Any] | None, now: datetime, zone: ZoneInfo
) -> EvaluationContext:
    """EvaluationContext(record, previous, now, today in `zone`): the same object, built faster."""
    global _last_day
    last = _last_day
    if last[0] is now and last[1] is zone:
        today = last[2]
    else:
        today = _today(now, zone)
        if now.utcoffset() is None:
            # What __post_init__ refuses: let it say so.
            return EvaluationContext(record=record, previous=previous, now=now, today=today)
        _last_day = (now, zone, today)
    ctx = _new_context(EvaluationContext)
    _set_record(ctx, record)
    _set_previous(ctx, previous)
    _set_now(ctx, now)
    _set_today(ctx, today)
    return ctx
