"""Every helper of the registry, called directly (the expression tests call them through the compiler)."""

from __future__ import annotations

from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any

import pytest

from engine.errors import EvaluationError
from engine.functions import (
    HELPERS,
    EvaluationContext,
    Helper,
    abs_of,
    changed,
    coalesce,
    crossed_above,
    crossed_below,
    date_of,
    datetime_of,
    days_between,
    days_overdue,
    days_until_due,
    hours_since,
    is_blank,
    length,
    lower,
    max_of,
    min_of,
    round_money,
    to_decimal,
    upper,
    values_equal,
    was,
)


def test_registry_is_one_documented_table() -> None:
    expected = {
        "days_overdue", "days_until_due", "days_between", "hours_since", "date", "datetime",
        "crossed_above", "crossed_below", "changed", "was", "is_blank", "lower", "upper",
        "round_money", "min", "max", "abs", "len", "coalesce",
    }  # fmt: skip
    assert set(HELPERS) == expected
    for name, helper in HELPERS.items():
        assert helper.name == name
        assert helper.doc and not helper.doc.endswith("\n")
        assert helper.signature.startswith(f"{name}(")
    assert HELPERS["days_overdue"].needs_context and not HELPERS["days_between"].needs_context
    assert HELPERS["changed"].field_args == (0,)
    with pytest.raises(TypeError):
        HELPERS["x"] = HELPERS["len"]  # type: ignore[index]


def test_arity_is_read_from_the_function_signature() -> None:
    assert (HELPERS["days_overdue"].min_args, HELPERS["days_overdue"].max_args) == (1, 1)
    assert (HELPERS["round_money"].min_args, HELPERS["round_money"].max_args) == (1, 2)
    assert (HELPERS["min"].min_args, HELPERS["min"].max_args) == (0, None)
    assert (HELPERS["crossed_above"].min_args, HELPERS["crossed_above"].max_args) == (4, 4)


def test_context_requires_an_aware_now(make_ctx: Any) -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        EvaluationContext(record={}, previous=None, now=datetime(2026, 3, 30), today=date(2026, 3, 30))
    ctx = make_ctx()
    with pytest.raises(AttributeError):
        ctx.today = date(2000, 1, 1)


@pytest.mark.parametrize(
    ("due", "expected"),
    [
        ("2026-03-16", 14),
        ("2026-03-30", 0),
        ("2026-04-06", -7),
        (date(2026, 3, 23), 7),
        (datetime(2026, 3, 29, 23, 0, tzinfo=UTC), 1),
        ("2026-03-29T10:00:00Z", 1),
        (None, None),
        ("", None),
        ("0001-01-01", None),
    ],
)
def test_days_overdue(make_ctx: Any, due: Any, expected: int | None) -> None:
    assert days_overdue(make_ctx(), due) == expected


def test_days_until_due_is_the_mirror_of_days_overdue(make_ctx: Any) -> None:
    ctx = make_ctx()
    assert days_until_due(ctx, "2026-04-06") == 7
    assert days_until_due(ctx, "2026-03-30") == 0
    assert days_until_due(ctx, "2026-03-16") == -14
    assert days_until_due(ctx, None) is None


def test_days_between() -> None:
    assert days_between("2026-02-14", "2026-03-16") == 30
    assert days_between("2026-03-16", "2026-02-14") == -30
    assert days_between("2024-02-28", "2024-03-01") == 2  # leap year
    assert days_between(None, "2026-03-16") is None
    assert days_between("2026-03-16", "0001-01-01") is None


def test_bad_dates_are_evaluation_errors_not_crashes(make_ctx: Any) -> None:
    with pytest.raises(EvaluationError, match=r"'16/03/2026' is not an ISO date") as info:
        days_overdue(make_ctx(), "16/03/2026")
    assert info.value.code == "ML306"
    with pytest.raises(EvaluationError, match="expected a date, got int"):
        days_between(20260316, "2026-03-16")


def test_date_and_datetime_parse_iso() -> None:
    assert date_of("2026-03-16") == date(2026, 3, 16)
    assert date_of("2026-03-16T18:02:44.107Z") == date(2026, 3, 16)
    assert date_of("0001-01-01") is None
    assert datetime_of("2026-02-14T18:02:44.107Z") == datetime(2026, 2, 14, 18, 2, 44, 107000, tzinfo=UTC)
    assert datetime_of(None) is None
    with pytest.raises(EvaluationError, match="has no time zone"):
        datetime_of("2026-02-14T18:02:44")


def test_hours_since(make_ctx: Any) -> None:
    assert hours_since(make_ctx(), "2026-03-29T18:02:44.107Z") == Decimal("15.20")
    assert hours_since(make_ctx(), None) is None


@pytest.mark.parametrize(
    ("args", "above", "below"),
    [
        ((12000.5, 10000, 9000, 10000), True, False),  # went over
        ((12000.5, 10000, 10000, 10000), True, False),  # from exactly at the limit: over now
        ((10000, 10000, 9000, 10000), False, False),  # reaching the limit is not crossing it
        ((12000.5, 10000, 11000, 10000), False, False),  # already over: no new crossing
        ((9000, 10000, 12000, 10000), False, True),  # dropped back under
        ((12000.5, 10000, 9000, 15000), True, False),  # limit lowered under the balance
        ((12000.5, 10000, None, None), False, False),  # no history, no crossing
        ((None, 10000, 9000, 10000), False, False),
        ((Decimal("10000.01"), 10000, Decimal("10000.00"), 10000), True, False),
    ],
)
def test_crossings(args: tuple[Any, ...], above: bool, below: bool) -> None:
    assert crossed_above(*args) is above
    assert crossed_below(*args) is below


def test_crossing_compares_float_amounts_as_decimals() -> None:
    # BC sends 10000.1 as a JSON float (10000.0999999...); as money it equals the limit 10000.1.
    assert crossed_above(10000.1, Decimal("10000.1"), 9000, Decimal("10000.1")) is False
    assert crossed_below(Decimal("10000.1"), 10000.1, 11000, 10000.1) is False
    assert crossed_above(0.30000000000000004, 0.3, 0.2, 0.3) is True  # a float's repr is kept exactly


def test_changed_and_was(make_ctx: Any) -> None:
    current = {"status": "Open", "remainingAmount": 5328.6, "customer": {"blocked": "All"}}
    prev = {"status": "Draft", "remainingAmount": Decimal("5328.6"), "customer": {"blocked": " "}}
    ctx = make_ctx(current, prev)
    assert changed(ctx, "status") is True
    assert changed(ctx, "remainingAmount") is False  # same amount, float vs Decimal
    assert changed(ctx, "customer.blocked") is True
    assert changed(ctx, "missing") is False
    assert was(ctx, "status") == "Draft"
    assert was(ctx, "customer.blocked") == " "
    no_history = make_ctx(current, None)
    assert changed(no_history, "status") is False
    assert was(no_history, "status") is None


@pytest.mark.parametrize(
    ("value", "blank"),
    [
        (None, True), ("", True), ("   ", True), ([], True), ({}, True),
        ("0001-01-01", True), ("00000000-0000-0000-0000-000000000000", True),
        ("x", False), (0, False), (False, False), (["a"], False), ("2026-03-16", False),
    ],
)  # fmt: skip
def test_is_blank(value: Any, blank: bool) -> None:
    assert is_blank(value) is blank


def test_text_helpers() -> None:
    assert lower("Open") == "open"
    assert upper("gbp") == "GBP"
    assert lower(None) is None and upper(None) is None


@pytest.mark.parametrize(
    ("value", "places", "expected"),
    [
        (5328.6, 2, Decimal("5328.60")),
        (2.675, 2, Decimal("2.68")),  # float 2.675 is 2.67499999...; its repr is 2.675: money rounds up
        (-2.5, 0, Decimal("-3")),  # half away from zero
        (Decimal("1.005"), 2, Decimal("1.01")),
        ("12.345", 1, Decimal("12.3")),
        (7, 2, Decimal("7.00")),
        (None, 2, None),
    ],
)
def test_round_money(value: Any, places: int, expected: Decimal | None) -> None:
    assert round_money(value, places) == expected
    if expected is not None:
        assert str(round_money(value, places)) == str(expected)


def test_round_money_refuses_bad_places_and_values() -> None:
    with pytest.raises(EvaluationError, match="places must be an integer 0-6"):
        round_money(1, 7)
    with pytest.raises(EvaluationError, match="is not a number"):
        round_money("abc")
    with pytest.raises(EvaluationError, match="boolean"):
        round_money(True)


def test_min_max_abs_len_coalesce() -> None:
    assert min_of(3, 1.5, Decimal("2")) == 1.5
    assert max_of(3, 1.5, Decimal("4")) == Decimal("4")
    assert min_of([5, None, 2]) == 2  # one list argument, missing values ignored
    assert max_of(None, None) is None
    assert abs_of(-5.5) == 5.5 and abs_of(None) is None
    assert length("abc") == 3 and length(["a"]) == 1 and length(None) is None
    assert coalesce(None, "", "x") == "" and coalesce(None, None) is None
    with pytest.raises(
        EvaluationError, match="cannot compare int 1 with str 'a' \\(the field holds text, not a number\\)"
    ):
        min_of("a", 1)
    with pytest.raises(EvaluationError, match="abs\\(\\) needs a number"):
        abs_of("5")
    with pytest.raises(EvaluationError, match="len\\(\\) needs text or a list"):
        length(5)


def test_money_equality_uses_shortest_repr() -> None:
    assert values_equal(5328.6, Decimal("5328.6"))
    assert values_equal(10, 10.0)
    assert not values_equal(0.1 + 0.2, Decimal("0.3"))  # a computed float artefact is not hidden
    assert values_equal("a", "a") and not values_equal("1", 1)
    assert to_decimal(0.1) == Decimal("0.1")


def test_helper_records_positional_signature() -> None:
    def needs(ctx: EvaluationContext, a: int, b: int = 2) -> int:
        return a + b

    helper = Helper(name="needs", func=needs, doc="d", signature="needs(a, b=2)", needs_context=True)
    assert (helper.min_args, helper.max_args) == (1, 2)
