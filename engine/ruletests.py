"""`rules test`: rule test files in the spirit of `promtool test rules`.

A test file (YAML, read with the same safe, position-keeping reader as rules):

    version: 1
    rules: ..                     # rules folder, relative to this file (default: its parent's parent)
    now: "2026-11-25T09:00:00Z"   # the fixed clock (a case may override it)
    defaults:                     # base records per entity set; a case's record is merged over it
      salesInvoices: {id: ..., status: Open, customer: {phoneNumber: "503-555-0142", ...}}
    cases:
      - name: eight days overdue sends the first reminder
        entity: salesInvoices
        event: sweep
        record: {dueDate: "2026-11-17"}
        previous: {...}           # optional last seen version (merged over the same defaults)
        expect:                   # the exact list of planned messages, or [] for silence
          - rule: invoice-overdue
            to: "+15035550142"    # null for a recorded skip
            body_contains: ["8 days overdue"]

Every planned message must be expected and every expected message planned.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from engine.diagnostics import Diagnostic
from engine.evaluate import evaluate, evaluate_detailed
from engine.loader import load_rules, rule_files
from engine.messages import PlannedMessage
from engine.model import Event
from engine.ruleset import RuleSet
from engine.yamlpos import parse_yaml


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


def _aware(value: str) -> datetime:
    moment = datetime.fromisoformat(value.replace("Z", "+00:00") if value.endswith("Z") else value)
    if moment.tzinfo is None:
        raise ValueError("needs a time zone, e.g. 2026-11-25T09:00:00Z")
    return moment


class ExpectedMessage(_Frozen):
    rule: str
    to: str | None = Field(default="", description="E.164; null for a recorded skip; omit to ignore")
    body: str | None = None
    body_contains: tuple[str, ...] = ()
    skip_code: str | None = None
    segments: int | None = None
    channel: str | None = None
    stage: int | None = Field(default=None, description="the ladder stage (days overdue) reached")

    @field_validator("body_contains", mode="before")
    @classmethod
    def _one_or_many(cls, value: Any) -> Any:
        return [value] if isinstance(value, str) else value


class TestCase(_Frozen):
    name: str = Field(min_length=1)
    entity: str
    event: Event | None = Field(default="updated", description="null evaluates every rule on the entity")
    record: dict[str, Any]
    previous: dict[str, Any] | None = None
    now: str | None = None
    expect: tuple[ExpectedMessage, ...]

    @field_validator("now")
    @classmethod
    def _now(cls, value: str | None) -> str | None:
        if value is not None:
            _aware(value)
        return value


class TestFile(_Frozen):
    version: int = Field(ge=1, le=1)
    rules: str | None = None
    templates: str | None = None
    now: str
    defaults: dict[str, dict[str, Any]] = Field(default_factory=dict)
    cases: tuple[TestCase, ...] = Field(min_length=1)

    @field_validator("now")
    @classmethod
    def _now(cls, value: str) -> str:
        _aware(value)
        return value


@dataclass
class CaseResult:
    file: str
    name: str
    line: int
    failures: list[str] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return not self.failures


@dataclass
class TestReport:
    results: list[CaseResult] = field(default_factory=list)
    diagnostics: list[Diagnostic] = field(default_factory=list)  # files that could not run
    files: int = 0

    @property
    def exit_code(self) -> int:
        if self.diagnostics:
            return 2
        return 0 if all(r.passed for r in self.results) and self.results else 1

    def lines(self, *, verbose: bool = False) -> list[str]:
        out = [d.format_text() for d in self.diagnostics]
        for result in self.results:
            if result.passed:
                if verbose:
                    out.append(f"PASS {result.file}:{result.line}: {result.name}")
                continue
            out.append(f"FAIL {result.file}:{result.line}: {result.name}")
            out.extend(f"     {failure}" for failure in result.failures)
        passed = sum(r.passed for r in self.results)
        out.append(
            f"{passed}/{len(self.results)} case(s) passed in {self.files} file(s)"
            + (f"; {len(self.diagnostics)} problem(s) loading tests" if self.diagnostics else "")
        )
        return out


def _merge(base: Mapping[str, Any] | None, over: Mapping[str, Any]) -> dict[str, Any]:
    merged = dict(base or {})
    for key, value in over.items():
        if isinstance(value, Mapping) and isinstance(merged.get(key), Mapping):
            merged[key] = _merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def _match(expected: ExpectedMessage, message: PlannedMessage) -> list[str]:
    """Why `message` does not satisfy `expected` (empty when it does)."""
    problems: list[str] = []
    if expected.rule != message.rule_id:
        return [f"rule {message.rule_id!r} is not {expected.rule!r}"]
    if expected.to != "" and expected.to != message.to:
        problems.append(f"to {message.to!r}, expected {expected.to!r}")
    if expected.body is not None and expected.body != message.body:
        problems.append(f"body {message.body!r}, expected {expected.body!r}")
    problems += [
        f"body {message.body!r} lacks {part!r}" for part in expected.body_contains if part not in message.body
    ]
    if expected.skip_code is not None and expected.skip_code != message.skip_code:
        problems.append(f"skip_code {message.skip_code!r}, expected {expected.skip_code!r}")
    if expected.channel is not None and expected.channel != message.channel:
        problems.append(f"channel {message.channel!r}, expected {expected.channel!r}")
    if expected.stage is not None and expected.stage != message.stage:
        problems.append(f"stage {message.stage!r}, expected {expected.stage!r}")
    if expected.segments is not None and expected.segments != message.segments:
        problems.append(f"{message.segments} segment(s), expected {expected.segments}")
    return problems


def run_case(case: TestCase, spec: TestFile, ruleset: RuleSet, file: str, line: int) -> CaseResult:
    result = CaseResult(file, case.name, line)
    now = _aware(case.now or spec.now)
    base = spec.defaults.get(case.entity)
    record = _merge(base, case.record)
    previous = _merge(base, case.previous) if case.previous is not None else None
    planned = evaluate(case.entity, record, ruleset, now, previous, event=case.event)
    unmatched = list(planned)
    for expected in case.expect:
        found = next((m for m in unmatched if not _match(expected, m)), None)
        if found is not None:
            unmatched.remove(found)
            continue
        same_rule = [m for m in unmatched if m.rule_id == expected.rule]
        if same_rule:
            result.failures.append(f"{expected.rule}: " + "; ".join(_match(expected, same_rule[0])))
            unmatched.remove(same_rule[0])
        else:
            outcome = next(
                (
                    o
                    for o in evaluate_detailed(case.entity, record, ruleset, now, previous, event=case.event)
                    if o.rule_id == expected.rule
                ),
                None,
            )
            why = outcome.reason if outcome else f"no rule {expected.rule!r} on {case.entity}/{case.event}"
            result.failures.append(f"{expected.rule}: expected a message, none planned ({why})")
    for message in unmatched:
        result.failures.append(
            f"{message.rule_id}: unexpected message to {message.to!r}: {message.body!r} (because {message.reason})"
        )
    return result


def run_rule_test_file(
    path: Path, *, rules_dir: Path | None = None, templates_dir: Path | None = None
) -> TestReport:
    report = TestReport(files=1)
    label = str(path)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        report.diagnostics.append(Diagnostic(label, 1, 1, "ML001", f"cannot read the file: {exc}"))
        return report
    doc, issues = parse_yaml(text)
    for issue in issues:
        report.diagnostics.append(
            Diagnostic(label, issue.position.line, issue.position.col, issue.code, issue.message)
        )
    if doc is None or issues:
        return report
    try:
        spec = TestFile.model_validate(doc.data)
    except ValidationError as exc:
        for error in exc.errors():
            where = doc.locate(tuple(error["loc"]), key=error["type"] == "extra_forbidden")
            loc = ".".join(str(p) for p in error["loc"])
            report.diagnostics.append(
                Diagnostic(label, where.line, where.col, "ML100", f"{loc}: {error['msg']}")
            )
        return report
    folder = rules_dir or (path.parent / spec.rules if spec.rules else path.parent.parent)
    templates = templates_dir or (path.parent / spec.templates if spec.templates else None)
    ruleset, diagnostics = load_rules([folder], templates_dir=templates)
    errors = [d for d in diagnostics if d.severity == "error"]
    if errors:
        report.diagnostics.extend(errors)
        return report
    for index, case in enumerate(spec.cases):
        line = doc.locate(("cases", index)).line
        report.results.append(run_case(case, spec, ruleset, label, line))
    return report


def run_rule_test_paths(
    paths: Sequence[Path], *, rules_dir: Path | None = None, templates_dir: Path | None = None
) -> TestReport:
    """Run every test file under `paths` (files, or folders' *.yaml)."""
    total = TestReport()
    for path in rule_files(paths):
        report = run_rule_test_file(path, rules_dir=rules_dir, templates_dir=templates_dir)
        total.results += report.results
        total.diagnostics += report.diagnostics
        total.files += report.files
    if not total.files:
        total.diagnostics.append(
            Diagnostic(str(paths[0]) if paths else ".", 1, 1, "ML504", "no test files found")
        )
    return total
