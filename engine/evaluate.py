"""Evaluation: a record + the rule set + now -> planned messages. Pure: no I/O, no clock reads.

`evaluate` answers the service (the messages to store); `evaluate_detailed` answers preview and
rule tests (every rule, fired or not, with the reason). A fired rule's messages come from
engine.plan; their shape and job ids from engine.messages.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import date, datetime
from functools import lru_cache
from typing import Any
from zoneinfo import ZoneInfo

from engine.catalogue import default_catalogue
from engine.conditions import run_test
from engine.functions import EvaluationContext
from engine.messages import PlannedMessage, RuleOutcome
from engine.plan import plan
from engine.ruleset import CompiledRule, RuleSet


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


def _fire(rule: CompiledRule, ctx: EvaluationContext, record_id: str, number: str | None) -> RuleOutcome:
    reason, messages = plan(rule, ctx, record_id, number)
    return RuleOutcome(rule.id, True, reason, tuple(messages))


def _record_identity(entity_spec_number: str, record: Mapping[str, Any]) -> tuple[str, str | None]:
    record_id = record.get("id")
    number = record.get(entity_spec_number)
    return (str(record_id) if record_id is not None else "", str(number) if number is not None else None)


@lru_cache(maxsize=256)
def _number_field(entity: str) -> str:
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
            planned.extend(plan(rule, ctx, record_id, number)[1])
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
