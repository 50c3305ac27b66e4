"""The expression language: what compiles, what it evaluates to, and where errors point."""

from __future__ import annotations

from datetime import date
from decimal import Decimal
from typing import Any

import pytest

from engine.errors import EvaluationError, ExpressionError
from engine.expressions import CompiledExpression, FieldRef, compile_expression
from engine.functions import HELPERS, Helper


def run(source: str, ctx: Any) -> Any:
    return compile_expression(source)(ctx)


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ("status == 'Open'", True),
        ("status != 'Open'", False),
        ("status == 'Open' and remainingAmount > 0 and days_overdue(dueDate) >= 7", True),
        ("remainingAmount > 5000 or status == 'Paid'", True),
        ("not status == 'Paid'", True),
        ("remainingAmount == 5328.6", True),
        ("remainingAmount >= 5328.6 and remainingAmount <= 5328.6", True),
        ("totalAmountExcludingTax + totalTaxAmount == totalAmountIncludingTax", True),
        ("0 < remainingAmount < 10000", True),
        ("10000 > remainingAmount > 5400", False),
        ("status in ('Open', 'Draft')", True),
        ("status in ['Paid', 'Canceled']", False),
        ("status not in {'Paid', 'Canceled'}", True),
        ("'key-account' in tags", True),
        ("'vip' not in tags", True),
        ("'wind' in customerName", True),
        ("customer.blocked != 'All'", True),
        ("customer.creditLimit", 10000),
        ("customer.missing.deeper", None),
        ("tags[0]", "key-account"),
        ("tags[-1]", "net30"),
        ("tags[5]", None),
        ("customer['number']", "C00420"),
        ("'high' if remainingAmount > 5000 else 'low'", "high"),
        ("days_overdue(dueDate)", 14),
        ("days_until_due(dueDate) < 0", True),
        ("days_between(invoiceDate, dueDate)", 30),
        ("date(dueDate) < today", True),
        ("date(dueDate)", date(2026, 3, 16)),
        ("datetime(lastModifiedDateTime) < now", True),
        ("is_blank(promisedPayDate)", True),
        ("lower(status) == 'open'", True),
        ("upper(currencyCode)", "USD"),
        ("round_money(remainingAmount / 3)", Decimal("1776.20")),
        ("round_money(remainingAmount * 0.2, 2)", Decimal("1065.72")),
        ("min(remainingAmount, 100)", 100),
        ("max(remainingAmount, 100)", 5328.6),
        ("abs(0 - remainingAmount)", Decimal("5328.6")),
        ("len(tags) == 2", True),
        ("coalesce(missing, status)", "Open"),
        ("crossed_above(customer.balanceDue, customer.creditLimit, 9000, 10000)", True),
        ("remainingAmount is not None", True),
        ("missing is None", True),
        ("True and not False", True),
        ("None", None),
        ("7 // 2 + 7 % 2 + 2 ** 3", 12),
        ("-7 // 2", -4),
        ("-7.5 // 2", Decimal("-4")),
        ("-7.5 % 2", Decimal("0.5")),
        ("10 / 4", Decimal("2.5")),
        ("0.1 + 0.2 == 0.3", True),
        ("'INV-' + number", "INV-PS-INV104187"),
        ("'ab' * 3", "ababab"),
        ("+remainingAmount", 5328.6),
        ("-remainingAmount < 0", True),
        ("1e3", Decimal("1E+3")),
        ("1_000.5 == 1000.5", True),
        ("today", date(2026, 3, 30)),
    ],
)
def test_evaluates(make_ctx: Any, source: str, expected: Any) -> None:
    result = run(source, make_ctx())
    assert result == expected
    assert type(result) is type(expected)


def test_missing_data_never_fires(make_ctx: Any) -> None:
    ctx = make_ctx({"status": "Open"})
    for source in [
        "remainingAmount > 0",
        "remainingAmount < 0",
        "remainingAmount >= 0",
        "remainingAmount <= 0",
        "0 < remainingAmount",
        "days_overdue(dueDate) >= 7",
        "remainingAmount - 10 > 0",
        "remainingAmount * 2 > 0",
        "-remainingAmount < 0",
        "customer.balanceDue > customer.creditLimit",
        "'x' in tags",
        "crossed_above(balanceDue, creditLimit, previous.balanceDue, previous.creditLimit)",
        "changed(status)",
        "0 < remainingAmount < 10",
    ]:
        assert run(source, ctx) is False, source
    # Equality with None works as in Python.
    assert run("remainingAmount == None", ctx) is True
    assert run("remainingAmount != 0", ctx) is True


def test_previous_snapshot(make_ctx: Any) -> None:
    current = {"balanceDue": 12000, "creditLimit": 10000, "status": "Open"}
    previous = {"balanceDue": 9500, "creditLimit": 10000, "status": "Draft"}
    ctx = make_ctx(current, previous)
    assert (
        run("crossed_above(balanceDue, creditLimit, previous.balanceDue, previous.creditLimit)", ctx) is True
    )
    assert run("previous.status == 'Draft' and status == 'Open'", ctx) is True
    assert run("changed(status) and was(status) == 'Draft'", ctx) is True
    assert run("changed('creditLimit')", ctx) is False
    assert run("previous is None", make_ctx(current, None)) is True
    assert run("previous.status", make_ctx(current, None)) is None


def test_compiled_once_reports_fields_and_functions() -> None:
    compiled = compile_expression(
        "status == 'Open' and customer.blocked != 'All' and days_overdue(dueDate) >= 7"
    )
    assert isinstance(compiled, CompiledExpression)
    assert compiled.source.startswith("status")
    assert compiled.fields == (
        FieldRef("status", 0, 6),
        FieldRef("customer.blocked", 21, 16),
        FieldRef("dueDate", 64, 7),
    )
    assert compiled.functions == frozenset({"days_overdue"})
    assert "rec.get('status')" in compiled.python_source


def test_field_refs_for_previous_and_field_arguments() -> None:
    compiled = compile_expression(
        "previous.balanceDue < balanceDue and changed(customer.blocked) or was('status')"
    )
    assert compiled.fields == (
        FieldRef("balanceDue", 9, 10, previous=True),
        FieldRef("balanceDue", 22, 10),
        FieldRef("customer.blocked", 45, 16),
        FieldRef("status", 71, 6),
    )


def test_offsets_are_characters_not_utf8_bytes() -> None:
    compiled = compile_expression("customerName == 'Café €' and dueDate")
    assert compiled.fields[1] == FieldRef("dueDate", 29, 7)
    with pytest.raises(ExpressionError) as info:
        compile_expression("customerName == 'Café' and x.__class__")
    assert (info.value.offset, info.value.length) == (27, 11)


def test_known_fields_give_did_you_mean() -> None:
    with pytest.raises(ExpressionError) as info:
        compile_expression("status == 'Open' and dueDat < today", known_fields={"status", "dueDate"})
    assert info.value.code == "ML302"
    assert info.value.message == "unknown field 'dueDat' (did you mean 'dueDate'?)"
    assert (info.value.offset, info.value.length) == (21, 6)
    compile_expression("status == 'Open'", known_fields={"status"})


def test_generated_code_has_no_builtins() -> None:
    compiled = compile_expression("status")
    assert compiled.function.__globals__["__builtins__"] == {}


def test_compiled_object_and_function_agree(make_ctx: Any) -> None:
    compiled = compile_expression("remainingAmount > 100")
    ctx = make_ctx()
    assert compiled(ctx) is compiled.function(ctx) is True
    assert repr(compiled) == "CompiledExpression('remainingAmount > 100')"


def test_custom_helper_registry(make_ctx: Any) -> None:
    def double(x: Any) -> Any:
        """Twice x."""
        return x * 2

    helpers = {**HELPERS, "double": Helper(name="double", func=double, doc="Twice x.", signature="double(x)")}
    assert compile_expression("double(discountAmount + 2)", helpers=helpers)(make_ctx()) == 4
    with pytest.raises(ExpressionError) as info:
        compile_expression("double(1)")
    assert info.value.code == "ML303"


@pytest.mark.parametrize(
    ("source", "code", "message", "offset", "length"),
    [
        ("status ==", "ML301", "invalid syntax", 9, 1),
        ("", "ML301", "empty expression", 0, 0),
        ("   ", "ML301", "empty expression", 0, 3),
        ("status = 'Open'", "ML301", "invalid syntax (compare with ==, not =)", 7, 1),
        ("(status == 'Open'\n and b b)", "ML301", "invalid syntax. Perhaps you forgot a comma?", 1, 25),
        ("lowr(status)", "ML303", "unknown function 'lowr' (did you mean 'lower'?)", 0, 4),
        ("today()", "ML303", "'today' is a value, not a function: write today without ()", 0, 5),
        ("days_overdue()", "ML307", "days_overdue(date) -> int | None takes 1 argument(s), got 0", 0, 14),
        (
            "round_money(1, 2, 3)",
            "ML307",
            "round_money(amount, places=2) -> Decimal | None takes 1 to 2 arguments, got 3",
            0,
            20,
        ),
        (
            "crossed_above(a, b)",
            "ML307",
            "crossed_above(value, limit, prev_value, prev_limit) -> bool takes 4 argument(s), got 2",
            0,
            19,
        ),
        (
            "round_money(x, places=2)",
            "ML304",
            "keyword arguments are not supported (round_money(...))",
            15,
            8,
        ),
        ("changed(today)", "ML304", "changed() takes a field of the record, e.g. changed(status)", 8, 5),
        ("changed(1 + 2)", "ML304", "changed() takes a field of the record, e.g. changed(status)", 8, 5),
        ("today.year", "ML304", "'today' has no fields", 0, 10),
        (
            "status is 'Open'",
            "ML304",
            "'is' only compares with None, True or False; use == for values",
            0,
            16,
        ),
        ("x & y", "ML304", "bitwise operator '&' is not allowed; use 'and' / 'or'", 0, 5),
        ("~x", "ML304", "bitwise '~' is not allowed", 0, 2),
        ("[x, 1]", "ML304", "lists may only hold constants", 1, 1),
        ("tags[i]", "ML304", "an index must be a constant number or text", 5, 1),
        ("tags[0:2]", "ML304", "slices are not allowed; index with a single constant", 5, 3),
        ("{'a': 1}", "ML304", "dict literals are not allowed", 0, 8),
        ("b'x'", "ML304", "bytes literals are not allowed", 0, 4),
        ("1j", "ML304", "complex literals are not allowed", 0, 2),
        ("...", "ML304", "ellipsis literals are not allowed", 0, 3),
        ("'%s' % status", "ML304", "'%' text formatting is not allowed; join text with +", 0, 13),
        ("2 ** 101", "ML305", "exponent 101 is larger than 100", 0, 8),
        ("x ** 1000", "ML305", "exponent 1000 is larger than 100", 0, 9),
        ("1 / 0", "ML306", "division by zero in '/'", 0, 5),
    ],
)
def test_compile_errors(source: str, code: str, message: str, offset: int, length: int) -> None:
    with pytest.raises(ExpressionError) as info:
        compile_expression(source)
    assert (info.value.code, info.value.message) == (code, message)
    assert (info.value.offset, info.value.length) == (offset, length)
    assert str(info.value) == f"{code} {message}"


def test_multiline_source_offsets() -> None:
    with pytest.raises(ExpressionError) as info:
        compile_expression("(status == 'Open'\n and x.__dict__)")
    assert info.value.offset == 23
    assert info.value.length == 10


@pytest.mark.parametrize(
    ("record", "source", "message"),
    [
        (
            {"dueDate": "2026-03-16"},
            "dueDate < today",
            "cannot compare str '2026-03-16' with date datetime.date(2026, 3, 30) (read the text as a date first: date(field) or datetime(field))",
        ),
        ({"amount": "12"}, "amount > 10", "'>' not supported between instances of 'str' and 'int'"),
        ({"amount": "12"}, "amount > other", "cannot compare str '12' with str '12'"),
        ({"amount": "12"}, "amount + 1", "cannot apply '+' to str '12' and int 1"),
        ({"amount": 0}, "10 / amount", "division by zero in '/'"),
        (
            {"dueDate": "16/03/2026"},
            "days_overdue(dueDate) > 1",
            "'16/03/2026' is not an ISO date (expected YYYY-MM-DD)",
        ),
        ({"name": "x"}, "name % 2", "'%' is the remainder of numbers; text formatting is not available"),
        ({"tags": 5}, "'a' in tags", "'in' needs text or a list on the right, got int"),
    ],
)
def test_runtime_errors_name_the_expression(
    make_ctx: Any, record: dict[str, Any], source: str, message: str
) -> None:
    if "other" in source:
        record = {**record, "other": "12"}
        source, message = "amount < other + 1", "cannot apply '+' to str '12' and int 1"
    with pytest.raises(EvaluationError) as info:
        run(source, make_ctx(record))
    assert info.value.code == "ML306"
    assert info.value.message == message
    assert info.value.source == source
    assert str(info.value) == f"ML306 {message} in {source!r}"
