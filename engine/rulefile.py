"""One rule file: checked against the schema and the entity catalogue, and compiled into a CompiledRule.

`compile_rule_text` and `compile_rule_file` collect every problem as a Diagnostic (with its line and
column) instead of stopping at the first; engine.loader reads whole folders of rule files with them.
Order per file: read, YAML checks, `version` first, schema (pydantic, positions from the composed
node tree), then semantics (catalogue fields, expressions, templates, recipients, dedupe key, time
zone).
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import lru_cache
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError, available_timezones

import jinja2
import jinja2.meta
import jinja2.nodes
import phonenumbers
from jinja2.sandbox import ImmutableSandboxedEnvironment
from pydantic import ValidationError
from yaml.nodes import ScalarNode

from engine.catalogue import (
    DATE_TYPES,
    NUMBER_TYPES,
    PHONE_TYPES,
    Catalogue,
    PathError,
    default_catalogue,
    did_you_mean,
)
from engine.conditions import (
    ChangedCheck,
    ChangedValueCheck,
    Check,
    CrossingCheck,
    DaysCheck,
    ExprCheck,
    FieldCheck,
    FieldUse,
    Getter,
    make_getter,
)
from engine.diagnostics import Diagnostic, Severity
from engine.errors import ExpressionError, PhoneError, TemplateError
from engine.expressions import compile_expression
from engine.functions import EvaluationContext
from engine.grouping import sample_group_context
from engine.model import (
    CHANNELS,
    CONDITION_KEYWORDS,
    EVENTS,
    FIELD_PATH,
    ONCE_PER_TOKENS,
    WEBHOOK_EVENTS,
    ChangedCondition,
    ChangedFromCondition,
    ChangedToCondition,
    Comparison,
    Condition,
    CrossedAboveCondition,
    CrossedBelowCondition,
    Crossing,
    DaysOverdueCondition,
    DaysUntilDueCondition,
    DaysWindow,
    ExprCondition,
    FieldCondition,
    Group,
    Recipient,
    RuleFile,
    Send,
    SendWindow,
    Stage,
    Trigger,
)
from engine.phones import to_e164
from engine.plan import template_context
from engine.recipients import RecipientTarget
from engine.render import CompiledTemplate, compile_template, sms_segments
from engine.ruleset import CompiledRule
from engine.stages import CompiledGroup, CompiledStage, LadderCheck
from engine.yamlpos import Position, YamlDocument, node_position, parse_yaml

SCHEMA_COMMENT = "yaml-language-server: $schema="
# The clock lint renders sample records with (their dates are in early 2026).
LINT_NOW = datetime(2026, 3, 25, 9, 0, tzinfo=UTC)
SEGMENT_WARNING = 2  # more SMS segments than this is a warning


@dataclass
class FileResult:
    path: str
    rule: CompiledRule | None
    diagnostics: list[Diagnostic] = field(default_factory=list)
    id_position: Position | None = None
    doc: YamlDocument | None = None  # for positions of rule-set findings (engine.overlap)


# Keys each part of the schema knows, for did-you-mean on unknown keys; keyed by the parent key.
def _aliases(model: Any) -> list[str]:
    return [f.alias or name for name, f in model.model_fields.items()]


_KNOWN_KEYS: Mapping[str, list[str]] = {
    "": _aliases(RuleFile),
    "trigger": _aliases(Trigger),
    "recipient": _aliases(Recipient),
    "send": _aliases(Send),
    "compare": _aliases(Comparison),
    "days_overdue": _aliases(DaysWindow),
    "days_until_due": _aliases(DaysWindow),
    "crossed_above": _aliases(Crossing),
    "crossed_below": _aliases(Crossing),
    "stages": _aliases(Stage),
    "group": _aliases(Group),
    "send_window": _aliases(SendWindow),
}
_TAGS = frozenset({"compare", "value", "field", *CONDITION_KEYWORDS})


@lru_cache(maxsize=1)
def _zones() -> frozenset[str]:
    return frozenset(available_timezones())


def _clean_loc(loc: Sequence[str | int]) -> str:
    """A readable path such as when[1].remainingAmount.gtt (union tags removed)."""
    out = ""
    for index, item in enumerate(loc):
        if isinstance(item, int):
            out += f"[{item}]"
        elif item in _TAGS and index > 0 and isinstance(loc[index - 1], int | str) and item != loc[-1]:
            # a discriminator tag repeats the key or names the branch; keep real keys only
            if item in CONDITION_KEYWORDS and isinstance(loc[index - 1], int):
                out += f".{item}"
            continue
        else:
            out += f".{item}" if out else str(item)
    return out


class _FileCheck:
    """Checks one rule file and compiles it; collects diagnostics instead of stopping."""

    def __init__(
        self,
        path: str,
        stem: str,
        text: str,
        *,
        catalogue: Catalogue,
        env: ImmutableSandboxedEnvironment | None,
        default_region: str | None,
    ) -> None:
        self.path = path
        self.stem = stem
        self.text = text
        self.catalogue = catalogue
        self.env = env
        self.default_region = default_region
        self.diagnostics: list[Diagnostic] = []
        self.doc: YamlDocument | None = None

    # --- reporting ------------------------------------------------------------------------------

    def report(
        self,
        code: str,
        message: str,
        where: Position,
        severity: Severity = "error",
        **data: object,
    ) -> None:
        self.diagnostics.append(Diagnostic(self.path, where.line, where.col, code, message, severity, data))

    def at(self, loc: Sequence[str | int], *, key: bool = False) -> Position:
        assert self.doc is not None
        return self.doc.locate(loc, key=key)

    def in_scalar(self, loc: Sequence[str | int], offset: int) -> Position:
        """Position of character `offset` inside the scalar at `loc` (quoted or plain, one line)."""
        assert self.doc is not None
        node = self.doc.node(loc)
        if node is None:
            return self.at(loc)
        start = node_position(node)
        if isinstance(node, ScalarNode) and node.style in {None, '"', "'"}:
            quote = 0 if node.style is None else 1
            if node.start_mark.line == node.end_mark.line:
                return Position(start.line, start.col + quote + offset)
        return start

    @property
    def has_errors(self) -> bool:
        return any(d.severity == "error" for d in self.diagnostics)

    # --- pipeline -------------------------------------------------------------------------------

    def run(self) -> FileResult:
        result = FileResult(self.path, None, self.diagnostics)
        model = self.parse()
        if model is None:
            return result
        result.id_position = self.at(("id",))
        result.doc = self.doc
        rule = self.compile(model)
        result.rule = None if self.has_errors else rule
        return result

    def parse(self) -> RuleFile | None:
        doc, issues = parse_yaml(self.text)
        for issue in issues:
            self.report(issue.code, issue.message, issue.position)
        if doc is None:
            return None
        self.doc = doc
        if not isinstance(doc.data, Mapping):
            kind = "a list" if isinstance(doc.data, list) else type(doc.data).__name__
            self.report(
                "ML007", f"a rule file holds one mapping (one rule), found {kind}", node_position(doc.root)
            )
            return None
        keys = doc.top_keys()
        version = doc.data.get("version")
        if "version" not in doc.data:
            self.report("ML008", "missing `version: 1`; put it on the first line of the rule", Position(1, 1))
            return None
        if version != 1 or isinstance(version, bool):
            self.report(
                "ML008",
                f"unsupported version {version!r}; this engine reads `version: 1`",
                self.at(("version",)),
            )
            return None
        if keys and keys[0][0] != "version":
            self.report("ML009", "put `version: 1` first", self.at(("version",), key=True), "warning")
        if SCHEMA_COMMENT not in self.text.split("version", 1)[0]:
            self.report(
                "ML010",
                "add `# yaml-language-server: $schema=../schema/rule.schema.json` as the first line "
                "for editor completion",
                Position(1, 1),
                "warning",
            )
        if self.has_errors:
            # YAML traps (duplicate keys, NO as false) make the data untrustworthy; stop before
            # the schema reports confusing follow-on errors.
            return None
        try:
            return RuleFile.model_validate(doc.data)
        except ValidationError as exc:
            errors = exc.errors()
            for error in errors:
                loc = tuple(error["loc"])
                # A list with a bad item is also "too short" once the item is dropped: say it once.
                if error["type"] == "too_short" and any(
                    tuple(other["loc"])[: len(loc)] == loc and other is not error for other in errors
                ):
                    continue
                self.schema_error(error)
            return None

    def schema_error(self, error: Any) -> None:
        loc: tuple[str | int, ...] = tuple(error["loc"])
        kind: str = error["type"]
        where = _clean_loc(loc)
        message: str = error["msg"]
        if kind == "extra_forbidden":
            name = str(loc[-1])
            parent = next((str(p) for p in reversed(loc[:-1]) if str(p) in _KNOWN_KEYS), "")
            if len(loc) == 1:
                parent = ""
            hint = did_you_mean(name, _KNOWN_KEYS.get(parent, []))
            text = f"unknown key {name!r}" + (f" in {_clean_loc(loc[:-1])}" if len(loc) > 1 else "")
            text += (
                f" (did you mean {hint!r}?)"
                if hint
                else f"; expected one of {', '.join(_KNOWN_KEYS.get(parent, []))}"
            )
            self.report("ML101", text, self.at(loc, key=True))
        elif kind == "missing":
            self.report("ML102", f"missing required key {str(loc[-1])!r}", self.at(loc[:-1]))
        elif kind == "value_error" and "one condition per list item" in message:
            self.report("ML109", message.removeprefix("Value error, "), self.at(loc))
        elif kind == "literal_error" and "events" in loc:
            got = error.get("input")
            hint = did_you_mean(str(got), list(EVENTS))
            text = f"unknown event {got!r}" + (f" (did you mean {hint!r}?)" if hint else "")
            self.report("ML104", f"{text}; events are {', '.join(EVENTS)}", self.at(loc))
        elif (
            kind.endswith("_type")
            or kind.endswith("_parsing")
            or kind in {"model_attributes_type", "dict_type"}
        ):
            got = error.get("input")
            self.report(
                "ML103", f"{where}: {message.lower()}, got {type(got).__name__} {got!r}", self.at(loc)
            )
        else:
            self.report("ML104", f"{where}: {message.removeprefix('Value error, ')}", self.at(loc))

    # --- semantics ------------------------------------------------------------------------------

    def compile(self, rule: RuleFile) -> CompiledRule | None:
        if rule.id != self.stem:
            self.report(
                "ML105",
                f"rule id {rule.id!r} differs from the file name {self.stem!r}; rename one so they match",
                self.at(("id",)),
            )
        if not rule.enabled:
            self.report("ML505", "rule is disabled (enabled: false)", self.at(("enabled",)), "info")
        timezone = self.check_timezone(rule)
        self.check_send_window(rule)
        entity = rule.trigger.entity
        if entity not in self.catalogue:
            hint = did_you_mean(entity, self.catalogue.names())
            self.report(
                "ML106",
                f"unknown entity {entity!r}"
                + (f" (did you mean {hint!r}?)" if hint else f"; known: {', '.join(self.catalogue.names())}"),
                self.at(("trigger", "entity")),
            )
            return None
        spec = self.catalogue[entity]
        if not spec.webhook:
            for index, event in enumerate(rule.trigger.events):
                if event in WEBHOOK_EVENTS:
                    self.report(
                        "ML107",
                        f"BC API v2.0 sends no webhooks for {entity}, so {event!r} never arrives; "
                        "use events: [poll] (or sweep)",
                        self.at(("trigger", "events", index)),
                    )
        checks = self.compile_conditions(rule)
        recipients = self.compile_recipients(rule)
        template = self.compile_template(rule)
        stages = self.compile_stages(rule, template, recipients)
        if checks is not None and stages:
            checks = (*checks, LadderCheck(stages))
        once_per_getters = self.check_once_per(rule, checks)
        group = self.compile_group(rule, stages)
        if checks is None or recipients is None or template is None or timezone is None or self.has_errors:
            return None
        compiled = CompiledRule(
            id=rule.id,
            description=rule.description,
            source=self.path,
            entity=entity,
            events=frozenset(rule.trigger.events),
            checks=checks,
            recipients=recipients,
            region=rule.recipient.region or self.default_region,
            channel=rule.send.channel,
            template=template,
            once_per=rule.once_per,
            once_per_getters=once_per_getters,
            timezone=timezone,
            # send_window's quiet hours double as the rule-zone quiet hours for readers that do
            # not know send windows (server.sending.sendwindow evaluates them in the recipient's zone).
            quiet_hours=(rule.send_window.quiet_hours if rule.send_window else None) or rule.quiet_hours,
            expansions=self.expansions(rule, checks, template),
            enabled=rule.enabled,
            model=rule,
            stages=stages,
            group=group,
            templates=(template, *(s.template for s in stages), *(group.templates.values() if group else ())),
        )
        self.check_sample_render(compiled)
        return compiled

    def compile_stages(
        self,
        rule: RuleFile,
        template: CompiledTemplate | None,
        recipients: tuple[RecipientTarget, ...] | None,
    ) -> tuple[CompiledStage, ...]:
        """The ladder's stages with their own template, channel and recipient (defaults: the rule's)."""
        if not rule.stages:
            return ()
        entity = rule.trigger.entity
        if entity in self.catalogue and "dueDate" not in self.catalogue[entity].fields:
            self.report(
                "ML351", f"stages count days from dueDate, which {entity} does not have", self.at(("stages",))
            )
            return ()
        compiled: list[CompiledStage] = []
        for index, stage in enumerate(rule.stages):
            base: tuple[str | int, ...] = ("stages", index)
            channel = stage.channel or rule.send.channel
            stage_template: CompiledTemplate | None = template
            if stage.template is not None or stage.channel is not None:
                stage_template = self.compile_channel_template(
                    channel,
                    stage.template or rule.send.template,
                    (*base, "channel") if stage.channel else ("send", "channel"),
                    (*base, "template") if stage.template else ("send", "template"),
                )
            targets = recipients
            region = rule.recipient.region or self.default_region
            if stage.recipient is not None:
                targets = self.compile_recipient(entity, stage.recipient, (*base, "recipient"))
                region = stage.recipient.region or self.default_region
            if stage_template is None or targets is None:
                continue
            compiled.append(
                CompiledStage(
                    days=stage.days_overdue,
                    starts=stage.starts,
                    grace_days=stage.grace_days,
                    name=stage.name,
                    channel=channel,
                    template=stage_template,
                    recipients=targets,
                    region=region,
                )
            )
        return tuple(compiled)

    def compile_group(self, rule: RuleFile, stages: tuple[CompiledStage, ...]) -> CompiledGroup | None:
        if rule.group is None:
            return None
        templates: dict[str, CompiledTemplate] = {}
        sms = self.compile_channel_template("sms", rule.group.template, ("group",), ("group", "template"))
        if sms is not None:
            templates["sms"] = sms
        if rule.group.voice_template is not None:
            voice = self.compile_channel_template(
                "voice", rule.group.voice_template, ("group",), ("group", "voice_template")
            )
            if voice is not None:
                templates["voice"] = voice
        if "sweep" not in rule.trigger.events:
            self.report(
                "ML509",
                "group only combines the messages of one sweep; this rule has no sweep event, so it never groups",
                self.at(("group",), key=True),
                "warning",
            )
        return CompiledGroup(templates=templates, numbers=rule.group.numbers, min_size=rule.group.min_size)

    def check_timezone(self, rule: RuleFile) -> ZoneInfo | None:
        name = rule.timezone or "UTC"
        if name in _zones() or name == "UTC":
            try:
                return ZoneInfo(name)
            except (ZoneInfoNotFoundError, ValueError):
                pass
        hint = did_you_mean(name, sorted(_zones()))
        self.report(
            "ML502",
            f"unknown time zone {name!r}" + (f" (did you mean {hint!r}?)" if hint else "; use an IANA name"),
            self.at(("timezone",)),
        )
        return None

    def check_send_window(self, rule: RuleFile) -> None:
        window = rule.send_window
        if window is None:
            return
        name = window.timezone
        if name != "recipient" and name not in _zones() and name != "UTC":
            hint = did_you_mean(name, sorted(_zones()))
            self.report(
                "ML502",
                f"send_window.timezone {name!r} is neither 'recipient' nor an IANA zone"
                + (f" (did you mean {hint!r}?)" if hint else ""),
                self.at(("send_window", "timezone")),
            )
        if isinstance(window.holidays, str) and window.holidays not in phonenumbers.SUPPORTED_REGIONS:
            self.report(
                "ML405",
                f"send_window.holidays {window.holidays!r} is not a country code such as GB or US",
                self.at(("send_window", "holidays")),
            )
        if rule.quiet_hours is not None:
            self.report(
                "ML510",
                "quiet_hours is ignored when send_window is given; move it to send_window.quiet_hours",
                self.at(("quiet_hours",), key=True),
                "warning",
            )

    def resolve(
        self, entity: str, use: FieldUse, base: tuple[str | int, ...], expr_code: str = "ML350"
    ) -> None:
        """Check that a field path exists and suits the condition; report at its place."""
        if use.offset is not None:
            where = self.in_scalar((*base, *use.loc), use.offset)
        else:
            where = self.at((*base, *use.loc), key=use.key)
        try:
            info = self.catalogue.resolve(entity, use.path)
        except PathError as exc:
            hint = exc.suggestion
            if hint is None and use.key and "." not in use.path:
                hint = did_you_mean(use.path, list(CONDITION_KEYWORDS))
            self.report(expr_code, exc.message + (f" (did you mean {hint!r}?)" if hint else ""), where)
            return
        kind = info.field.type
        if use.expects == "number" and kind not in NUMBER_TYPES:
            self.report("ML351", f"{use.path} is a {kind} field; this condition needs a number", where)
        elif use.expects == "date" and kind not in DATE_TYPES:
            self.report("ML351", f"{use.path} is a {kind} field; counting days needs a date field", where)
        elif use.expects == "comparable" and kind not in NUMBER_TYPES | DATE_TYPES:
            self.report(
                "ML351",
                f"{use.path} is a {kind} field; gt/gte/lt/lte need a number or a date (use eq or in for text)",
                where,
            )

    def compile_conditions(self, rule: RuleFile) -> tuple[Check, ...] | None:
        checks: list[Check] = []
        ok = True
        entity = rule.trigger.entity
        sweep_only = set(rule.trigger.events) <= {"sweep"}
        for index, item in enumerate(rule.when):
            base: tuple[str | int, ...] = ("when", index)
            check = self.compile_condition(item, base)
            if check is None:
                ok = False
                continue
            for use in check.uses():
                self.resolve(entity, use, base, "ML302" if isinstance(check, ExprCheck) else "ML350")
            if isinstance(check, FieldCheck):
                self.check_enum_values(entity, check, item, base)
            if check.needs_previous and sweep_only:
                self.report(
                    "ML352",
                    f"{check.kind} compares with the previous version of the record, which a sweep never "
                    "has; trigger on updated (or poll) instead",
                    self.at(base),
                )
            checks.append(check)
        return tuple(checks) if ok else None

    def compile_condition(self, item: Condition, base: tuple[str | int, ...]) -> Check | None:
        if isinstance(item, FieldCondition):
            return FieldCheck(item.field, item.test)
        if isinstance(item, ExprCondition):
            try:
                compiled = compile_expression(item.expr)
            except ExpressionError as exc:
                self.report(exc.code, exc.message, self.in_scalar((*base, "expr"), exc.offset))
                return None
            return ExprCheck(compiled)
        if isinstance(item, DaysOverdueCondition):
            return DaysCheck("days_overdue", item.days_overdue)
        if isinstance(item, DaysUntilDueCondition):
            return DaysCheck("days_until_due", item.days_until_due)
        if isinstance(item, CrossedAboveCondition):
            return CrossingCheck("crossed_above", item.crossed_above)
        if isinstance(item, CrossedBelowCondition):
            return CrossingCheck("crossed_below", item.crossed_below)
        if isinstance(item, ChangedCondition):
            return ChangedCheck(item.changed)
        if isinstance(item, ChangedToCondition):
            return ChangedValueCheck("changed_to", item.changed_to)
        if isinstance(item, ChangedFromCondition):
            return ChangedValueCheck("changed_from", item.changed_from)
        raise AssertionError(f"unhandled condition {item!r}")  # pragma: no cover

    def check_enum_values(
        self, entity: str, check: FieldCheck, item: Condition, base: tuple[str | int, ...]
    ) -> None:
        try:
            info = self.catalogue.resolve(entity, check.path)
        except PathError:
            return
        if info.field.type != "enum":
            return
        values: list[Any] = [bound for name, bound in check.ops if name in {"eq", "ne"}]
        values += list(check.members or ()) + list(check.excluded or ())
        for value in values:
            if value not in info.field.values:
                hint = did_you_mean(str(value), info.field.values)
                self.report(
                    "ML353",
                    f"{check.path} is never {value!r} in BC; values are "
                    + ", ".join(repr(v) for v in info.field.values)
                    + (f" (did you mean {hint!r}?)" if hint else ""),
                    self.at((*base, check.path)),
                )

    def compile_recipients(self, rule: RuleFile) -> tuple[RecipientTarget, ...] | None:
        return self.compile_recipient(rule.trigger.entity, rule.recipient, ("recipient",))

    def compile_recipient(
        self, entity: str, recipient: Recipient, base: tuple[str | int, ...]
    ) -> tuple[RecipientTarget, ...] | None:
        region = recipient.region or self.default_region
        if region is not None and region not in phonenumbers.SUPPORTED_REGIONS:
            self.report(
                "ML405",
                f"unknown region {region!r}; use an ISO 3166-1 alpha-2 code such as GB or US",
                self.at((*base, "region")),
            )
            region = None  # reported once here; fixed numbers are then checked without it
        region_getter = self.compile_region_from(entity, recipient, base)
        entries = recipient.phone
        many = not isinstance(entries, str)
        specs = (entries,) if isinstance(entries, str) else entries
        targets: list[RecipientTarget] = []
        ok = True
        for index, raw in enumerate(specs):
            loc: tuple[str | int, ...] = (*base, "phone", index) if many else (*base, "phone")
            if re.match(FIELD_PATH, raw):
                try:
                    info = self.catalogue.resolve(entity, raw)
                except PathError as exc:
                    hint = f" (did you mean {exc.suggestion!r}?)" if exc.suggestion else ""
                    self.report("ML350", exc.message + hint, self.at(loc))
                    ok = False
                    continue
                if info.field.type not in PHONE_TYPES:
                    phones = [
                        n for n, f in self.catalogue[info.entity].fields.items() if f.type in PHONE_TYPES
                    ]
                    prefix = f"{info.navigation}." if info.navigation else ""
                    hint = f"; did you mean {prefix + phones[0]!r}?" if phones else ""
                    self.report(
                        "ML450",
                        f"{raw} is a {info.field.type} field of {info.entity}, not a phone number{hint}",
                        self.at(loc),
                    )
                    ok = False
                    continue
                targets.append(
                    RecipientTarget(spec=raw, path=raw, getter=make_getter(raw), region_getter=region_getter)
                )
            else:
                try:
                    number = to_e164(raw, region)
                except PhoneError as exc:
                    self.report(exc.code, f"fixed number {raw!r}: {exc.reason}", self.at(loc))
                    ok = False
                    continue
                targets.append(RecipientTarget(spec=raw, number=number.number))
        return tuple(targets) if ok else None

    def compile_region_from(
        self, entity: str, recipient: Recipient, base: tuple[str | int, ...]
    ) -> Getter | None:
        """The getter for `region_from` (the recipient's country field), checked against the catalogue."""
        path = recipient.region_from
        if path is None:
            return None
        where = self.at((*base, "region_from"))
        try:
            info = self.catalogue.resolve(entity, path)
        except PathError as exc:
            hint = f" (did you mean {exc.suggestion!r}?)" if exc.suggestion else ""
            self.report("ML350", exc.message + hint, where)
            return None
        if info.field.type != "string":
            self.report(
                "ML451",
                f"region_from {path} is a {info.field.type} field of {info.entity}; it must hold a country "
                "code such as GB (e.g. customer.country)",
                where,
            )
            return None
        return make_getter(path)

    def check_once_per(self, rule: RuleFile, checks: tuple[Check, ...] | None) -> dict[str, Any]:
        getters: dict[str, Any] = {}
        entity = rule.trigger.entity
        if rule.stages and "stage" not in rule.once_per:
            self.report(
                "ML503",
                "a rule with stages needs `stage` in once_per, or every stage after the first is "
                "taken for a repeat of it (e.g. once_per: [id, dueDate, stage])",
                self.at(("once_per",)),
            )
        for index, entry in enumerate(rule.once_per):
            where = self.at(("once_per", index))
            if entry in ONCE_PER_TOKENS:
                if (
                    entry == "stage"
                    and checks is not None
                    and not any(isinstance(c, DaysCheck) and c.stages for c in checks)
                    and not any(isinstance(c, LadderCheck) for c in checks)
                ):
                    self.report(
                        "ML503",
                        "once_per `stage` needs a days_overdue/days_until_due condition with stages",
                        where,
                    )
                if (
                    entry == "crossing"
                    and checks is not None
                    and not any(isinstance(c, CrossingCheck) for c in checks)
                ):
                    self.report(
                        "ML503", "once_per `crossing` needs a crossed_above/crossed_below condition", where
                    )
                continue
            if not re.match(FIELD_PATH, entry):
                self.report(
                    "ML503",
                    f"{entry!r} is neither a field path nor a token ({', '.join(ONCE_PER_TOKENS)})",
                    where,
                )
                continue
            try:
                self.catalogue.resolve(entity, entry)
            except PathError as exc:
                hint = exc.suggestion or did_you_mean(entry, list(ONCE_PER_TOKENS))
                self.report("ML503", exc.message + (f" (did you mean {hint!r}?)" if hint else ""), where)
                continue
            getters[entry] = make_getter(entry)
        return getters

    def compile_template(self, rule: RuleFile) -> CompiledTemplate | None:
        return self.compile_channel_template(
            rule.send.channel, rule.send.template, ("send", "channel"), ("send", "template")
        )

    def compile_channel_template(
        self,
        channel: str,
        name: str,
        channel_loc: tuple[str | int, ...],
        template_loc: tuple[str | int, ...],
    ) -> CompiledTemplate | None:
        where = self.at(template_loc)
        spec = CHANNELS.get(channel)
        if spec is None:
            hint = did_you_mean(channel, list(CHANNELS))
            self.report(
                "ML108",
                f"unknown channel {channel!r}"
                + (f" (did you mean {hint!r}?)" if hint else "")
                + f"; channels are {', '.join(CHANNELS)}",
                self.at(channel_loc),
            )
        elif not name.endswith(spec.template_suffix):
            self.report(
                "ML252",
                f"{channel} templates end in {spec.template_suffix}, got {name!r}",
                where,
                "warning",
            )
        if self.env is None:
            self.report("ML202", f"template {name!r} not found: no templates folder", where)
            return None
        try:
            return compile_template(self.env, name)
        except TemplateError as exc:
            self.report(exc.code, self.template_message(exc), where)
            return None

    @staticmethod
    def template_message(exc: TemplateError) -> str:
        place = (
            exc.template
            + (f":{exc.line}" if exc.line is not None else "")
            + (f":{exc.col}" if exc.col else "")
        )
        return f"{place}: {exc.message}"

    def expansions(
        self, rule: RuleFile, checks: tuple[Check, ...], template: CompiledTemplate
    ) -> frozenset[str]:
        """Navigation properties this rule reads: from conditions, recipient, once_per and template."""
        spec = self.catalogue[rule.trigger.entity]
        paths = [use.path for check in checks for use in check.uses()]
        for recipient in (rule.recipient, *(s.recipient for s in rule.stages or () if s.recipient)):
            phones = recipient.phone
            paths += [phones] if isinstance(phones, str) else list(phones)
            paths += [recipient.region_from] if recipient.region_from else []
        paths += list(rule.once_per)
        found = {p.split(".")[0] for p in paths if "." in p and p.split(".")[0] in spec.navigation}
        found |= template_navigation(self.env, template.name, frozenset(spec.navigation))
        return frozenset(found)

    def check_sample_render(self, rule: CompiledRule) -> None:
        """Render every template against the entity's sample record; report failures and SMS segments."""
        record = self.catalogue.sample_record(rule.entity)
        today = LINT_NOW.astimezone(rule.timezone).date()
        ctx = EvaluationContext(record=record, previous=record, now=LINT_NOW, today=today)
        self.check_sample_body(
            rule, rule.template, rule.channel, ("send", "template"), template_context(rule, ctx, stage=None)
        )
        model_stages = rule.model.stages or ()
        for index, (stage, spec) in enumerate(zip(rule.stages, model_stages, strict=False)):
            if spec.template is None and spec.channel is None:
                continue  # the rule's own template, checked above
            loc: tuple[str | int, ...] = (
                ("stages", index, "template") if spec.template else ("send", "template")
            )
            self.check_sample_body(
                rule, stage.template, stage.channel, loc, template_context(rule, ctx, stage=stage.days)
            )
        if rule.group is not None:
            group_ctx = sample_group_context(rule, record, LINT_NOW)
            for channel, template in rule.group.templates.items():
                key = "template" if channel == "sms" else "voice_template"
                self.check_sample_body(rule, template, channel, ("group", key), group_ctx)

    def check_sample_body(
        self,
        rule: CompiledRule,
        template: CompiledTemplate,
        channel: str,
        loc: tuple[str | int, ...],
        context: Mapping[str, Any],
    ) -> None:
        where = self.at(loc)
        try:
            body = template.render(context).strip()
        except TemplateError as exc:
            self.report(
                exc.code,
                f"{self.template_message(exc)} (rendering the sample {rule.entity} record)",
                where,
            )
            return
        if not CHANNELS[channel].counts_segments:
            return
        info = sms_segments(body)
        severity: Severity = "warning" if info.segments > SEGMENT_WARNING else "info"
        self.report(
            "ML253",
            f"SMS renders to {info.segments} segment{'s' if info.segments != 1 else ''} "
            f"({info.encoding}, {info.characters} characters) with the sample {rule.entity} record",
            where,
            severity,
            segments=info.segments,
            encoding=info.encoding,
            characters=info.characters,
        )


def template_navigation(
    env: ImmutableSandboxedEnvironment | None, name: str, navigation: frozenset[str]
) -> set[str]:
    """Navigation names a template reads, as `customer.x` or `record.customer.x`."""
    if env is None or env.loader is None or not navigation:
        return set()
    source = env.loader.get_source(env, name)[0]
    tree = env.parse(source)
    found = set(jinja2.meta.find_undeclared_variables(tree)) & navigation
    for node in tree.find_all(jinja2.nodes.Getattr):
        if (
            isinstance(node.node, jinja2.nodes.Name)
            and node.node.name == "record"
            and node.attr in navigation
        ):
            found.add(node.attr)
    return found


def compile_rule_text(
    text: str,
    path: str,
    *,
    catalogue: Catalogue | None = None,
    env: ImmutableSandboxedEnvironment | None = None,
    default_region: str | None = None,
) -> FileResult:
    """Check and compile one rule given as text; `path` names it in diagnostics (stem = rule id)."""
    stem = Path(path).stem
    check = _FileCheck(
        path, stem, text, catalogue=catalogue or default_catalogue(), env=env, default_region=default_region
    )
    return check.run()


def compile_rule_file(
    path: Path,
    *,
    catalogue: Catalogue | None = None,
    env: ImmutableSandboxedEnvironment | None = None,
    default_region: str | None = None,
) -> FileResult:
    label = str(path)
    try:
        raw = path.read_bytes()
        if len(raw) > 256 * 1024:
            raise ValueError("file larger than 256 KiB")
        text = raw.decode("utf-8")
    except (OSError, ValueError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        return FileResult(label, None, [Diagnostic(label, 1, 1, "ML001", f"cannot read the file: {reason}")])
    return compile_rule_text(text, label, catalogue=catalogue, env=env, default_region=default_region)
