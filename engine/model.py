"""Pydantic models of a rule file, exactly as finance staff write it in YAML.

Frozen, `extra="forbid"` everywhere: a misspelt `wehn:` is an error, never "text every customer".
Semantic checks that need the catalogue, templates or phone library live in the loader; these
models only describe shape. The JSON schema in schema/ is generated from `RuleFile`.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Annotated, Any, Literal, get_args

from pydantic import (
    BaseModel,
    ConfigDict,
    Discriminator,
    Field,
    RootModel,
    Tag,
    field_validator,
    model_validator,
)

from engine.catalogue import default_catalogue

Event = Literal["created", "updated", "deleted", "sweep", "poll"]
EVENTS: tuple[str, ...] = get_args(Event)
# Events BC sends as webhooks; the others come from our own poller or scheduled sweep.
WEBHOOK_EVENTS: frozenset[str] = frozenset({"created", "updated", "deleted"})

KEBAB = r"^[a-z0-9]+(-[a-z0-9]+)*$"
FIELD_PATH = r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)?$"
QUIET_HOURS = r"^([01][0-9]|2[0-3]):[0-5][0-9]-([01][0-9]|2[0-3]):[0-5][0-9]$"


@dataclass(frozen=True)
class ChannelSpec:
    name: str
    template_suffix: str
    counts_segments: bool
    description: str


# The channel registry: the schema's allowed channels come from this table.
CHANNELS: Mapping[str, ChannelSpec] = {
    "sms": ChannelSpec("sms", ".sms.j2", True, "text message via Twilio Messages"),
    "voice": ChannelSpec("voice", ".say.j2", False, "spoken call via Twilio Calls (<Say>)"),
}

# Special once_per tokens (besides field paths) and what they stand for.
ONCE_PER_TOKENS: Mapping[str, str] = {
    "crossing": "the record version at which a crossed_above/crossed_below condition crossed",
    "stage": "the stage reached by a days_overdue/days_until_due condition with `stages`",
    "day": "the local date (rule time zone) of the evaluation",
    "week": "the ISO week (rule time zone) of the evaluation",
}

Scalar = str | int | float | bool | None


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", populate_by_name=True)


def _scalar_or_mapping(value: Any) -> str:
    return "compare" if isinstance(value, Mapping) else "value"


class Comparison(_Frozen):
    """`remainingAmount: {gt: 0}`, `status: {in: [Open, Paid]}`; all given bounds must hold."""

    eq: Scalar = None
    ne: Scalar = None
    gt: int | float | str | None = None
    gte: int | float | str | None = None
    lt: int | float | str | None = None
    lte: int | float | str | None = None
    in_: tuple[Scalar, ...] | None = Field(default=None, alias="in")
    not_in: tuple[Scalar, ...] | None = None

    @model_validator(mode="after")
    def _at_least_one(self) -> Comparison:
        if not self.model_fields_set:
            raise ValueError("give at least one of eq, ne, gt, gte, lt, lte, in, not_in")
        return self


FieldTest = Annotated[
    Annotated[Scalar, Tag("value")] | Annotated[Comparison, Tag("compare")],
    Discriminator(_scalar_or_mapping),
]


# Condition keywords; a field condition may not use them as its field name (keeps the schema's oneOf exact).
KEYWORDS: tuple[str, ...] = (
    "expr",
    "days_overdue",
    "days_until_due",
    "crossed_above",
    "crossed_below",
    "changed",
    "changed_to",
    "changed_from",
)


class FieldCondition(RootModel[dict[str, FieldTest]]):
    """`status: Open` (equality) or `field: {operator: value}`: one field per list item."""

    model_config = ConfigDict(
        frozen=True,
        json_schema_extra={
            "minProperties": 1,
            "maxProperties": 1,
            "propertyNames": {"not": {"enum": list(KEYWORDS)}},
        },
    )

    @model_validator(mode="after")
    def _one_field(self) -> FieldCondition:
        if len(self.root) != 1:
            raise ValueError(
                f"one condition per list item, found {len(self.root)} keys ({', '.join(self.root)}); "
                "start each condition with its own '-'"
            )
        return self

    @property
    def field(self) -> str:
        return next(iter(self.root))

    @property
    def test(self) -> Scalar | Comparison:
        return next(iter(self.root.values()))


class DaysWindow(_Frozen):
    """Bounds on a whole number of days, e.g. `{gte: 7}` or `{lte: 3, gte: 0}`, or `stages: [7, 14, 30]`."""

    eq: int | None = None
    gt: int | None = None
    gte: int | None = None
    lt: int | None = None
    lte: int | None = None
    stages: tuple[int, ...] | None = Field(
        default=None,
        min_length=1,
        description="fire once per stage reached; for days_overdue the highest stage <= days, "
        "for days_until_due the lowest stage >= days; use `stage` in once_per",
    )
    field: str = Field(default="dueDate", pattern=FIELD_PATH, description="the date field to count from")

    @model_validator(mode="after")
    def _bounded(self) -> DaysWindow:
        if not ({"eq", "gt", "gte", "lt", "lte", "stages"} & self.model_fields_set):
            raise ValueError("give at least one of eq, gt, gte, lt, lte or stages")
        if self.stages is not None and list(self.stages) != sorted(set(self.stages)):
            raise ValueError("stages must be distinct and in increasing order")
        return self


class Crossing(_Frozen):
    """`value` went from at-or-below `limit` to above it (crossed_above) since the previous version."""

    value: str = Field(pattern=FIELD_PATH, description="numeric field path, e.g. balanceDue")
    limit: str | float | int = Field(description="a numeric field path (e.g. creditLimit) or a number")

    @field_validator("limit")
    @classmethod
    def _limit_path(cls, value: str | float | int) -> str | float | int:
        import re

        if isinstance(value, str) and not re.match(FIELD_PATH, value):
            raise ValueError(f"limit must be a field path or a number, got {value!r}")
        return value


class ExprCondition(_Frozen):
    expr: str = Field(min_length=1, description="a safe expression, compiled once at load time")


class DaysOverdueCondition(_Frozen):
    days_overdue: DaysWindow


class DaysUntilDueCondition(_Frozen):
    days_until_due: DaysWindow


class CrossedAboveCondition(_Frozen):
    crossed_above: Crossing


class CrossedBelowCondition(_Frozen):
    crossed_below: Crossing


class ChangedCondition(_Frozen):
    changed: tuple[Annotated[str, Field(pattern=FIELD_PATH)], ...] = Field(min_length=1)


class ChangedToCondition(_Frozen):
    changed_to: dict[str, Scalar] = Field(min_length=1, description="previous != value and now == value")


class ChangedFromCondition(_Frozen):
    changed_from: dict[str, Scalar] = Field(min_length=1, description="previous == value and now != value")


# Condition keyword -> model; anything else is a field condition. The discriminator picks the
# model from the single key so that errors point into that model only (no union noise).
CONDITION_KEYWORDS: Mapping[str, type[BaseModel]] = {
    "expr": ExprCondition,
    "days_overdue": DaysOverdueCondition,
    "days_until_due": DaysUntilDueCondition,
    "crossed_above": CrossedAboveCondition,
    "crossed_below": CrossedBelowCondition,
    "changed": ChangedCondition,
    "changed_to": ChangedToCondition,
    "changed_from": ChangedFromCondition,
}
assert tuple(CONDITION_KEYWORDS) == KEYWORDS
# Conditions that compare with the previous version of the record.
NEEDS_PREVIOUS: frozenset[str] = frozenset(
    {"crossed_above", "crossed_below", "changed", "changed_to", "changed_from"}
)


def _condition_kind(value: Any) -> str:
    if isinstance(value, Mapping) and len(value) == 1:
        key = next(iter(value))
        if key in CONDITION_KEYWORDS:
            return str(key)
    if isinstance(value, BaseModel | RootModel):
        for key, model in CONDITION_KEYWORDS.items():
            if isinstance(value, model):
                return key
    return "field"


Condition = Annotated[
    Annotated[ExprCondition, Tag("expr")]
    | Annotated[DaysOverdueCondition, Tag("days_overdue")]
    | Annotated[DaysUntilDueCondition, Tag("days_until_due")]
    | Annotated[CrossedAboveCondition, Tag("crossed_above")]
    | Annotated[CrossedBelowCondition, Tag("crossed_below")]
    | Annotated[ChangedCondition, Tag("changed")]
    | Annotated[ChangedToCondition, Tag("changed_to")]
    | Annotated[ChangedFromCondition, Tag("changed_from")]
    | Annotated[FieldCondition, Tag("field")],
    Discriminator(_condition_kind),
]


class Trigger(_Frozen):
    entity: str = Field(
        description="BC API v2.0 entity set from the catalogue",
        json_schema_extra={"enum": list(default_catalogue().names())},
    )
    events: tuple[Event, ...] = Field(min_length=1)


class Recipient(_Frozen):
    phone: str | tuple[str, ...] = Field(
        description="a field path holding a phone (e.g. customer.phoneNumber), a fixed number "
        "(+44 20 7946 0018), or a list of either"
    )
    region: str | None = Field(
        default=None,
        pattern=r"^[A-Z]{2}$",
        description='default region (ISO 3166-1 alpha-2) for numbers without +country; quote "NO"',
    )
    region_from: str | None = Field(
        default=None,
        pattern=FIELD_PATH,
        description="a field path holding the recipient's country (e.g. customer.country): a national "
        "number is read as that country's; `region` is the fallback when the field is empty or unknown",
    )


class Send(_Frozen):
    channel: str = Field(json_schema_extra={"enum": list(CHANNELS)})
    template: str = Field(min_length=1, description="file name in templates/, e.g. invoice-overdue.sms.j2")


Weekday = Literal["mon", "tue", "wed", "thu", "fri", "sat", "sun"]
WEEKDAYS: tuple[str, ...] = get_args(Weekday)


class Stage(_Frozen):
    """One step of an escalation ladder: from `days_overdue` (plus grace) on, once per invoice and due date."""

    days_overdue: int = Field(
        ge=-365, le=3650, description="the day the stage starts; negative = days before the due date"
    )
    name: str | None = Field(default=None, pattern=KEBAB, description="a label for the audit, e.g. final")
    grace_days: int = Field(
        default=0,
        ge=0,
        le=90,
        description="wait this many more days (BC reminder terms' grace period), and stay silent while a "
        "customer payment for the invoice was seen within this many days",
    )
    channel: str | None = Field(
        default=None, json_schema_extra={"enum": list(CHANNELS)}, description="default: send.channel"
    )
    template: str | None = Field(default=None, min_length=1, description="default: send.template")
    recipient: Recipient | None = Field(default=None, description="default: the rule's recipient")

    @property
    def starts(self) -> int:
        """The first day (days overdue) the stage may fire: its day plus the grace period."""
        return self.days_overdue + self.grace_days


class Group(_Frozen):
    """One message per recipient, rule and stage on a sweep, listing the invoices, instead of one each."""

    template: str = Field(min_length=1, description="SMS template for the grouped message")
    voice_template: str | None = Field(
        default=None, min_length=1, description="template for voice stages (without it calls are not grouped)"
    )
    numbers: int = Field(default=3, ge=1, le=20, description="how many document numbers to list")
    min_size: int = Field(default=2, ge=2, le=100, description="group from this many messages on")


class SendWindow(_Frozen):
    """When messages may reach the recipient, in the recipient's local time."""

    timezone: str = Field(
        default="recipient",
        description="'recipient' (from the phone number's region, else the customer's country, else the "
        "rule's timezone) or an IANA zone that overrides it",
    )
    quiet_hours: str | None = Field(default=None, pattern=QUIET_HOURS, description='e.g. "20:00-08:00"')
    days: tuple[Weekday, ...] | None = Field(default=None, min_length=1, description="e.g. [mon, tue, wed]")
    hours: str | None = Field(
        default=None, pattern=QUIET_HOURS, description='business hours HH:MM-HH:MM, e.g. "09:00-17:30"'
    )
    holidays: bool | str = Field(
        default=False,
        description="skip public holidays (the `holidays` package): true = the recipient's country, "
        'or an ISO country code such as "GB"',
    )

    @field_validator("holidays")
    @classmethod
    def _country(cls, value: bool | str) -> bool | str:
        import re

        if isinstance(value, str) and not re.match(r"^[A-Z]{2}$", value):
            raise ValueError(f"holidays is true, false or a country code such as GB, got {value!r}")
        return value


class RuleFile(_Frozen):
    """One rule file (rules/<id>.yaml)."""

    model_config = ConfigDict(
        frozen=True,
        extra="forbid",
        title="ml-connector rule",
        json_schema_extra={"$schema": "https://json-schema.org/draft/2020-12/schema"},
    )

    version: Literal[1]
    id: str = Field(pattern=KEBAB, description="kebab-case, equal to the file name without .yaml")
    description: str = Field(min_length=1)
    enabled: bool = True
    trigger: Trigger
    when: tuple[Condition, ...] = Field(default=(), description="all must hold")
    recipient: Recipient
    send: Send
    once_per: tuple[str, ...] = Field(
        min_length=1,
        description="the dedupe key: field paths and tokens (" + ", ".join(ONCE_PER_TOKENS) + ")",
    )
    timezone: str | None = Field(
        default=None, description="IANA time zone for dates and quiet hours (default UTC)"
    )
    quiet_hours: str | None = Field(
        default=None,
        pattern=QUIET_HOURS,
        description='local HH:MM-HH:MM when nothing is sent, e.g. "21:00-08:00"',
    )
    stages: tuple[Stage, ...] | None = Field(
        default=None,
        min_length=1,
        description="an escalation ladder over days overdue; each stage fires once (use `stage` in once_per)",
    )
    group: Group | None = Field(default=None, description="one message per recipient and stage on a sweep")
    send_window: SendWindow | None = Field(
        default=None, description="recipient-local send window (overrides timezone/quiet_hours)"
    )

    @field_validator("stages")
    @classmethod
    def _ladder_order(cls, value: tuple[Stage, ...] | None) -> tuple[Stage, ...] | None:
        if value is not None:
            days = [stage.days_overdue for stage in value]
            if days != sorted(set(days)):
                raise ValueError("days_overdue of the stages must be distinct and in increasing order")
        return value


def rule_json_schema() -> dict[str, Any]:
    """The JSON schema of a rule file, generated from `RuleFile` (schema/rule.schema.json)."""
    schema = RuleFile.model_json_schema(by_alias=True)
    schema["$id"] = "https://ml-connector.invalid/schema/rule.schema.json"
    return schema


def rule_json_schema_text() -> str:
    return json.dumps(rule_json_schema(), indent=2, sort_keys=True) + "\n"
