"""`rules diff`, the pure part: what changes in the planned messages if this rule change is merged?

Both rule sets preview the same records at the same clock; messages are matched by (rule, entity,
record, recipient) and reported as added, removed or changed (channel, body, stage, job id). The
caller loads the two rule sets (server/commands/rulesdiff.py reads them from git); nothing here
touches git or files other than the records.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Literal

from engine.catalogue import Catalogue, default_catalogue
from engine.evaluate import evaluate
from engine.messages import PlannedMessage
from engine.preview import Lookup
from engine.records import InputRecord, iter_records
from engine.ruleset import RuleSet

Kind = Literal["added", "removed", "changed"]
Format = Literal["text", "markdown", "github"]
FORMATS: tuple[str, ...] = ("text", "markdown", "github")
COMPARED = ("channel", "body", "stage", "skip_code", "job_id")

Key = tuple[str, str, str, str]


@dataclass(frozen=True)
class MessageChange:
    kind: Kind
    rule_id: str
    entity: str
    record_id: str
    number: str | None
    to: str | None
    before: PlannedMessage | None
    after: PlannedMessage | None
    fields: tuple[str, ...] = ()  # for "changed": what differs
    source: str | None = None  # the rule file (of the newer version when it exists)


def _key(m: PlannedMessage) -> Key:
    return (m.rule_id, m.entity, m.record_id or "", m.to or f"skip:{m.skip_code}")


def _plan(ruleset: RuleSet, lookup: Lookup, item: InputRecord, now: datetime) -> dict[Key, PlannedMessage]:
    if not ruleset.rules_for(item.entity):
        return {}
    record = lookup.expand(item.entity, item.record)
    messages = evaluate(item.entity, record, ruleset, now, lookup.previous_of(item), event=None)
    return {_key(m): m for m in messages}


def diff_rulesets(
    records_path: Path,
    before: RuleSet,
    after: RuleSet,
    now: datetime,
    *,
    previous_path: Path | None = None,
    catalogue: Catalogue | None = None,
) -> Iterator[MessageChange]:
    """Stream the differences, record by record (the input is read twice, never held whole)."""
    catalogue = catalogue or default_catalogue()
    lookups = (Lookup(before, catalogue), Lookup(after, catalogue))
    for item in iter_records(records_path):
        for lookup in lookups:
            lookup.take(item)
    if previous_path is not None:
        for item in iter_records(previous_path):
            for lookup in lookups:
                lookup.take(InputRecord(item.entity, item.record, section="previous"))
    for item in iter_records(records_path):
        if item.section:
            continue
        old = _plan(before, lookups[0], item, now)
        new = _plan(after, lookups[1], item, now)
        for key in sorted(old.keys() | new.keys()):
            a, b = old.get(key), new.get(key)
            rule = after.get(key[0]) or before.get(key[0])
            source = rule.source if rule is not None else None
            sample = b or a
            assert sample is not None
            base = dict(
                rule_id=key[0],
                entity=key[1],
                record_id=key[2],
                number=sample.record_number,
                to=sample.to,
                before=a,
                after=b,
                source=source,
            )
            if a is None:
                yield MessageChange(kind="added", **base)  # type: ignore[arg-type]
            elif b is None:
                yield MessageChange(kind="removed", **base)  # type: ignore[arg-type]
            else:
                fields = tuple(f for f in COMPARED if getattr(a, f) != getattr(b, f))
                if fields:
                    yield MessageChange(kind="changed", fields=fields, **base)  # type: ignore[arg-type]


def _what(change: MessageChange) -> str:
    doc = f"{change.entity} {change.number or change.record_id}"
    who = change.to or "nobody (skipped)"
    return f"{change.rule_id}: {doc} -> {who}"


def _detail(change: MessageChange) -> list[str]:
    a, b = change.before, change.after
    if change.kind == "added" and b is not None:
        return [f"+ [{b.channel}{'' if b.stage is None else f', stage {b.stage}'}] {b.body}"]
    if change.kind == "removed" and a is not None:
        return [f"- [{a.channel}{'' if a.stage is None else f', stage {a.stage}'}] {a.body}"]
    assert a is not None and b is not None
    lines: list[str] = []
    for name in change.fields:
        if name == "body":
            lines += [f"- {a.body}", f"+ {b.body}"]
        elif name != "job_id":
            lines.append(f"{name}: {getattr(a, name)!r} -> {getattr(b, name)!r}")
    if change.fields == ("job_id",):
        lines.append("same text, new job id: it would be sent again to anyone who already had it")
    return lines


def _escape(text: str) -> str:
    return text.replace("%", "%25").replace("\r", "%0D").replace("\n", "%0A")


def format_changes(changes: list[MessageChange], fmt: Format, *, ref_a: str, ref_b: str) -> list[str]:
    counts = {k: sum(1 for c in changes if c.kind == k) for k in ("added", "removed", "changed")}
    total = f"{counts['added']} added, {counts['removed']} removed, {counts['changed']} changed"
    if fmt == "markdown":
        out = [f"### Messages that change from `{ref_a}` to `{ref_b}`", "", total, ""]
        if changes:
            out += ["| | rule | record | to | what |", "|---|---|---|---|---|"]
            mark = {"added": "➕", "removed": "➖", "changed": "✏️"}
            for c in changes:
                what = "<br>".join(line.replace("|", "\\|") for line in _detail(c))
                out.append(
                    f"| {mark[c.kind]} {c.kind} | `{c.rule_id}` | {c.entity} {c.number or c.record_id} "
                    f"| {c.to or 'skipped'} | {what} |"
                )
        return out
    if fmt == "github":
        out = []
        for c in changes:
            where = f" file={c.source}," if c.source else " "
            title = f"rules diff: {c.kind} message"
            body = _escape(_what(c) + "\n" + "\n".join(_detail(c)))
            out.append(f"::notice{where}title={title}::{body}")
        out.append(f"::notice title=rules diff {ref_a}..{ref_b}::{total}")
        return out
    out = []
    for c in changes:
        out.append(f"{c.kind.upper():8} {_what(c)}")
        out += [f"         {line}" for line in _detail(c)]
    out.append(f"{ref_a}..{ref_b}: {total}")
    return out
