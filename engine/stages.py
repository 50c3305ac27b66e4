"""Escalation ladders: a rule's `stages:` compiled once into a check and per-stage send settings.

A ladder counts days overdue from the due date (negative before it). Stage N starts on day
N + grace_days; on any day the rule is in the LAST stage that has started, so a sweep that was
missed for a while sends the current stage, never a backlog of stale ones. With `stage` in
once_per each stage fires once per invoice and due date: a new due date (promise to pay)
restarts the ladder, and a paid invoice stops it (its other conditions no longer hold).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from engine import functions as fn
from engine.conditions import Check, FieldUse, PredicateCode, make_getter
from engine.functions import EvaluationContext
from engine.recipients import RecipientTarget
from engine.render import CompiledTemplate


@dataclass(frozen=True)
class CompiledStage:
    days: int  # days_overdue as written: the stage's key in once_per and the audit
    starts: int  # days + grace_days
    grace_days: int
    name: str | None
    channel: str
    template: CompiledTemplate
    recipients: tuple[RecipientTarget, ...]
    region: str | None

    @property
    def label(self) -> str:
        return self.name or (
            f"{self.days} days overdue" if self.days >= 0 else f"{-self.days} days before due"
        )


@dataclass(frozen=True)
class CompiledGroup:
    templates: dict[str, CompiledTemplate]  # channel -> template; channels without one are not grouped
    numbers: int
    min_size: int


class LadderCheck(Check):
    """Holds once the first stage has started; `current` names the stage the record is in."""

    kind = "stages"

    def __init__(self, stages: Sequence[CompiledStage], field: str = "dueDate") -> None:
        self.stages = tuple(sorted(stages, key=lambda s: (s.starts, s.days)))
        self.path = field
        self.get = make_getter(field)
        # A plain field is read with record.get (what the getter does), without the extra call.
        self.field_name = None if "." in field else field

    def days(self, ctx: EvaluationContext) -> int | None:
        if self.field_name is not None:
            return fn.days_overdue(ctx, ctx.record.get(self.field_name))
        return fn.days_overdue(ctx, self.get(ctx.record))

    def current(self, days: int) -> CompiledStage | None:
        reached: CompiledStage | None = None
        for stage in self.stages:
            if days >= stage.starts:
                reached = stage
        return reached

    def test(self, ctx: EvaluationContext) -> bool:
        days = self.days(ctx)
        return days is not None and self.current(days) is not None

    def explain(self, ctx: EvaluationContext) -> str:
        days = self.days(ctx)
        return self.explain_days(ctx, days, None if days is None else self.current(days))

    def explain_days(self, ctx: EvaluationContext, days: int | None, stage: CompiledStage | None) -> str:
        """`explain` with the days overdue and the stage reached already known (days() and current())."""
        if days is None:
            return f"{self.path} is empty"
        raw = ctx.record.get(self.field_name) if self.field_name is not None else self.get(ctx.record)
        when = f"{days} day{'' if abs(days) == 1 else 's'} overdue ({self.path} {raw}, today {ctx.today})"
        if stage is None:
            first = self.stages[0]
            return f"{when}; the first stage starts at {first.starts} days overdue"
        grace = f" after {stage.grace_days} grace day(s)" if stage.grace_days else ""
        return f"{when}, stage {stage.days} ({stage.label}){grace}"

    def predicate(self, code: PredicateCode) -> str:
        if not self.stages:
            return super().predicate(code)
        # current() is not None once the earliest start is reached (stages are sorted by start).
        temp = code.temp()
        return (
            f"(({temp} := {code.name(fn.days_overdue)}(ctx, {code.read(self.path)})) is not None "
            f"and {temp} >= {code.name(self.stages[0].starts)})"
        )

    def uses(self) -> tuple[FieldUse, ...]:
        return (FieldUse(self.path, "date", ()),)
