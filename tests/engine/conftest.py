"""Shared helpers for engine tests: compile rules from text with in-memory templates."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path

import pytest

from engine.loader import FileResult, compile_rule_text
from engine.render import make_environment
from engine.ruleset import RuleSet

HEADER = "# yaml-language-server: $schema=../schema/rule.schema.json\nversion: 1\n"
TEMPLATES = {
    "t.sms.j2": "{{ number }}",
    "t.say.j2": "{{ number }}",
    "long.sms.j2": "{% for i in range(40) %}Payment reminder {{ i }}. {% endfor %}",
    "broken.sms.j2": "{{ customer.displayNam }}",
}


def rule_text(body: str, rule_id: str = "r") -> str:
    return HEADER + f"id: {rule_id}\ndescription: test rule\n" + body


@pytest.fixture
def compile_rule() -> Callable[..., FileResult]:
    def run(body: str, *, rule_id: str = "r", templates: Mapping[str, str] | None = None) -> FileResult:
        env = make_environment(templates=dict(templates or TEMPLATES))
        return compile_rule_text(rule_text(body, rule_id), f"rules/{rule_id}.yaml", env=env)

    return run


@pytest.fixture
def ruleset_of(compile_rule: Callable[..., FileResult]) -> Callable[..., RuleSet]:
    def run(body: str, **kwargs: object) -> RuleSet:
        result = compile_rule(body, **kwargs)
        errors = [d.format_text() for d in result.diagnostics if d.severity == "error"]
        assert not errors, errors
        assert result.rule is not None
        return RuleSet([result.rule])

    return run


@pytest.fixture(scope="session")
def shipped(repo_root: Path) -> RuleSet:
    from engine.loader import load_ruleset

    return load_ruleset(repo_root / "rules", repo_root / "templates")
