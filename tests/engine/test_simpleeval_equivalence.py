"""simpleeval is the reference meaning of the expression language: same corpus, same answers.

Where we differ on purpose (missing data, exact decimals, bounds) the difference is listed below
with both answers, so a change in either side shows up here.
"""

from __future__ import annotations

import functools
from decimal import Decimal
from typing import Any

import pytest
import simpleeval
from hypothesis import given, settings
from hypothesis import strategies as st

from engine.errors import ExpressionError
from engine.expressions import compile_expression
from engine.functions import HELPERS, EvaluationContext


def reference(source: str, ctx: EvaluationContext) -> Any:
    """simpleeval with the same names and helpers (context helpers bound to the context)."""
    functions = {
        name: functools.partial(h.func, ctx) if h.needs_context else h.func
        for name, h in HELPERS.items()
        if not h.field_args
    }
    names = {**ctx.record, "today": ctx.today, "now": ctx.now, "previous": ctx.previous}
    return simpleeval.EvalWithCompoundTypes(names=names, functions=functions).eval(source)


def same(ours: Any, theirs: Any) -> bool:
    """Equal values; numbers compare as decimals of their shortest repr (ours may be Decimal)."""
    numbers = (int, float, Decimal)
    if isinstance(ours, numbers) and isinstance(theirs, numbers) and not isinstance(ours, bool):
        return Decimal(repr(ours) if isinstance(ours, float) else ours) == Decimal(
            repr(theirs) if isinstance(theirs, float) else theirs
        )
    if isinstance(ours, list | tuple) and isinstance(theirs, list | tuple):
        return type(ours) is type(theirs) and len(ours) == len(theirs) and all(map(same, ours, theirs))
    return bool(ours == theirs) and type(ours) is type(theirs)


CORPUS = [
    "status == 'Open'",
    "status != 'Open'",
    "status == 'Open' and remainingAmount > 0 and days_overdue(dueDate) >= 7",
    "status == 'Paid' or remainingAmount > 5000",
    "not (status == 'Paid')",
    "status == 'Open' and not is_blank(phoneNumber)",
    "remainingAmount > 1000 and remainingAmount < 10000",
    "1000 < remainingAmount < 10000",
    "1000 < remainingAmount < 5000",
    "remainingAmount >= 5328.6",
    "remainingAmount == 5328.6",
    "discountAmount == 0",
    "remainingAmount * 2",
    "remainingAmount - 328.6",
    "totalAmountExcludingTax + totalTaxAmount",
    "totalAmountIncludingTax - remainingAmount",
    "remainingAmount // 7",
    "17 % 5",
    "-17 % 5",
    "-17 // 5",
    "2 ** 10",
    "2 ** 0",
    "-remainingAmount",
    "+discountAmount",
    "status in ('Open', 'Draft')",
    "status not in ['Open', 'Draft']",
    "'net30' in tags",
    "'vip' in tags",
    "'Outdoor' in customerName",
    "customer.blocked == ' '",
    "customer.creditLimit > 5000",
    "customer.balanceDue > customer.creditLimit",
    "'high' if remainingAmount > 5000 else 'low'",
    "'INV ' + number",
    "'=' * 5",
    "days_overdue(dueDate)",
    "days_until_due(dueDate)",
    "days_between(invoiceDate, dueDate) == 30",
    "date(dueDate) < today",
    "datetime(lastModifiedDateTime) < now",
    "lower(status) == 'open'",
    "upper(currencyCode)",
    "len(tags)",
    "len(customerName) > 10",
    "min(remainingAmount, 1000)",
    "max(3, 7, 5)",
    "abs(-5)",
    "coalesce(promisedPayDate, status)",
    "is_blank(promisedPayDate)",
    "round_money(remainingAmount, 0)",
    "crossed_above(customer.balanceDue, customer.creditLimit, 9000, 10000)",
    "crossed_below(customer.balanceDue, customer.creditLimit, 9000, 10000)",
    "previous.status == 'Draft'",
    "previous.status != status",
    "remainingAmount is not None",
    "True and 5",
    "0 or 'fallback'",
    "'' or None",
    "tags[0]",
    "[1, 2, 3]",
    "(1, 'a')",
    "1 if 0 else 2",
    "(1 < 2) == True",
    "3 == 3.0",
]


@pytest.mark.parametrize("source", CORPUS)
def test_same_result_as_simpleeval(make_ctx: Any, source: str) -> None:
    ctx = make_ctx(previous={"status": "Draft"})
    ours = compile_expression(source)(ctx)
    theirs = reference(source, ctx)
    assert same(ours, theirs), f"{source!r}: ours {ours!r}, simpleeval {theirs!r}"


# (source, record, ours, simpleeval's): the intentional differences.
DIFFERENCES = [
    # Missing data never fires; simpleeval raises TypeError on None > 0.
    ("remainingAmount > 0", {"remainingAmount": None}, False, TypeError),
    # Arithmetic with a missing value is missing.
    ("remainingAmount - 1", {"remainingAmount": None}, None, TypeError),
    # Exact decimals: no binary float artefacts in money.
    ("0.1 + 0.2 == 0.3", {}, True, False),
    ("amount * 3 == 0.3", {"amount": 0.1}, True, False),
    # JSON floats and decimal literals compare through the float's shortest repr.
    ("amount <= 10000.1", {"amount": 10000.1}, True, True),
    # True division is decimal (28 significant digits), not float.
    ("1 / 3", {}, Decimal(1) / Decimal(3), 1 / 3),
    # '%' is never text formatting (simpleeval formats).
    ("name % 2", {"name": "%s"}, "ML306", "2"),
    # A field missing from the record is None (simpleeval: NameNotDefined).
    ("missing == None", {}, True, simpleeval.NameNotDefined),
    # Booleans are not numbers: True + 1 is a mistake in a rule, not 2.
    ("(amount > 0) + 1", {"amount": 5}, "ML306", 2),
    # Bounds are tighter than simpleeval's (its power limit is 4,000,000).
    ("2 ** n", {"n": 1000}, "ML305", 2**1000),
]


@pytest.mark.parametrize(("source", "record", "ours", "theirs"), DIFFERENCES)
def test_documented_differences(
    make_ctx: Any, source: str, record: dict[str, Any], ours: Any, theirs: Any
) -> None:
    from engine.errors import EvaluationError

    ctx = make_ctx(record)
    if isinstance(ours, str) and ours.startswith("ML"):
        with pytest.raises(EvaluationError) as info:
            compile_expression(source)(ctx)
        assert info.value.code == ours
    else:
        assert compile_expression(source)(ctx) == ours
    if isinstance(theirs, type) and issubclass(theirs, Exception):
        with pytest.raises(theirs):
            reference(source, ctx)
    else:
        assert reference(source, ctx) == theirs


small_ints = st.integers(min_value=-50, max_value=50)
leaves = st.one_of(st.sampled_from(["a", "b", "c"]), small_ints.map(str))


def _int_expressions() -> st.SearchStrategy[str]:
    return st.recursive(
        leaves,
        lambda inner: st.one_of(
            st.tuples(inner, st.sampled_from(["+", "-", "*", "//", "%"]), inner).map(
                lambda t: f"({t[0]}) {t[1]} ({t[2]})"
            ),
            inner.map(lambda e: f"-({e})"),
        ),
        max_leaves=8,
    )


def _bool_expressions() -> st.SearchStrategy[str]:
    comparison = st.tuples(
        _int_expressions(), st.sampled_from(["<", "<=", "==", "!=", ">", ">="]), _int_expressions()
    ).map(lambda t: f"({t[0]}) {t[1]} ({t[2]})")
    chained = st.tuples(_int_expressions(), _int_expressions(), _int_expressions()).map(
        lambda t: f"({t[0]}) < ({t[1]}) <= ({t[2]})"
    )
    return st.recursive(
        st.one_of(comparison, chained),
        lambda inner: st.one_of(
            st.tuples(inner, st.sampled_from(["and", "or"]), inner).map(
                lambda t: f"({t[0]}) {t[1]} ({t[2]})"
            ),
            inner.map(lambda e: f"not ({e})"),
        ),
        max_leaves=4,
    )


@settings(max_examples=300, deadline=None)
@given(source=st.one_of(_int_expressions(), _bool_expressions()), a=small_ints, b=small_ints, c=small_ints)
def test_integer_expressions_match_simpleeval(source: str, a: int, b: int, c: int) -> None:
    from datetime import UTC, date, datetime

    from engine.errors import EngineError

    ctx = EvaluationContext(
        record={"a": a, "b": b, "c": c},
        previous=None,
        now=datetime(2026, 1, 1, tzinfo=UTC),
        today=date(2026, 1, 1),
    )
    try:
        compiled = compile_expression(source)
    except ExpressionError as exc:
        # A constant division by zero is refused at load time even in a branch never taken.
        assert (exc.code, exc.message) in {
            ("ML306", "division by zero in '//'"),
            ("ML306", "division by zero in '%'"),
        }
        return
    try:
        theirs = reference(source, ctx)
    except ZeroDivisionError:
        with pytest.raises(EngineError):
            compiled(ctx)
        return
    assert same(compiled(ctx), theirs), source
