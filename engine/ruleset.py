"""Runtime forms of rules: `CompiledRule` (one validated, compiled rule) and `RuleSet` (all of them).

Built once by engine.loader; nothing here is re-checked or mutated per record.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any
from zoneinfo import ZoneInfo

from engine.conditions import Check, CrossingCheck, DaysCheck, Getter
from engine.model import RuleFile
from engine.render import CompiledTemplate
from engine.stages import CompiledGroup, CompiledStage, LadderCheck


@dataclass(frozen=True)
class RecipientTarget:
    """One recipient entry of a rule: a field path read per record, or a fixed E.164 number."""

    spec: str  # as written in the rule (a path or a number); part of the job id
    path: str | None = None
    getter: Getter | None = None
    number: str | None = None  # E.164, for fixed numbers
    # Reads the recipient's country (recipient.region_from) so a national number is read as theirs.
    region_getter: Getter | None = None


@dataclass(frozen=True)
class CompiledRule:
    id: str
    description: str
    source: str  # the rule file path, for messages
    entity: str
    events: frozenset[str]
    checks: tuple[Check, ...]
    recipients: tuple[RecipientTarget, ...]
    region: str | None  # default region for numbers without +country
    channel: str
    template: CompiledTemplate
    once_per: tuple[str, ...]
    once_per_getters: Mapping[str, Getter]
    timezone: ZoneInfo
    quiet_hours: str | None
    expansions: frozenset[str]  # navigation properties the fetcher must $expand
    enabled: bool
    model: RuleFile = field(repr=False)
    stages: tuple[CompiledStage, ...] = ()  # the escalation ladder, when the rule declares one
    group: CompiledGroup | None = None
    templates: tuple[CompiledTemplate, ...] = ()  # every template the rule may render (lint, reload)

    @property
    def ladder(self) -> LadderCheck | None:
        for check in self.checks:
            if isinstance(check, LadderCheck):
                return check
        return None

    def to_staff(self, stage: int | None) -> bool:
        """Does this stage go to fixed numbers (an account manager, a desk) rather than the customer?

        Such messages are about one document each: never grouped, never capped.
        """
        for compiled in self.stages:
            if compiled.days == stage:
                return all(target.number is not None for target in compiled.recipients)
        return False

    @property
    def is_reminder(self) -> bool:
        """A dunning rule (it has a `stages:` ladder): pauses, caps and payment grace apply to it."""
        return bool(self.stages)

    @property
    def needs_previous(self) -> bool:
        return any(check.needs_previous for check in self.checks)

    @property
    def stage_check(self) -> DaysCheck | None:
        for check in self.checks:
            if isinstance(check, DaysCheck) and check.stages is not None:
                return check
        return None

    @property
    def crossing_check(self) -> CrossingCheck | None:
        for check in self.checks:
            if isinstance(check, CrossingCheck):
                return check
        return None


class RuleSet:
    """The enabled rules, indexed by (entity, event)."""

    def __init__(self, rules: Iterable[CompiledRule], *, default_region: str | None = None) -> None:
        self.rules: tuple[CompiledRule, ...] = tuple(sorted(rules, key=lambda r: r.id))
        self.default_region = default_region
        index: dict[tuple[str, str], list[CompiledRule]] = {}
        by_entity: dict[str, list[CompiledRule]] = {}
        for rule in self.rules:
            if not rule.enabled:
                continue
            by_entity.setdefault(rule.entity, []).append(rule)
            for event in rule.events:
                index.setdefault((rule.entity, event), []).append(rule)
        self._index = {key: tuple(value) for key, value in index.items()}
        self._by_entity = {key: tuple(value) for key, value in by_entity.items()}
        self._by_id = {rule.id: rule for rule in self.rules}

    def __len__(self) -> int:
        return len(self.rules)

    def __iter__(self) -> Any:
        return iter(self.rules)

    def get(self, rule_id: str) -> CompiledRule | None:
        return self._by_id.get(rule_id)

    def rules_for(self, entity: str, event: str | None = None) -> tuple[CompiledRule, ...]:
        """Enabled rules triggered by `event` on `entity` (every event when `event` is None)."""
        if event is None:
            return self._by_entity.get(entity, ())
        return self._index.get((entity, event), ())

    def entities(self, events: Iterable[str]) -> frozenset[str]:
        """Entity sets with an enabled rule on any of `events` (what to subscribe to / poll / sweep)."""
        wanted = frozenset(events)
        return frozenset(entity for entity, event in self._index if event in wanted)

    def expansions(self, entity: str) -> frozenset[str]:
        """Navigation properties the fetcher must `$expand` on `entity` for its rules."""
        found: set[str] = set()
        for rule in self._by_entity.get(entity, ()):
            found |= rule.expansions
        return frozenset(found)
