"""`ml-connector preview`: a dry run listing, per record, what would fire and what did not (and why).

Two streaming passes over the input: the first keeps only what lookups need (records of related
entity sets such as customers, and previous versions), the second evaluates each record in turn.
`--format json` prints one JSON object per line per (record, rule) - a stable interface:
rule, entity, record_id, number, fired, reason, channel, to, body, segments, job_id (plus skip).
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any

from engine.catalogue import Catalogue, default_catalogue
from engine.evaluate import evaluate_detailed
from engine.lint import format_diagnostics
from engine.loader import load_rules
from engine.messages import RuleOutcome
from engine.pauses import Pause, pause_for
from engine.records import InputRecord, RecordsError, iter_records
from engine.ruleset import RuleSet

PROGRESS_MIN_BYTES = 2 * 1024 * 1024  # show a progress bar for inputs larger than this
JSON_KEYS = (
    "rule",
    "entity",
    "record_id",
    "number",
    "fired",
    "reason",
    "channel",
    "to",
    "body",
    "segments",
    "job_id",
)


@dataclass
class PreviewStats:
    records: int = 0
    evaluated: int = 0
    fired: int = 0
    messages: int = 0
    skipped: int = 0
    paused: int = 0
    errors: int = 0
    without_rules: dict[str, int] = field(default_factory=dict)


class Lookup:
    """Related records by (entity, id) and previous versions, gathered in the first pass."""

    def __init__(self, ruleset: RuleSet, catalogue: Catalogue) -> None:
        self.catalogue = catalogue
        self.navigation: dict[str, dict[str, tuple[str, str]]] = {}
        wanted: set[str] = set()
        for rule in ruleset:
            spec = catalogue[rule.entity]
            for nav in rule.expansions:
                target = spec.navigation[nav]
                self.navigation.setdefault(rule.entity, {})[nav] = (target.entity, target.key)
                wanted.add(target.entity)
        self.wanted = frozenset(wanted)
        self.related: dict[tuple[str, str], Mapping[str, Any]] = {}
        self.previous: dict[tuple[str, str], Mapping[str, Any]] = {}

    def take(self, item: InputRecord) -> None:
        record_id = item.record.get("id")
        if record_id is None:
            return
        key = (item.entity, str(record_id))
        if item.section:
            self.previous[key] = item.record
        elif item.entity in self.wanted:
            self.related[key] = item.record

    def expand(self, entity: str, record: Mapping[str, Any]) -> Mapping[str, Any]:
        """The record with each needed navigation property filled from the input, by id."""
        navs = self.navigation.get(entity)
        if not navs:
            return record
        expanded = dict(record)
        for nav, (target, key) in navs.items():
            if isinstance(expanded.get(nav), Mapping):
                continue  # already expanded in the input, as BC's $expand returns it
            related_id = record.get(key)
            found = self.related.get((target, str(related_id))) if related_id is not None else None
            if found is not None:
                expanded[nav] = found
        return expanded

    def previous_of(self, item: InputRecord) -> Mapping[str, Any] | None:
        if item.previous is not None:
            return item.previous
        record_id = item.record.get("id")
        return self.previous.get((item.entity, str(record_id))) if record_id is not None else None


def parse_now(text: str | None) -> datetime:
    if text is None:
        return datetime.now(UTC)
    try:
        value = datetime.fromisoformat(text.replace("Z", "+00:00") if text.endswith("Z") else text)
    except ValueError:
        raise ValueError(f"--now {text!r} is not an ISO 8601 date-time (e.g. 2026-11-25T09:00:00Z)") from None
    if value.tzinfo is None:
        raise ValueError(f"--now {text!r} needs a time zone (e.g. Z or +01:00)")
    return value


def outcome_rows(
    item_entity: str, record: Mapping[str, Any], outcome: RuleOutcome, number_field: str
) -> Iterator[dict[str, Any]]:
    """The JSON rows of one (record, rule): one per message when fired, else one."""
    record_id = record.get("id")
    base = {
        "rule": outcome.rule_id,
        "entity": item_entity,
        "record_id": None if record_id is None else str(record_id),
        "number": record.get(number_field),
        "fired": outcome.fired,
        "reason": outcome.reason,
    }
    if not outcome.messages:
        yield {
            **base,
            "channel": None,
            "to": None,
            "body": None,
            "segments": None,
            "job_id": None,
            "skip": None,
        }
        return
    for message in outcome.messages:
        yield {
            **base,
            "channel": message.channel,
            "to": message.to,
            "body": message.body,
            "segments": message.segments,
            "job_id": message.job_id,
            "skip": None if message.skip_code is None else f"{message.skip_code} {message.skip_reason}",
        }


def _paused(
    ruleset: RuleSet, record: Mapping[str, Any], outcome: RuleOutcome, pauses: Sequence[Pause], now: datetime
) -> Pause | None:
    """The pause that would hold back this reminder (pauses concern reminder rules only)."""
    rule = ruleset.get(outcome.rule_id)
    if not pauses or not outcome.fired or rule is None or not rule.is_reminder:
        return None
    return pause_for(record, pauses, now)


def load_pauses(path: Path) -> list[Pause]:
    """Pauses from a JSON list of {scope, subject, until, reason} (`ml-connector pause list --json`)."""
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise RecordsError(f"{path}: cannot read pauses: {exc}") from None
    if not isinstance(raw, list):
        raise RecordsError(f"{path}: expected a JSON list of pauses")
    pauses: list[Pause] = []
    for index, item in enumerate(raw):
        try:
            until = parse_now(str(item["until"]))
            pauses.append(
                Pause(
                    scope=str(item["scope"]),
                    subject=str(item["subject"]),
                    until=until,
                    reason=str(item.get("reason") or ""),
                    id=item.get("id"),
                    company_id=item.get("company_id"),
                )
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise RecordsError(f"{path}: pause [{index}]: {exc}") from None
    return pauses


def _table_lines(
    entity: str,
    record: Mapping[str, Any],
    outcomes: list[RuleOutcome],
    number_field: str,
    paused: Mapping[str, Pause] | None = None,
) -> Iterator[str]:
    number = record.get(number_field)
    yield f"{entity} {number if number is not None else '?'} ({record.get('id')})"
    for outcome in outcomes:
        if not outcome.fired:
            mark = "error" if outcome.error else "-"
            yield f"  {mark:<5} {outcome.rule_id}: {outcome.reason}"
            continue
        pause = (paused or {}).get(outcome.rule_id)
        for message in outcome.messages:
            if pause is not None:
                yield f"  PAUSE {outcome.rule_id} -> {message.to}: {pause.describe()}"
            elif message.skip_code is not None:
                yield f"  SKIP  {outcome.rule_id}: {message.skip_code} {message.skip_reason}"
            else:
                plural = "s" if message.segments != 1 else ""
                yield f"  SEND  {outcome.rule_id} -> {message.to} via {message.channel} ({message.segments} segment{plural}) {message.job_id}"
            yield f"        {message.body}"
            yield f"        why: {outcome.reason}"


def run_preview(
    records_path: Path,
    ruleset: RuleSet,
    now: datetime,
    out: IO[str],
    *,
    fmt: str = "table",
    previous_path: Path | None = None,
    catalogue: Catalogue | None = None,
    progress: Callable[[int], None] | None = None,
    pauses: Sequence[Pause] = (),
) -> PreviewStats:
    """Evaluate every record in `records_path` against `ruleset` and write the report to `out`."""
    catalogue = catalogue or default_catalogue()
    lookup = Lookup(ruleset, catalogue)
    for item in iter_records(records_path):
        lookup.take(item)
    if previous_path is not None:
        for item in iter_records(previous_path):
            lookup.take(InputRecord(item.entity, item.record, section="previous"))
    stats = PreviewStats()
    for item in iter_records(records_path, progress):
        if item.section:
            continue
        stats.records += 1
        spec = catalogue.get(item.entity)
        if spec is None or not ruleset.rules_for(item.entity):
            stats.without_rules[item.entity] = stats.without_rules.get(item.entity, 0) + 1
            continue
        record = lookup.expand(item.entity, item.record)
        outcomes = evaluate_detailed(item.entity, record, ruleset, now, lookup.previous_of(item), event=None)
        stats.evaluated += len(outcomes)
        for outcome in outcomes:
            stats.fired += outcome.fired
            stats.errors += outcome.error
            for message in outcome.messages:
                stats.messages += 1
                stats.skipped += message.skip_code is not None
        paused = {
            o.rule_id: p for o in outcomes if (p := _paused(ruleset, record, o, pauses, now)) is not None
        }
        stats.paused += sum(len(o.messages) for o in outcomes if o.rule_id in paused)
        if fmt == "json":
            for outcome in outcomes:
                for row in outcome_rows(item.entity, record, outcome, spec.number_field):
                    if pauses:  # the key exists only when pauses were given (the interface is stable)
                        pause = paused.get(outcome.rule_id)
                        row["paused"] = pause.describe() if pause is not None and row["fired"] else None
                    out.write(json.dumps(row, ensure_ascii=False) + "\n")
        else:
            for line in _table_lines(item.entity, record, outcomes, spec.number_field, paused):
                out.write(line + "\n")
    return stats


def summary(stats: PreviewStats, now: datetime) -> str:
    text = (
        f"{stats.records} record(s) at {now.isoformat()}: {stats.evaluated} rule evaluation(s), "
        f"{stats.fired} fired, {stats.messages - stats.skipped} message(s) to send, {stats.skipped} skipped"
    )
    if stats.paused:
        text += f", {stats.paused} paused"
    if stats.errors:
        text += f", {stats.errors} evaluation error(s)"
    if stats.without_rules:
        text += "; no rules for " + ", ".join(f"{k} ({v})" for k, v in sorted(stats.without_rules.items()))
    return text


def run_preview_command(
    *,
    records: Path,
    rules_dir: Path,
    templates_dir: Path | None,
    now: str | None,
    previous: Path | None,
    fmt: str,
    region: str | None,
    pauses: Path | None = None,
) -> int:
    """The CLI body: 0 done, 1 rules have errors, 2 could not run (bad input)."""
    try:
        clock = parse_now(now)
    except ValueError as exc:
        print(str(exc), file=sys.stderr)
        return 2
    for path in (records, previous, pauses):
        if path is not None and not path.is_file():
            print(f"no such file: {path}", file=sys.stderr)
            return 2
    ruleset, diagnostics = load_rules([rules_dir], templates_dir=templates_dir, default_region=region)
    errors = [d for d in diagnostics if d.severity == "error"]
    if errors:
        for line in format_diagnostics(errors, "text"):
            print(line, file=sys.stderr)
        print(
            f"{len(errors)} error(s) in the rules; fix them first (ml-connector rules lint)", file=sys.stderr
        )
        return 1
    size = records.stat().st_size
    try:
        paused = load_pauses(pauses) if pauses is not None else []
        if size >= PROGRESS_MIN_BYTES:
            from rich.console import Console
            from rich.progress import BarColumn, DownloadColumn, Progress, TimeRemainingColumn

            columns = (BarColumn(), DownloadColumn(), TimeRemainingColumn())
            with Progress(*columns, console=Console(stderr=True), transient=True) as bar:
                task = bar.add_task("preview", total=size)
                stats = run_preview(
                    records,
                    ruleset,
                    clock,
                    sys.stdout,
                    fmt=fmt,
                    previous_path=previous,
                    progress=lambda n: bar.advance(task, n),
                    pauses=paused,
                )
        else:
            stats = run_preview(
                records, ruleset, clock, sys.stdout, fmt=fmt, previous_path=previous, pauses=paused
            )
    except RecordsError as exc:
        print(str(exc), file=sys.stderr)
        return 2
    print(summary(stats, clock), file=sys.stderr if fmt == "json" else sys.stdout)
    return 0
