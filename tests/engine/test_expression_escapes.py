"""Sandbox escape and denial-of-service attempts against condition expressions: all refused or bounded."""

from __future__ import annotations

from typing import Any

import pytest

from engine.errors import EvaluationError, ExpressionError
from engine.expressions import MAX_DEPTH, compile_expression

# Each entry: (expression, expected code). Refused when the rule is loaded, before any record.
COMPILE_TIME = [
    ("__import__('os').system('id')", "ML304"),
    ("__builtins__", "ML304"),
    ("_private", "ML304"),
    ("customer._secret", "ML304"),
    ("customer.__class__", "ML304"),
    ("status.__class__.__mro__[1].__subclasses__()", "ML304"),
    ("().__class__.__bases__[0].__subclasses__()", "ML304"),
    ("''.__class__", "ML304"),
    ("'{0.__class__}'.format(status)", "ML304"),
    ("status.format(x)", "ML304"),
    ("'%s' % status", "ML304"),
    ("status.upper()", "ML304"),
    ("lower.__globals__", "ML304"),
    ("days_overdue.__globals__['date']", "ML304"),
    ("tags['__len__']", "ML304"),
    ("(lambda: 1)()", "ML304"),
    ("[x for x in tags]", "ML304"),
    ("{x for x in tags}", "ML304"),
    ("{x: 1 for x in tags}", "ML304"),
    ("sum(x for x in tags)", "ML303"),
    ("min(x for x in tags)", "ML304"),
    ("(y := 1)", "ML304"),
    ("f'{status}'", "ML304"),
    ("f'{status!r:>{10**9}}'", "ML304"),
    ("min(*tags)", "ML304"),
    ("lower(**customer)", "ML304"),
    ("eval('1')", "ML303"),
    ("exec('1')", "ML303"),
    ("open('/etc/passwd')", "ML303"),
    ("getattr(status, 'upper')", "ML303"),
    ("type(status)", "ML303"),
    ("globals()", "ML303"),
    ("(1).__add__(2)", "ML304"),
    ("today.replace(year=1)", "ML304"),
    ("now.__class__", "ML304"),
    ("previous.__class__", "ML304"),
    ("changed('__class__')", "ML304"),
    ("changed('customer._x')", "ML304"),
    ("await x", "ML304"),
    ("yield x", "ML301"),  # not valid outside a function: Python's parser refuses it
    ("9**9**9**9", "ML305"),
    ("2 ** 10000", "ML305"),
    ("10 ** 100 * 10 ** 100", "ML305"),
    ("'x' * 10**6", "ML305"),
    ("'x' * 10001", "ML305"),
    ("['x'] * 100000", "ML305"),
    ("'x' * 5001 + 'y' * 5000", "ML305"),
]


@pytest.mark.parametrize(("source", "code"), COMPILE_TIME)
def test_refused_at_compile_time(source: str, code: str) -> None:
    with pytest.raises(ExpressionError) as info:
        compile_expression(source)
    assert info.value.code == code, info.value.message


RUN_TIME = [
    ({"n": 10**60}, "n * n", "ML305"),
    ({"n": 2}, "n ** n ** n ** n ** n", "ML305"),
    ({"n": 10**99}, "n + n * 10", "ML305"),
    ({"s": "x" * 6000}, "s + s", "ML305"),
    ({"s": "x" * 10}, "s * 1001", "ML305"),
    ({"tags": ["a"]}, "tags * 10 ** 9", "ML305"),
    ({"tags": ["a"] * 6000}, "tags + tags", "ML305"),
    ({"n": 10**9}, "'x' * n", "ML305"),
    ({"s": "%*d"}, "s % 5", "ML306"),
    ({"e": 1000}, "2 ** e", "ML305"),
    ({"d": 1e300}, "(d ** 100) ** 100", "ML306"),  # Decimal overflow is an error, not an infinity
]


@pytest.mark.parametrize(("record", "source", "code"), RUN_TIME)
def test_bounded_at_run_time(make_ctx: Any, record: dict[str, Any], source: str, code: str) -> None:
    compiled = compile_expression(source)
    with pytest.raises(EvaluationError) as info:
        compiled(make_ctx(record))
    assert info.value.code == code, info.value.message


def test_bounds_allow_realistic_sizes(make_ctx: Any) -> None:
    ctx = make_ctx({"s": "x" * 5000, "n": 10**49})
    assert len(compile_expression("s + s")(ctx)) == 10_000
    assert compile_expression("n * n")(ctx) == 10**98
    assert compile_expression("2 ** 100")(ctx) == 2**100
    assert compile_expression("1.05 ** 30 > 4")(ctx) is True


@pytest.mark.parametrize(
    "source",
    [
        "(" * 10_000 + "1" + ")" * 10_000,
        "-" * 10_000 + "1",
        "not " * 10_000 + "x",
        "a." * 10_000 + "b",
        "1+" * 10_000 + "1",
        "x" + "[0]" * 10_000,
        "[" * 150 + "]" * 150,
        "f(" * 3000 + ")" * 3000,
    ],
)
def test_deep_nesting_is_refused_not_a_crash(source: str) -> None:
    with pytest.raises(ExpressionError) as info:
        compile_expression(source, max_length=100_000)
    assert info.value.code in {"ML305", "ML304", "ML303"}
    if not source.startswith(("f(", "[")):
        assert info.value.code == "ML305"


def test_long_source_is_refused_by_length() -> None:
    with pytest.raises(ExpressionError) as info:
        compile_expression("(" * 10_000 + "1" + ")" * 10_000)
    assert info.value.code == "ML305"
    assert info.value.message == "expression is 20,001 characters long; the limit is 2,000"


def test_depth_limit_is_generous_for_real_rules(make_ctx: Any) -> None:
    chain = " + ".join(["1"] * MAX_DEPTH)
    assert compile_expression(chain)(make_ctx()) == MAX_DEPTH
    fields = " + ".join(["discountAmount"] * MAX_DEPTH)
    assert compile_expression(fields)(make_ctx()) == 0
    with pytest.raises(ExpressionError) as info:
        compile_expression(" + ".join(["discountAmount"] * (MAX_DEPTH + 1)))
    assert info.value.code == "ML305"
    assert info.value.message == f"expression is nested more than {MAX_DEPTH} levels deep"


def test_null_byte_is_a_syntax_error() -> None:
    with pytest.raises(ExpressionError) as info:
        compile_expression("status\x00")
    assert info.value.code == "ML301"


def test_field_names_cannot_inject_code(make_ctx: Any) -> None:
    # Keys and strings reach the generated code only through repr(): quotes stay data.
    record = {"a": "') or __import__('os') #"}
    assert compile_expression("a == \"') or __import__('os') #\"")(make_ctx(record)) is True
    assert compile_expression('customer["x\') + (1"]')(make_ctx({"customer": {"x') + (1": 5}})) == 5


def test_helpers_cannot_be_reached_as_values(make_ctx: Any) -> None:
    # A bare helper name is just a (missing) record field, never the function object.
    assert compile_expression("days_overdue")(make_ctx()) is None
    assert compile_expression("len")(make_ctx({"len": 3})) == 3
