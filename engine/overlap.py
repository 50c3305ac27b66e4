"""Rule-set lint: rules that would text the same person about the same record at the same time
(ML506), and escalation ladders with overlapping (ML507) or unreachable (ML508) stages.

Static and conservative: two rules overlap when they share the entity and an event, name the same
recipient (as written: `customer.phoneNumber`, or the same fixed number), their field conditions
do not exclude each other (`status: Open` vs `status: Paid`), and the days on which they fire
(in days overdue: a stage fires on the day it starts, a plain day window on any day in it)
meet. Expressions are not analysed: they may make two rules disjoint, so this is a warning.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from itertools import pairwise

from engine.conditions import DaysCheck, FieldCheck
from engine.ruleset import CompiledRule
from engine.stages import LadderCheck

INF = 10**6


@dataclass(frozen=True)
class Finding:
    rule_id: str
    code: str
    message: str
    loc: tuple[str | int, ...]


Days = tuple[int, int]  # inclusive range in days overdue


def _window(check: DaysCheck) -> Days:
    """The days-overdue range a day window allows (days_until_due is negated)."""
    lo, hi = -INF, INF
    for name, bound in check.bounds:
        if name == "eq":
            lo, hi = max(lo, bound), min(hi, bound)
        elif name == "gt":
            lo = max(lo, bound + 1)
        elif name == "gte":
            lo = max(lo, bound)
        elif name == "lt":
            hi = min(hi, bound - 1)
        elif name == "lte":
            hi = min(hi, bound)
    if check.kind == "days_until_due":
        lo, hi = -hi, -lo
    return lo, hi


def _limits(rule: CompiledRule) -> Days:
    lo, hi = -INF, INF
    for check in rule.checks:
        if isinstance(check, DaysCheck):
            a, b = _window(check)
            lo, hi = max(lo, a), min(hi, b)
    return lo, hi


def firing_days(rule: CompiledRule) -> list[Days]:
    """The days (overdue) on which the rule sends: stage starts, or its whole day window."""
    lo, hi = _limits(rule)
    if rule.stages:
        return [(s.starts, s.starts) for s in rule.stages if lo <= s.starts <= hi]
    stage_check = rule.stage_check
    if stage_check is not None and stage_check.stages is not None:
        sign = 1 if stage_check.kind == "days_overdue" else -1
        days = sorted(sign * s for s in stage_check.stages)
        return [(d, d) for d in days if lo <= d <= hi]
    return [(lo, hi)] if lo <= hi else []


def _recipients(rule: CompiledRule) -> set[str]:
    specs = {t.number or t.spec for t in rule.recipients} if not rule.stages else set()
    for stage in rule.stages:
        specs |= {t.number or t.spec for t in stage.recipients}
    return specs


def _equalities(rule: CompiledRule) -> Mapping[str, object]:
    found: dict[str, object] = {}
    for check in rule.checks:
        if isinstance(check, FieldCheck):
            for name, bound in check.ops:
                if name == "eq":
                    found[check.path] = bound
    return found


def _excluded(a: CompiledRule, b: CompiledRule) -> bool:
    ea, eb = _equalities(a), _equalities(b)
    return any(path in eb and eb[path] != value for path, value in ea.items())


def _meet(a: list[Days], b: list[Days]) -> int | None:
    for lo1, hi1 in a:
        for lo2, hi2 in b:
            if max(lo1, lo2) <= min(hi1, hi2):
                return max(lo1, lo2)
    return None


def _day_words(day: int) -> str:
    if abs(day) >= INF:
        return "any day"
    if day < 0:
        return f"{-day} day(s) before the due date"
    return "the due date" if day == 0 else f"{day} day(s) overdue"


def _range_words(lo: int, hi: int) -> str:
    if lo <= -INF:
        return f"up to {_day_words(hi)}"
    if hi >= INF:
        return f"from {_day_words(lo)} on"
    return f"{_day_words(lo)} to {_day_words(hi)}"


def overlapping_rules(rules: Iterable[CompiledRule]) -> list[Finding]:
    enabled = [r for r in rules if r.enabled]
    found: list[Finding] = []
    for i, a in enumerate(enabled):
        for b in enabled[i + 1 :]:
            if a.entity != b.entity or not (a.events & b.events):
                continue
            shared = _recipients(a) & _recipients(b)
            if not shared or _excluded(a, b):
                continue
            day = _meet(firing_days(a), firing_days(b))
            if day is None:
                continue
            who = ", ".join(sorted(shared))
            when = "" if abs(day) >= INF else f" on {_day_words(day)}"
            for this, other in ((a, b), (b, a)):
                found.append(
                    Finding(
                        this.id,
                        "ML506",
                        f"{this.id} and {other.id} can both text {who} about the same {a.entity} record"
                        f"{when}; make their conditions or days exclusive, or merge them into one ladder",
                        ("id",),
                    )
                )
    return found


def ladder_problems(rule: CompiledRule) -> list[Finding]:
    """Stages that start on the same day or out of order after grace (overlap), or can never fire (gap)."""
    found: list[Finding] = []
    if not rule.stages:
        return found
    model_stages = rule.model.stages or ()
    positions = {stage.days_overdue: index for index, stage in enumerate(model_stages)}
    ordered = list(rule.stages)  # as written (increasing days_overdue, checked by the schema)
    for before, after in pairwise(ordered):
        if after.starts <= before.starts:
            found.append(
                Finding(
                    rule.id,
                    "ML507",
                    f"stage {after.days} starts on day {after.starts} (after grace), not after stage "
                    f"{before.days} (day {before.starts}): the ladder overlaps and stage "
                    f"{before.days if after.starts < before.starts else after.days} may never be sent; "
                    "shorten the grace period",
                    ("stages", positions.get(before.days, 0), "grace_days"),  # the grace that causes it
                )
            )
    lo, hi = _limits(rule)
    ladder = rule.ladder
    for stage in ordered:
        if not lo <= stage.starts <= hi:
            found.append(
                Finding(
                    rule.id,
                    "ML508",
                    f"stage {stage.days} starts on day {stage.starts}, outside the days the rule's "
                    f"other conditions allow ({_range_words(lo, hi)}): a gap in the ladder, "
                    "the stage never fires",
                    ("stages", positions.get(stage.days, 0)),
                )
            )
    if ladder is not None and any(isinstance(c, DaysCheck) and c.stages for c in rule.checks):
        found.append(
            Finding(
                rule.id,
                "ML507",
                "the rule has both `stages:` and a days condition with `stages`; the ladder decides the "
                "stage, so remove the condition's stages",
                ("stages",),
            )
        )
    assert ladder is None or isinstance(ladder, LadderCheck)
    return found
