"""The template fast path (engine.fastrender) renders exactly what Jinja renders, or steps aside."""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from engine.errors import TemplateError
from engine.render import MAX_OUTPUT, CompiledTemplate, compile_template, make_environment

REPO = Path(__file__).resolve().parents[2]

CONTEXTS: list[dict[str, Any]] = [
    {
        "customer": {"displayName": "Northwind", "phoneNumber": "503-555-0142", "currencyCode": "GBP"},
        "number": "PS-INV104187",
        "remainingAmount": 5328.6,
        "currencyCode": "USD",
        "dueDate": "2026-03-16",
        "days_overdue": 1,
        "days_until_due": -1,
        "stage": 1,
        "count": 3,
        "total": Decimal("12000.50"),
        "oldest_due": "2026-02-01",
        "numbers": ["PS-1", "PS-2"],
        "more": 0,
        "displayName": "Fjällräven Ltd",
        "balanceDue": 12000,
        "creditLimit": 10000,
        "previous": {"balanceDue": 9000.25},
        "amount": 120,
        "appliesToInvoiceNumber": "",
        "documentNumber": "G0001",
        "totalAmountIncludingTax": 6200.0,
        "status": "Open",
        "vendorName": "Contoso",
        "requestedReceiptDate": "2026-04-01",
    },
    {
        "customer": {"displayName": "Ünïcødé {x} \\ 'q'", "phoneNumber": "", "currencyCode": None},
        "number": 104187,
        "remainingAmount": 0,
        "currencyCode": "",
        "dueDate": "2026-03-16T10:00:00Z",
        "days_overdue": 0,
        "days_until_due": 0,
        "stage": None,
        "count": 2,
        "total": 0.1,
        "oldest_due": "2026-02-01",
        "numbers": [],
        "more": 4,
        "displayName": None,
        "balanceDue": -5,
        "creditLimit": 0,
        "previous": {},
        "amount": Decimal("0.005"),
        "appliesToInvoiceNumber": "PS-9",
        "documentNumber": None,
        "totalAmountIncludingTax": 5000,
        "status": "Draft",
        "vendorName": "",
        "requestedReceiptDate": "0001-01-01",
    },
]


def shipped_templates() -> list[CompiledTemplate]:
    env = make_environment(REPO / "templates")
    return [compile_template(env, name) for name in sorted(env.list_templates())]


def jinja_outcome(template: CompiledTemplate, context: dict[str, Any]) -> str:
    try:
        return template._render_jinja(context)
    except TemplateError as exc:
        return f"error {exc.code}: {exc.message} (line {exc.line})"


def outcome(template: CompiledTemplate, context: dict[str, Any]) -> str:
    try:
        return template.render(context)
    except TemplateError as exc:
        return f"error {exc.code}: {exc.message} (line {exc.line})"


def test_every_shipped_template_has_a_fast_path() -> None:
    templates = shipped_templates()
    assert len(templates) >= 10
    assert [t.name for t in templates if not t.has_fast_path] == []


@pytest.mark.parametrize("index", range(len(CONTEXTS)))
def test_shipped_templates_render_as_jinja_does(index: int) -> None:
    context = CONTEXTS[index]
    for template in shipped_templates():
        assert outcome(template, context) == jinja_outcome(template, context), template.name
        # Without one of its names, it fails exactly as Jinja fails.
        for name in sorted(template.variables):
            reduced = {k: v for k, v in context.items() if k != name}
            assert outcome(template, reduced) == jinja_outcome(template, reduced), (template.name, name)


SOURCES = [
    "{{ a }}-{{ b }}",
    "{{ a.b }}|{{ a['b'] }}|{{ a.items }}",
    "{% if a %}yes{% elif b %}b{% else %}no{% endif %}",
    "{% if n > 1 %}{{ n }} days{% endif %}{% if not n %}none{% endif %}",
    "{{ 'x' if n == 1 else 'y' }} {{ n >= 2 and n < 10 }} {{ n != 3 or a }}",
    "{{ 1 < n <= 5 }}",
    "{{ amount | money(currency, places=0) }} {{ due | date('%Y') }} {{ a | upper }}",
    "{{ items | join(', ') }} {{ items | length }}",
    "{{ a.missing }}",
    "{{ a.b.c }}",
    "{{ none_value.x }}",
    "{{ a._private }}",
    "{{ n }}\n\n",
    "{{ missing | default('n/a') }} {{ b | default('none') }}",
    "",
]
VALUES: list[dict[str, Any]] = [
    {"a": {"b": "B", "items": 3, "_private": 1}, "b": 0, "n": 1, "amount": 12.5, "currency": "EUR"},
    {"a": {"b": {"c": 7}}, "b": "x", "n": 4, "amount": None, "due": "2026-01-02", "items": ["p", "q"]},
    {"a": "", "b": None, "n": 0, "currency": None, "due": "bad", "items": "text", "none_value": None},
    {"a": [1], "n": "3", "amount": Decimal("1E+3"), "due": "2026-01-02T00:00:00+01:00", "items": []},
    {},
]


@pytest.mark.parametrize("source", SOURCES)
def test_inline_templates_render_as_jinja_does(source: str) -> None:
    env = make_environment(templates={"t.sms.j2": source})
    template = compile_template(env, "t.sms.j2")
    assert template.has_fast_path
    for values in VALUES:
        assert outcome(template, values) == jinja_outcome(template, values), values


@pytest.mark.parametrize(
    "source",
    [
        "{% for x in items %}{{ x }}{% endfor %}",
        "{% set y = 2 %}{{ y }}",
        "{{ a ~ b }}",
        "{{ a if b }}",
        "{{ a is defined }}",
        "{{ a + 1 }}",
        "{{ range(3) | list }}",
        "{{ a.upper() }}",
        "{{ self }}",
    ],
)
def test_other_templates_keep_the_jinja_path(source: str) -> None:
    env = make_environment(templates={"t.sms.j2": source})
    template = compile_template(env, "t.sms.j2")
    assert not template.has_fast_path
    assert outcome(template, {"a": "x", "b": "y", "items": [1, 2]}) == jinja_outcome(
        template, {"a": "x", "b": "y", "items": [1, 2]}
    )


def test_output_limit_still_applies_on_the_fast_path() -> None:
    env = make_environment(templates={"t.sms.j2": "{{ a }}"})
    template = compile_template(env, "t.sms.j2")
    assert template.has_fast_path
    assert template.render({"a": "x" * MAX_OUTPUT}) == "x" * MAX_OUTPUT
    with pytest.raises(TemplateError) as info:
        template.render({"a": "x" * (MAX_OUTPUT + 1)})
    assert info.value.code == "ML204"


def test_missing_name_reports_jinjas_error_and_line() -> None:
    env = make_environment(templates={"t.sms.j2": "Hello\n{{ customer.displayNam }}"})
    template = compile_template(env, "t.sms.j2")
    assert template.has_fast_path
    with pytest.raises(TemplateError) as info:
        template.render({"customer": {"displayName": "N"}})
    assert info.value.code == "ML203"
    assert info.value.line == 2
    assert "displayNam" in info.value.message
