"""Runtime forms of rules: `CompiledRule` (one validated, compiled rule) and `RuleSet` (all of them).

Built once by engine.loader; nothing here is re-checked or mutated per record.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any
from zoneinfo import ZoneInfo

from engine.conditions import Check, CrossingCheck, DaysCheck, Getter, Predicate, compile_predicate
from engine.model import RuleFile
from engine.recipients import RecipientTarget
from engine.render import CompiledTemplate
from engine.stages import CompiledGroup, CompiledStage, LadderCheck

# once_per entries evaluation computes rather than reads from the record.
_COMPUTED_ONCE_PER = frozenset({"stage", "crossing", "day", "week"})


def _json_text(text: str) -> str:
    return json.dumps(text, ensure_ascii=False)


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
    # All of `checks` compiled into one function (engine.conditions.compile_predicate): what
    # engine.evaluate runs per record.
    holds: Predicate = field(init=False, repr=False, compare=False)
    # The checks evaluation looks up per fired record, found once.
    _ladder: LadderCheck | None = field(init=False, repr=False, compare=False)
    _stage_check: DaysCheck | None = field(init=False, repr=False, compare=False)
    # Canonical JSON (engine.messages.make_job_id) of the constant parts of every job id of this rule:
    # '["<id>","<entity>",' and each once_per entry name.
    job_id_head: str = field(init=False, repr=False, compare=False)
    # once_per as (entry, its JSON, the record getter or None for stage/crossing/day/week).
    # (field_name is set for a plain field: read with record.get, no getter call.)
    once_per_steps: tuple[tuple[str, str, str | None, Getter | None], ...] = field(
        init=False, repr=False, compare=False
    )

    def __post_init__(self) -> None:
        object.__setattr__(self, "holds", compile_predicate(self.checks))
        object.__setattr__(self, "job_id_head", f"[{_json_text(self.id)},{_json_text(self.entity)},")
        steps = tuple(
            (entry, _json_text(entry), None, None)
            if entry in _COMPUTED_ONCE_PER
            else (entry, _json_text(entry), None if "." in entry else entry, self.once_per_getters[entry])
            for entry in self.once_per
        )
        object.__setattr__(self, "once_per_steps", steps)
        ladder = next((c for c in self.checks if isinstance(c, LadderCheck)), None)
        object.__setattr__(self, "_ladder", ladder)
        stage_check = next(
            (c for c in self.checks if isinstance(c, DaysCheck) and c.stages is not None), None
        )
        object.__setattr__(self, "_stage_check", stage_check)

    @property
    def ladder(self) -> LadderCheck | None:
        return self._ladder

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
        """A reminder rule (it has a `stages:` ladder): pauses, caps and payment grace apply to it."""
        return bool(self.stages)

    @property
    def needs_previous(self) -> bool:
        return any(check.needs_previous for check in self.checks)

    @property
    def stage_check(self) -> DaysCheck | None:
        return self._stage_check

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
