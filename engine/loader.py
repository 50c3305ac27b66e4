"""Folders of rule files -> a RuleSet, with every problem as a located Diagnostic.

One pipeline serves both `rules lint` (collect everything, in one pass) and the service start-up
(`load_ruleset` refuses to start on the same diagnostics). Each file is checked and compiled by
engine.rulefile; here the rules are checked together (duplicate ids, overlaps, ladders).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

from engine.catalogue import (
    Catalogue,
)
from engine.diagnostics import Diagnostic
from engine.errors import EngineError
from engine.overlap import ladder_problems, overlapping_rules
from engine.render import make_environment
from engine.rulefile import FileResult, compile_rule_file
from engine.ruleset import CompiledRule, RuleSet
from engine.yamlpos import Position

RULE_SUFFIXES = (".yaml", ".yml")


class RuleSetError(EngineError):
    """Rules that do not load; `diagnostics` holds every problem found (errors and warnings)."""

    code = "ML000"

    def __init__(self, diagnostics: Sequence[Diagnostic]) -> None:
        errors = [d for d in diagnostics if d.severity == "error"]
        lines = "\n".join(d.format_text() for d in errors[:20])
        more = f"\n... and {len(errors) - 20} more" if len(errors) > 20 else ""
        super().__init__(f"{len(errors)} error(s) in the rules:\n{lines}{more}")
        self.diagnostics = tuple(diagnostics)


def rule_files(paths: Iterable[Path]) -> list[Path]:
    """Rule files named by `paths`: files as given, folders' *.yaml/*.yml (not recursive), sorted."""
    found: list[Path] = []
    for path in paths:
        if path.is_dir():
            found.extend(sorted(p for p in path.iterdir() if p.suffix in RULE_SUFFIXES and p.is_file()))
        else:
            found.append(path)
    return found


def find_templates_dir(path: Path) -> Path | None:
    """The `templates/` folder beside the rules: checked next to `path` and up to two levels up."""
    start = path if path.is_dir() else path.parent
    for folder in (start, *list(start.resolve().parents)[:2]):
        candidate = folder / "templates"
        if candidate.is_dir():
            return candidate
    return None


def load_rules(
    paths: Iterable[Path],
    *,
    templates_dir: Path | None = None,
    catalogue: Catalogue | None = None,
    default_region: str | None = None,
) -> tuple[RuleSet, list[Diagnostic]]:
    """Compile every rule file under `paths`; returns the rules that compiled and all diagnostics.

    Ruleset-level checks (duplicate ids) are included. Use `load_ruleset` to refuse on errors.
    """
    path_list = list(paths)
    files = rule_files(path_list)
    if templates_dir is None and path_list:
        templates_dir = find_templates_dir(path_list[0])
    env = make_environment(templates_dir) if templates_dir is not None else None
    diagnostics: list[Diagnostic] = []
    if not files:
        where = str(path_list[0]) if path_list else "."
        diagnostics.append(Diagnostic(where, 1, 1, "ML504", "no rule files (*.yaml) found"))
    rules: list[CompiledRule] = []
    seen: dict[str, str] = {}
    docs: dict[str, FileResult] = {}
    for file in files:
        result = compile_rule_file(file, catalogue=catalogue, env=env, default_region=default_region)
        diagnostics.extend(result.diagnostics)
        rule = result.rule
        if rule is None:
            continue
        if rule.id in seen:
            at = result.id_position or Position(1, 1)
            diagnostics.append(
                Diagnostic(
                    result.path,
                    at.line,
                    at.col,
                    "ML501",
                    f"rule id {rule.id!r} is also used by {seen[rule.id]}",
                )
            )
            continue
        seen[rule.id] = result.path
        rules.append(rule)
        docs[rule.id] = result
    diagnostics.extend(_ruleset_findings(rules, docs))
    return RuleSet(rules, default_region=default_region), sorted(diagnostics)


def _ruleset_findings(rules: list[CompiledRule], results: Mapping[str, FileResult]) -> list[Diagnostic]:
    """Warnings about the rules together: overlaps (ML506) and ladders (ML507, ML508)."""
    findings = overlapping_rules(rules)
    for rule in rules:
        findings += ladder_problems(rule)
    out: list[Diagnostic] = []
    for finding in findings:
        result = results[finding.rule_id]
        where = result.doc.locate(finding.loc) if result.doc is not None else Position(1, 1)
        out.append(Diagnostic(result.path, where.line, where.col, finding.code, finding.message, "warning"))
    return out


def load_ruleset(
    rules_dir: Path,
    templates_dir: Path | None = None,
    *,
    catalogue: Catalogue | None = None,
    default_region: str | None = None,
) -> RuleSet:
    """Load and compile all rules for the service; raises RuleSetError when any error is found."""
    ruleset, diagnostics = load_rules(
        [rules_dir], templates_dir=templates_dir, catalogue=catalogue, default_region=default_region
    )
    if any(d.severity == "error" for d in diagnostics):
        raise RuleSetError(diagnostics)
    return ruleset
