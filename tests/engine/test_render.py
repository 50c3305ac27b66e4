"""Message templates: filters, StrictUndefined with line numbers, sandbox escapes, loading errors."""

from __future__ import annotations

from datetime import UTC, date, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from jinja2.sandbox import ImmutableSandboxedEnvironment

from engine.errors import TemplateError
from engine.render import (
    MAX_LOOP,
    MAX_OUTPUT,
    CompiledTemplate,
    compile_template,
    format_date,
    make_environment,
    money,
)


def render(source: str, context: dict[str, Any] | None = None) -> str:
    env = make_environment(templates={"t.txt.j2": source})
    return compile_template(env, "t.txt.j2").render(context or {})


def render_error(source: str, context: dict[str, Any] | None = None) -> TemplateError:
    env = make_environment(templates={"t.txt.j2": source})
    with pytest.raises(TemplateError) as info:
        compile_template(env, "t.txt.j2").render(context or {})
    return info.value


def test_environment_is_a_locked_sandbox() -> None:
    env = make_environment(templates={})
    assert isinstance(env, ImmutableSandboxedEnvironment)
    assert env.autoescape is False
    assert set(env.globals) == {"range", "dict"}
    assert {"money", "date", "upper", "lower", "truncate", "phone_mask"} <= set(env.filters)
    assert not {"format", "center", "indent", "wordwrap", "batch", "slice", "replace", "pprint"} & set(
        env.filters
    )
    with pytest.raises(ValueError, match="needs templates_dir or templates"):
        make_environment()


def test_renders_a_finance_message_and_strips_the_trailing_newline(invoice: dict[str, Any]) -> None:
    body = render(
        "Hello {{ customerName }}, invoice {{ number }} for {{ remainingAmount|money(currencyCode) }}"
        " was due {{ dueDate|date }}. Call {{ phoneNumber }}.\n\n",
        invoice,
    )
    assert body == (
        "Hello Northwind Outdoor Supply, invoice PS-INV104187 for USD 5,328.60 was due 16 Mar 2026."
        " Call 503-555-0142."
    )


def test_no_html_escaping_in_plain_text() -> None:
    assert render("{{ name }}", {"name": "Smith & Sons <Ltd>"}) == "Smith & Sons <Ltd>"


@pytest.mark.parametrize(
    ("amount", "args", "expected"),
    [
        (1234.5, ("GBP",), "GBP 1,234.50"),
        (1234.5, (), "1,234.50"),
        (0.1 + 0.2, ("EUR",), "EUR 0.30"),
        (2.675, ("GBP",), "GBP 2.68"),  # the float's repr is 2.675: rounds half up like a person would
        (Decimal("1234567.891"), ("USD", 3), "USD 1,234,567.891"),
        (-1234.5, ("GBP",), "GBP -1,234.50"),
        (-0.001, ("GBP",), "GBP 0.00"),
        (5, ("JPY", 0), "JPY 5"),
        ("99.999", ("", 2), "100.00"),
        (1e21, ("USD",), "USD 1,000,000,000,000,000,000,000.00"),
    ],
)
def test_money_filter(amount: Any, args: tuple[Any, ...], expected: str) -> None:
    assert money(amount, *args) == expected
    assert render("{{ a|money(*args) }}", {"a": amount, "args": args}) == expected


def test_money_filter_refuses_missing_and_bad_values() -> None:
    error = render_error("Amount:\n{{ a|money('GBP') }}", {"a": None})
    assert (error.code, error.line) == ("ML203", 2)
    assert error.message == "ValueError: money: no amount (the value is missing)"
    error = render_error("{{ a|money }}", {"a": "twelve"})
    assert (error.code, error.message) == ("ML203", "'twelve' is not a number")
    with pytest.raises(ValueError, match="places must be an integer 0-6"):
        money(1, "GBP", 9)


@pytest.mark.parametrize(
    ("value", "args", "expected"),
    [
        ("2026-03-16", (), "16 Mar 2026"),
        ("2026-03-16", ("%Y/%m/%d",), "2026/03/16"),
        (date(2026, 3, 16), ("%A",), "Monday"),
        ("2026-03-16T23:30:00Z", ("%d %b %Y %H:%M",), "16 Mar 2026 23:30"),
        ("2026-03-16T23:30:00Z", ("%d %b %Y %H:%M", "Europe/London"), "16 Mar 2026 23:30"),
        ("2026-03-29T23:30:00Z", ("%d %b %Y %H:%M", "Europe/London"), "30 Mar 2026 00:30"),  # BST
        (datetime(2026, 3, 16, 8, 0, tzinfo=UTC), ("%H:%M", "America/New_York"), "04:00"),
    ],
)
def test_date_filter(value: Any, args: tuple[Any, ...], expected: str) -> None:
    assert format_date(value, *args) == expected


def test_date_filter_errors() -> None:
    assert (
        render_error("{{ d|date }}", {"d": "0001-01-01"}).message
        == "ValueError: date: '0001-01-01' is an empty date"
    )
    assert (
        render_error("{{ d|date }}", {"d": None}).message
        == "ValueError: date: no value (the field is missing)"
    )
    assert render_error("{{ d|date }}", {"d": "16/03/2026"}).message == (
        "'16/03/2026' is not an ISO date (expected YYYY-MM-DD)"
    )
    assert render_error("{{ d|date('%H', 'Mars/Olympus') }}", {"d": "2026-03-16T10:00:00Z"}).message == (
        "ValueError: date: unknown time zone 'Mars/Olympus'"
    )


def test_text_filters_and_phone_mask() -> None:
    assert (
        render("{{ s|upper }} {{ s|lower }} {{ s|title }}", {"s": "nOrthwind"})
        == "NORTHWIND northwind Northwind"
    )
    assert render("{{ s|truncate(12) }}", {"s": "Northwind Outdoor Supply"}) == "Northwind..."
    assert render("{{ p|phone_mask }}", {"p": "+447700900123"}) == "+44 77** ***123"
    assert render("{{ tags|join(', ') }}", {"tags": ["a", "b"]}) == "a, b"
    assert render("{{ missing|default('n/a') }}") == "n/a"
    assert (
        render("{% for t in tags %}{{ loop.index }}={{ t }} {% endfor %}", {"tags": ["a", "b"]}) == "1=a 2=b "
    )


def test_undefined_variable_is_an_error_with_its_line(invoice: dict[str, Any]) -> None:
    error = render_error("Dear {{ customerName }},\n\nyour invoice {{ numbr }} is overdue.\n", invoice)
    assert (error.code, error.line, error.template) == ("ML203", 3, "t.txt.j2")
    assert error.message == "'numbr' is undefined"
    assert str(error) == "t.txt.j2:3: ML203 'numbr' is undefined"


def test_undefined_attribute_is_an_error(invoice: dict[str, Any]) -> None:
    error = render_error("x\n{{ customer.nme }}", invoice)
    assert (error.code, error.line) == ("ML203", 2)
    assert error.message == "'dict object' has no attribute 'nme'"


def test_runtime_error_in_expression_has_a_line() -> None:
    error = render_error("a\nb\n{{ 1 // n }}", {"n": 0})
    assert (error.code, error.line) == ("ML203", 3)
    assert error.message == "ZeroDivisionError: integer division or modulo by zero"


def test_syntax_error_has_a_line() -> None:
    env = make_environment(
        templates={"bad.txt.j2": "Hello\n{% if x %}\nno end\nmore\n", "b": "a\nb\n{{ x + }}\n"}
    )
    with pytest.raises(TemplateError) as info:
        compile_template(env, "bad.txt.j2")
    assert (info.value.code, info.value.line) == ("ML201", 2)  # Jinja points at the unclosed block
    assert info.value.message.startswith("Unexpected end of template.")
    with pytest.raises(TemplateError) as info:
        compile_template(env, "b")
    assert (info.value.code, info.value.line, info.value.message) == (
        "ML201",
        3,
        "unexpected 'end of print statement'",
    )


def test_unknown_filter_suggests_the_right_one() -> None:
    env = make_environment(templates={"t": "x\n{{ a|mony('GBP') }}"})
    with pytest.raises(TemplateError) as info:
        compile_template(env, "t")
    assert (info.value.code, info.value.line) == ("ML201", 2)
    assert info.value.message == "No filter named 'mony'. (did you mean 'money'?)"


def test_missing_template_suggests_a_name(tmp_path: Path) -> None:
    (tmp_path / "invoice-overdue.sms.j2").write_text("Overdue {{ number }}\n", encoding="utf-8")
    env = make_environment(tmp_path)
    with pytest.raises(TemplateError) as info:
        compile_template(env, "invoice-overdu.sms.j2")
    assert info.value.code == "ML202"
    assert (
        info.value.message
        == "template 'invoice-overdu.sms.j2' not found (did you mean 'invoice-overdue.sms.j2'?)"
    )
    compiled = compile_template(env, "invoice-overdue.sms.j2")
    assert isinstance(compiled, CompiledTemplate)
    assert compiled.name == "invoice-overdue.sms.j2"
    assert compiled.variables == frozenset({"number"})
    assert compiled.render({"number": "PS-1"}) == "Overdue PS-1"


def test_file_templates_report_lines_too(tmp_path: Path) -> None:
    (tmp_path / "a.sms.j2").write_text("line one\nline two {{ nope }}\n", encoding="utf-8")
    with pytest.raises(TemplateError) as info:
        compile_template(make_environment(tmp_path), "a.sms.j2").render({})
    assert (info.value.code, info.value.line, info.value.template) == ("ML203", 2, "a.sms.j2")


def test_in_memory_templates_win_over_files(tmp_path: Path) -> None:
    (tmp_path / "a.sms.j2").write_text("from file", encoding="utf-8")
    env = make_environment(tmp_path, templates={"a.sms.j2": "from memory"})
    assert compile_template(env, "a.sms.j2").render({}) == "from memory"


# Escape and denial-of-service attempts: (template, expected code).
ESCAPES = [
    ("{{ ''.__class__.__mro__ }}", "ML204"),
    ("{{ ''.__class__.__mro__[1].__subclasses__() }}", "ML204"),
    ("{{ cycler.__init__.__globals__ }}", "ML204"),  # cycler is not even there; the walk is refused first
    ("{{ range.__self__ }}", "ML203"),  # builtin functions have no __self__ in the sandbox's view
    ("{{ dict.__base__.__subclasses__() }}", "ML204"),
    ("{{ self.__init__.__globals__ }}", "ML204"),
    ("{{ x.__class__ }}", "ML204"),
    ("{{ x['__class__'] }}", "ML204"),
    ("{{ x|attr('__class__') }}", "ML201"),  # the attr filter is not available at all
    ("{{ lipsum(10**6) }}", "ML203"),
    ("{{ namespace(a=1) }}", "ML203"),
    ("{{ '{0.__class__}'.format(x) }}", "ML204"),
    ("{{ '{:>999999999}'.format(1) }}", "ML204"),
    ("{{ 'a'.format_map({}) }}", "ML204"),
    ("{{ '%*d' % (999999999, 1) }}", "ML204"),
    ("{{ 'x'.center(999999999) }}", "ML204"),
    ("{{ 'x'.ljust(999999999) }}", "ML204"),
    ("{{ 'x'.replace('', 'y' * 5000) }}", "ML204"),
    ("{{ ','.join(['a'] * 100) }}", "ML204"),
    ("{{ tags.append(1) }}", "ML204"),
    ("{{ x.update({}) }}", "ML204"),
    ("{{ x.pop('a') }}", "ML204"),
    ("{{ 'a' * 10**9 }}", "ML204"),
    ("{{ ['a'] * 10**9 }}", "ML204"),
    ("{{ 10**9 * 'a' }}", "ML204"),
    ("{{ 2 ** 1000 }}", "ML204"),
    ("{{ (10 ** 100) ** 50 }}", "ML204"),
    ("{{ 'a' * 6000 + 'b' * 6000 }}", "ML204"),
    ("{% set s = 'a' * 9000 %}{% set s = s ~ s %}{{ s }}", "ML204"),
    ("{{ tags|join('x' * 10000) }}", "ML204"),
    ("{% for i in range(10**9) %}{% endfor %}", "ML204"),
    ("{% for i in range(2000) %}{% endfor %}", "ML204"),
    ("{% for c in 'x' * 5000 %}{% endfor %}", "ML204"),
    ("{% for i in range(10) %}{% for j in range(10) %}{% endfor %}{% endfor %}", "ML204"),
    ("{% for i in range(3) recursive %}{{ loop([]) }}{% endfor %}", "ML204"),
    ("{% macro m() %}{{ m() }}{% endmacro %}{{ m() }}", "ML204"),
    ("{% call range(3) %}{% endcall %}", "ML204"),
    ("{% include 't.txt.j2' %}", "ML204"),
    ("{% import 't.txt.j2' as t %}", "ML204"),
    ("{% from 't.txt.j2' import m %}", "ML204"),
    ("{% extends 't.txt.j2' %}", "ML204"),
    ("{% block b %}{% endblock %}{{ self.b() }}", "ML204"),
    ("{% for i in range(1000) %}{{ 'x' * 100 }}{% endfor %}", "ML204"),  # 100,000 characters of output
    ("{{ x|format('a') }}", "ML201"),
    ("{{ x|batch(10**9) }}", "ML201"),
    ("{{ x|indent(10**9) }}", "ML201"),
    ("{{ x|wordwrap(10**9) }}", "ML201"),
]


@pytest.mark.parametrize(("source", "code"), ESCAPES)
def test_escapes_are_refused(source: str, code: str) -> None:
    env = make_environment(templates={"t.txt.j2": source})
    with pytest.raises(TemplateError) as info:
        compile_template(env, "t.txt.j2").render({"x": {"a": 1}, "tags": ["a", "b"]})
    assert info.value.code == code, info.value.message


def test_limits_allow_ordinary_templates() -> None:
    lines = render(
        "{% for i in range(limit) %}{{ i }}{% endfor %}|{{ 'ab' * 50 }}|{{ a ~ b }}",
        {"limit": MAX_LOOP, "a": "x" * 4000, "b": "y" * 4000},
    )
    assert lines.startswith("0123") and lines.count("ab") == 50 and len(lines) < MAX_OUTPUT
    assert render("{{ 2 ** 10 }} {{ 7 // 2 }} {{ 7 % 2 }} {{ 1.5 * 2 }}") == "1024 3 1 3.0"


def test_sandbox_message_names_the_attribute() -> None:
    error = render_error("ok\n{{ ''.__class__ }}")
    assert (error.code, error.line) == ("ML204", 2)
    assert error.message == "access to attribute '__class__' of 'str' object is unsafe."
    error = render_error("{% for i in range(5000) %}{% endfor %}")
    assert error.message == "range() of 5,000 items is over the limit of 1,000"
