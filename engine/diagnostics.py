"""Diagnostics (what lint and the loader report) and the one table of lint codes.

Codes are stable and grouped: ML0xx file/YAML, ML1xx schema, ML2xx templates, ML3xx conditions,
ML4xx recipients, ML5xx ruleset. The template/expression/phone modules contribute their own codes
(engine.errors.CODES); they are merged here so `--explain` and the name lookup see one table.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Literal

from engine.errors import CODES

Severity = Literal["error", "warning", "info"]


@dataclass(frozen=True)
class CodeInfo:
    code: str
    name: str  # kebab-case, shown as `[name]` after the message
    summary: str
    bad: str = ""  # a short rule-file fragment that triggers the code
    good: str = ""  # the same fragment, fixed


@dataclass(frozen=True, order=True)
class Diagnostic:
    path: str
    line: int
    col: int
    code: str
    message: str
    severity: Severity = "error"
    # Extra facts for machine readers (json format), e.g. the suggestion or the segment count.
    data: Mapping[str, object] = field(default_factory=dict, compare=False)

    @property
    def name(self) -> str:
        info = lookup(self.code)
        return info.name if info else "unknown"

    def format_text(self) -> str:
        return f"{self.path}:{self.line}:{self.col}: {self.code} {self.message} [{self.name}]"


_OWN: tuple[CodeInfo, ...] = (
    # ML0xx: the file and its YAML
    CodeInfo(
        "ML001",
        "file-unreadable",
        "The rule file cannot be read (missing, not UTF-8, or larger than 256 KiB).",
        "a rule file saved as UTF-16 by a spreadsheet tool",
        "the same file saved as UTF-8 text",
    ),
    CodeInfo(
        "ML002", "yaml-syntax", "The file is not valid YAML.", "when: [status: Open", "when: [status: Open]"
    ),
    CodeInfo(
        "ML003",
        "duplicate-key",
        "A mapping repeats a key; YAML would silently keep only the last one.",
        "recipient:\n  phone: customer.phoneNumber\n  phone: phoneNumber",
        "recipient:\n  phone: customer.phoneNumber",
    ),
    CodeInfo(
        "ML004",
        "yaml-implicit-type",
        "A plain scalar is read by YAML 1.1 as a boolean or a base-60 number (yes, no, on, off, NO, 21:00).",
        "recipient: {phone: phoneNumber, region: NO}",
        'recipient: {phone: phoneNumber, region: "NO"}',
    ),
    CodeInfo(
        "ML005",
        "forbidden-tag",
        "Explicit YAML tags other than the plain ones (!!str, !!int, ...) are refused.",
        "description: !!python/object/apply:os.system [ls]",
        "description: Remind the customer.",
    ),
    CodeInfo(
        "ML006",
        "document-too-complex",
        "The document is too large, too deeply nested, or expands too many aliases.",
        "a: &a [x, x]\nb: &b [*a, *a]\nc: [*b, *b]  # ... and so on",
        "Write the values out; rule files need no anchors.",
    ),
    CodeInfo(
        "ML007",
        "not-a-mapping",
        "A rule file must hold exactly one YAML mapping (one rule).",
        "- id: a\n- id: b",
        "version: 1\nid: invoice-overdue\n...",
    ),
    CodeInfo(
        "ML008",
        "version-unsupported",
        "`version: 1` is missing or has a value this engine does not understand.",
        "version: 2\nid: invoice-overdue",
        "version: 1\nid: invoice-overdue",
    ),
    CodeInfo(
        "ML009",
        "version-not-first",
        "`version` should be the first key so readers and tools see it first.",
        "id: invoice-overdue\nversion: 1",
        "version: 1\nid: invoice-overdue",
    ),
    CodeInfo(
        "ML010",
        "schema-comment-missing",
        "The file does not point editors at the JSON schema.",
        "version: 1",
        "# yaml-language-server: $schema=../schema/rule.schema.json\nversion: 1",
    ),
    # ML1xx: the rule-file schema
    CodeInfo(
        "ML100",
        "test-file-invalid",
        "A rule test file (rules/tests/*.yaml) does not have the expected shape.",
        "cases:\n  - name: overdue\n    expect: [{rule: invoice-overdue}]",
        "version: 1\nnow: '2026-11-25T09:00:00Z'\ncases:\n  - name: overdue\n    entity: salesInvoices\n"
        "    record: {dueDate: '2026-11-17'}\n    expect: [{rule: invoice-overdue}]",
    ),
    CodeInfo(
        "ML101",
        "unknown-key",
        "A key the rule schema does not know (often a typo).",
        "wehn:\n  - status: Open",
        "when:\n  - status: Open",
    ),
    CodeInfo(
        "ML102",
        "missing-key",
        "A required key is missing.",
        "send: {channel: sms}",
        "send: {channel: sms, template: invoice-overdue.sms.j2}",
    ),
    CodeInfo("ML103", "wrong-type", "A value has the wrong type.", "once_per: id", "once_per: [id]"),
    CodeInfo(
        "ML104",
        "invalid-value",
        "A value is not allowed here (pattern, range or choice).",
        "quiet_hours: 9pm-8am",
        'quiet_hours: "21:00-08:00"',
    ),
    CodeInfo(
        "ML105",
        "id-not-file-stem",
        "The rule id must equal the file name without .yaml.",
        "# rules/invoice-overdue.yaml\nid: overdue-invoice",
        "# rules/invoice-overdue.yaml\nid: invoice-overdue",
    ),
    CodeInfo(
        "ML106",
        "unknown-entity",
        "The trigger entity is not in the BC entity catalogue.",
        "trigger: {entity: salesInvoice, events: [sweep]}",
        "trigger: {entity: salesInvoices, events: [sweep]}",
    ),
    CodeInfo(
        "ML107",
        "event-not-available",
        "BC does not send webhooks for this entity; created/updated/deleted would never arrive. Poll it.",
        "trigger: {entity: purchaseOrders, events: [updated]}",
        "trigger: {entity: purchaseOrders, events: [poll]}",
    ),
    CodeInfo(
        "ML108",
        "unknown-channel",
        "The channel is not in the channel table.",
        "send: {channel: whatsapp, ...}",
        "send: {channel: sms, ...}",
    ),
    CodeInfo(
        "ML109",
        "condition-shape",
        "Each `when:` item holds exactly one condition.",
        "when:\n  - status: Open\n    remainingAmount: {gt: 0}",
        "when:\n  - status: Open\n  - remainingAmount: {gt: 0}",
    ),
    # ML2xx: templates
    CodeInfo(
        "ML252",
        "template-suffix-mismatch",
        "SMS templates end in .sms.j2, voice templates in .say.j2.",
        "send: {channel: voice, template: invoice-overdue.sms.j2}",
        "send: {channel: voice, template: invoice-overdue.say.j2}",
    ),
    CodeInfo(
        "ML253",
        "sms-segments",
        "The SMS renders to several segments (each one is billed); info at 2, a warning above 2.",
        "a long template with emoji (UCS-2 halves the segment size)",
        "a short GSM-7 text under 160 characters",
    ),
    # ML3xx: conditions
    CodeInfo(
        "ML350",
        "unknown-field",
        "A field path does not exist on the trigger entity (or its related record).",
        "- dueDat: {lt: '2026-01-01'}",
        "- dueDate: {lt: '2026-01-01'}",
    ),
    CodeInfo(
        "ML351",
        "field-type-mismatch",
        "The condition does not fit the field's type (e.g. days_overdue on a text field, gt on text).",
        "- days_overdue: {gte: 7, field: number}",
        "- days_overdue: {gte: 7, field: dueDate}",
    ),
    CodeInfo(
        "ML352",
        "needs-previous",
        "The condition compares with the previous version, which a sweep never has: it can never hold.",
        "trigger: {entity: customers, events: [sweep]}\nwhen:\n  - changed: [balanceDue]",
        "trigger: {entity: customers, events: [updated]}\nwhen:\n  - changed: [balanceDue]",
    ),
    CodeInfo(
        "ML353",
        "enum-value-unknown",
        "The value is not one BC uses for this field (values are case-sensitive).",
        "- status: open",
        "- status: Open",
    ),
    # ML4xx: recipients
    CodeInfo(
        "ML450",
        "recipient-not-phone",
        "The recipient path does not hold a phone number (not a phone field of the record or its relation).",
        "recipient: {phone: customer.email}",
        "recipient: {phone: customer.phoneNumber}",
    ),
    CodeInfo(
        "ML451",
        "region-field-not-text",
        "region_from must name a text field holding an ISO 3166-1 alpha-2 country code.",
        "recipient: {phone: customer.phoneNumber, region_from: customer.creditLimit}",
        "recipient: {phone: customer.phoneNumber, region_from: customer.country, region: US}",
    ),
    # ML5xx: the rule set and rule-level settings
    CodeInfo(
        "ML501",
        "duplicate-rule-id",
        "Two rule files declare the same id.",
        "# rules/a.yaml and rules/b/a.yaml both say id: a",
        "Give each rule its own id (and file name).",
    ),
    CodeInfo(
        "ML502",
        "invalid-timezone",
        "The time zone is not an IANA zone name.",
        "timezone: Europe/Londn",
        "timezone: Europe/London",
    ),
    CodeInfo(
        "ML503",
        "once-per-invalid",
        "A once_per entry is neither a field of the entity nor a known token (crossing, stage, day, week).",
        "once_per: [id, dueDat]",
        "once_per: [id, dueDate]",
    ),
    CodeInfo(
        "ML504",
        "no-rule-files",
        "No rule files were found under the given paths.",
        "ml-connector rules lint rulez",
        "ml-connector rules lint rules",
    ),
    CodeInfo(
        "ML505",
        "rule-disabled",
        "The rule has `enabled: false` and will not fire.",
        "enabled: false",
        "enabled: true",
    ),
    CodeInfo(
        "ML506",
        "overlapping-rules",
        "Two rules can text the same recipient about the same record on the same day.",
        "# invoice-due-soon: days_until_due {stages: [3]} -> customer.phoneNumber\n"
        "# invoice-overdue: stages [{days_overdue: -3}, ...] -> customer.phoneNumber",
        "Merge them into one ladder, or make their days or recipients differ.",
    ),
    CodeInfo(
        "ML507",
        "stage-ladder-overlap",
        "Two stages of a ladder start on the same day, or out of order once grace days are added.",
        "stages:\n  - {days_overdue: 7, grace_days: 10}\n  - {days_overdue: 14}",
        "stages:\n  - {days_overdue: 7, grace_days: 3}\n  - {days_overdue: 14}",
    ),
    CodeInfo(
        "ML508",
        "stage-ladder-gap",
        "A stage starts on a day the rule's other conditions exclude, so the ladder has a hole there.",
        "when:\n  - days_overdue: {lte: 20}\nstages:\n  - {days_overdue: 7}\n  - {days_overdue: 30}",
        "when: []\nstages:\n  - {days_overdue: 7}\n  - {days_overdue: 30}",
    ),
    CodeInfo(
        "ML509",
        "group-without-sweep",
        "`group:` combines the messages of one sweep; a rule without the sweep event never groups.",
        "trigger: {entity: salesInvoices, events: [updated]}\ngroup: {template: x.sms.j2}",
        "trigger: {entity: salesInvoices, events: [sweep]}\ngroup: {template: x.sms.j2}",
    ),
    CodeInfo(
        "ML510",
        "quiet-hours-ignored",
        "`quiet_hours` is ignored when `send_window` is given.",
        'quiet_hours: "20:00-08:00"\nsend_window: {days: [mon, tue, wed, thu, fri]}',
        'send_window: {quiet_hours: "20:00-08:00", days: [mon, tue, wed, thu, fri]}',
    ),
)

_REGISTRY: dict[str, CodeInfo] = {info.code: info for info in _OWN}


def _merge_leaf_codes() -> None:
    """Add the codes raised by engine.expressions/render/phones (engine.errors.CODES)."""
    for code, (name, summary) in CODES.items():
        existing = _REGISTRY.get(code)
        if existing is not None and existing.name != name:
            raise RuntimeError(f"lint code {code} defined twice: {existing.name} and {name}")
        if existing is None:
            _REGISTRY[code] = CodeInfo(code, name, summary, *LEAF_EXAMPLES.get(code, ("", "")))


# Bad/good examples for codes defined by the leaf modules, keyed by code.
LEAF_EXAMPLES: dict[str, tuple[str, str]] = {
    "ML201": ("{{ number | moneyy }}", "{{ remainingAmount | money(currencyCode) }}"),
    "ML202": (
        "send: {channel: sms, template: invoice-overdu.sms.j2}",
        "send: {channel: sms, template: invoice-overdue.sms.j2}",
    ),
    "ML203": ("{{ customer.displayNam }}", "{{ customer.displayName }}"),
    "ML204": ("{{ record.__class__ }}", "{{ number }}"),
    "ML301": ('- expr: "remainingAmount >"', '- expr: "remainingAmount > 0"'),
    "ML302": ('- expr: "remainingAmount > treshold"', '- expr: "remainingAmount > 1000"'),
    "ML303": ('- expr: "daysoverdue(dueDate) > 7"', '- expr: "days_overdue(dueDate) > 7"'),
    "ML304": ('- expr: "[x for x in customer]"', "- expr: \"customer.blocked != 'All'\""),
    "ML305": ('- expr: "9 ** 9 ** 9 ** 9 > 0"', '- expr: "remainingAmount > 9000"'),
    "ML306": ('- expr: "number > 5"  # number is text', '- expr: "remainingAmount > 5"'),
    "ML307": ('- expr: "days_overdue() > 7"', '- expr: "days_overdue(dueDate) > 7"'),
    "ML401": ('recipient: {phone: "call me"}', 'recipient: {phone: "+44 20 7946 0018"}'),
    "ML402": ('recipient: {phone: "+44 20 7946"}', 'recipient: {phone: "+44 20 7946 0018"}'),
    "ML403": ('recipient: {phone: "+1 503 555 0142 ext. 12"}', 'recipient: {phone: "+1 503 555 0142"}'),
    "ML404": (
        'recipient: {phone: "+44 909 879 0000"}  # premium rate',
        'recipient: {phone: "+44 7700 900123"}',
    ),
    "ML405": ("recipient: {phone: phoneNumber, region: UK}", "recipient: {phone: phoneNumber, region: GB}"),
}


def registry() -> Mapping[str, CodeInfo]:
    if len(_REGISTRY) == len(_OWN):
        _merge_leaf_codes()
    return _REGISTRY


def lookup(code: str) -> CodeInfo | None:
    return registry().get(code)


def explain(code: str) -> str | None:
    """Text for `rules lint --explain CODE`: summary, a bad and a good example."""
    info = lookup(code.upper())
    if info is None:
        return None
    lines = [f"{info.code} [{info.name}]", "", info.summary]
    if info.bad:
        lines += ["", "Bad:", *("    " + line for line in info.bad.splitlines())]
    if info.good:
        lines += ["", "Good:", *("    " + line for line in info.good.splitlines())]
    return "\n".join(lines)
