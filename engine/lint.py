"""`rules lint`: every diagnostic for a set of rule files, in one pass, in text/github/json form.

The three formats render the same Diagnostic records. Exit codes: 0 clean (warnings and info
allowed), 1 errors, 2 could not run (no rule files, unreadable paths).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from engine.catalogue import Catalogue
from engine.diagnostics import Diagnostic, explain, registry
from engine.loader import load_rules
from engine.ruleset import RuleSet

Format = Literal["text", "github", "json"]
FORMATS: tuple[Format, ...] = ("text", "github", "json")
EXIT_CLEAN, EXIT_ERRORS, EXIT_CANNOT_RUN = 0, 1, 2


@dataclass(frozen=True)
class LintReport:
    diagnostics: tuple[Diagnostic, ...]
    ruleset: RuleSet
    files: int

    @property
    def errors(self) -> int:
        return sum(1 for d in self.diagnostics if d.severity == "error")

    @property
    def warnings(self) -> int:
        return sum(1 for d in self.diagnostics if d.severity == "warning")

    @property
    def exit_code(self) -> int:
        if any(d.code in {"ML504"} for d in self.diagnostics):
            return EXIT_CANNOT_RUN
        return EXIT_ERRORS if self.errors else EXIT_CLEAN


def lint_paths(
    paths: Sequence[Path],
    *,
    templates_dir: Path | None = None,
    catalogue: Catalogue | None = None,
    default_region: str | None = None,
) -> LintReport:
    """Lint the rule files under `paths` (files or folders)."""
    ruleset, diagnostics = load_rules(
        paths, templates_dir=templates_dir, catalogue=catalogue, default_region=default_region
    )
    files = len({d.path for d in diagnostics} | {rule.source for rule in ruleset})
    return LintReport(tuple(diagnostics), ruleset, files)


def _github_escape(text: str, *, prop: bool = False) -> str:
    text = text.replace("%", "%25").replace("\r", "%0D").replace("\n", "%0A")
    if prop:
        text = text.replace(":", "%3A").replace(",", "%2C")
    return text


def format_diagnostics(diagnostics: Iterable[Diagnostic], fmt: Format) -> list[str]:
    """One line per diagnostic in the chosen format."""
    lines: list[str] = []
    for d in diagnostics:
        if fmt == "text":
            lines.append(d.format_text())
        elif fmt == "github":
            level = {"error": "error", "warning": "warning", "info": "notice"}[d.severity]
            props = (
                f"file={_github_escape(d.path, prop=True)},line={d.line},col={d.col},title={d.code} {d.name}"
            )
            lines.append(f"::{level} {props}::{_github_escape(f'{d.code} {d.message} [{d.name}]')}")
        else:
            lines.append(
                json.dumps(
                    {
                        "path": d.path,
                        "line": d.line,
                        "col": d.col,
                        "code": d.code,
                        "name": d.name,
                        "severity": d.severity,
                        "message": d.message,
                        **({"data": dict(d.data)} if d.data else {}),
                    },
                    sort_keys=True,
                )
            )
    return lines


def summary(report: LintReport) -> str:
    infos = len(report.diagnostics) - report.errors - report.warnings
    return (
        f"{len(report.ruleset)} rule(s) loaded; {report.errors} error(s), {report.warnings} warning(s), "
        f"{infos} note(s)"
    )


def explain_code(code: str) -> str | None:
    return explain(code)


def all_codes() -> list[str]:
    return sorted(registry())
