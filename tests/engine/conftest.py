"""Shared fixtures for the engine tests: rules compiled from text with in-memory templates, and an
evaluation context over a sample invoice for the leaf modules (expressions, helpers, templates, phones).
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Mapping
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import pytest

from engine.functions import EvaluationContext
from engine.loader import load_ruleset
from engine.render import make_environment
from engine.rulefile import FileResult, compile_rule_text
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
    return load_ruleset(repo_root / "rules", repo_root / "templates")


NOW = datetime(2026, 3, 30, 9, 15, tzinfo=UTC)
TODAY = date(2026, 3, 30)

INVOICE: dict[str, Any] = {
    "id": "5a0e7c12-9d4b-ef11-8a6b-6045bde9c1a2",
    "number": "PS-INV104187",
    "invoiceDate": "2026-02-14",
    "dueDate": "2026-03-16",
    "promisedPayDate": "0001-01-01",
    "customerName": "Northwind Outdoor Supply",
    "currencyCode": "USD",
    "remainingAmount": 5328.6,
    "totalAmountExcludingTax": 4980.0,
    "totalTaxAmount": 348.6,
    "totalAmountIncludingTax": 5328.6,
    "discountAmount": 0,
    "status": "Open",
    "lastModifiedDateTime": "2026-03-29T18:02:44.107Z",
    "phoneNumber": "503-555-0142",
    "customer": {"number": "C00420", "blocked": " ", "balanceDue": 12000.5, "creditLimit": 10000},
    "tags": ["key-account", "net30"],
}

ContextFactory = Callable[..., EvaluationContext]


@pytest.fixture
def make_ctx() -> ContextFactory:
    def factory(
        record: Mapping[str, Any] | None = None,
        previous: Mapping[str, Any] | None = None,
        *,
        now: datetime = NOW,
        today: date = TODAY,
    ) -> EvaluationContext:
        return EvaluationContext(
            record=INVOICE if record is None else record, previous=previous, now=now, today=today
        )

    return factory


@pytest.fixture
def invoice() -> dict[str, Any]:
    return copy.deepcopy(INVOICE)
