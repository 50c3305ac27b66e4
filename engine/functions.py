"""The helper functions rule authors may call in conditions: one registry, documented as data.

Helpers are pure. The ones marked `needs_context` receive the `EvaluationContext` as their first
argument (the current record, the previous snapshot, `now` and `today`). Missing data never makes a
rule fire: a helper given `None` returns `None` (or `False` for predicates), and comparisons with
`None` are false in the expression compiler.

BC conventions handled here: dates are "YYYY-MM-DD" strings and "0001-01-01" means "no date";
datetimes are ISO 8601 with "Z"; amounts are JSON numbers, turned into `Decimal` through their
shortest repr so that 5328.6 stays 5328.6 (never 5328.59999...).
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime
from decimal import ROUND_HALF_UP, Decimal, InvalidOperation
from types import MappingProxyType
from typing import Any

from engine.errors import EvaluationError

# BC writes these instead of null for an empty date / an empty GUID.
BC_BLANK_DATE = "0001-01-01"
BC_BLANK_GUID = "00000000-0000-0000-0000-000000000000"
_BLANK_MARKERS = frozenset({BC_BLANK_DATE, BC_BLANK_GUID})
MAX_MONEY_PLACES = 6


@dataclass(frozen=True, slots=True)
class EvaluationContext:
    """Everything an expression can see while it is evaluated for one record.

    `today` is the date in the ruleset's business time zone; the caller computes it from `now`
    because only the caller knows that zone.
    """

    record: Mapping[str, Any]
    previous: Mapping[str, Any] | None
    now: datetime
    today: date

    def __post_init__(self) -> None:
        if self.now.tzinfo is None or self.now.utcoffset() is None:
            raise ValueError("EvaluationContext.now must be timezone-aware")


@dataclass(frozen=True)
class Helper:
    """One function rule authors may call.

    `field_args` lists the argument positions that name a record field rather than pass its value
    (`changed(status)` compares `status` on the current and previous record, so it needs the path).
    """

    name: str
    func: Callable[..., Any]
    doc: str
    signature: str
    needs_context: bool = False
    field_args: tuple[int, ...] = ()
    min_args: int = field(init=False)
    max_args: int | None = field(init=False)

    def __post_init__(self) -> None:
        params = list(inspect.signature(self.func).parameters.values())
        if self.needs_context:
            params = params[1:]
        if any(p.kind is inspect.Parameter.VAR_POSITIONAL for p in params):
            max_args: int | None = None
        else:
            max_args = len(params)
        min_args = sum(
            1
            for p in params
            if p.default is inspect.Parameter.empty and p.kind is not inspect.Parameter.VAR_POSITIONAL
        )
        object.__setattr__(self, "min_args", min_args)
        object.__setattr__(self, "max_args", max_args)


# --- value conversions -------------------------------------------------------------------------


def to_date(value: Any) -> date | None:
    """A date from a `date`, a `datetime` or an ISO string; None for None, "" and BC's 0001-01-01."""
    if value is None:
        return None
    if type(value) is str:
        # Fast path: BC dates are exactly "YYYY-MM-DD".
        if len(value) == 10:
            if value == BC_BLANK_DATE:
                return None
            try:
                return date.fromisoformat(value)
            except ValueError:
                pass
        if not value.strip():
            return None
        try:
            return datetime.fromisoformat(value).date()
        except ValueError:
            raise EvaluationError("ML306", f"{value!r} is not an ISO date (expected YYYY-MM-DD)") from None
    if isinstance(value, datetime):
        return value.date()
    if isinstance(value, date):
        return value
    raise EvaluationError("ML306", f"expected a date, got {type(value).__name__} {value!r}")


def to_datetime(value: Any) -> datetime | None:
    """An aware datetime from an ISO 8601 string ("...Z" or "+01:00") or a datetime; None for None/""."""
    if value is None:
        return None
    if isinstance(value, datetime):
        parsed = value
    elif isinstance(value, str):
        if not value.strip() or value.startswith("0001-01-01"):
            return None
        try:
            parsed = datetime.fromisoformat(value)
        except ValueError:
            raise EvaluationError("ML306", f"{value!r} is not an ISO 8601 date-time") from None
    else:
        raise EvaluationError("ML306", f"expected a date-time, got {type(value).__name__} {value!r}")
    if parsed.tzinfo is None:
        raise EvaluationError("ML306", f"{value!r} has no time zone (BC sends UTC with 'Z')")
    return parsed


def to_decimal(value: Any) -> Decimal | None:
    """A Decimal from an int, a float (through its shortest repr), a Decimal or a numeric string."""
    if value is None:
        return None
    if isinstance(value, bool):
        raise EvaluationError("ML306", f"expected an amount, got the boolean {value!r}")
    if isinstance(value, Decimal):
        return value
    if isinstance(value, int):
        return Decimal(value)
    if isinstance(value, float):
        return Decimal(repr(value))
    if isinstance(value, str):
        try:
            result = Decimal(value.strip())
        except InvalidOperation:
            raise EvaluationError("ML306", f"{value!r} is not a number") from None
        if not result.is_finite():
            raise EvaluationError("ML306", f"{value!r} is not a finite number")
        return result
    raise EvaluationError("ML306", f"expected an amount, got {type(value).__name__} {value!r}")


def values_equal(a: Any, b: Any) -> bool:
    """Equality that treats 5328.6 (float) and Decimal("5328.6") as the same amount."""
    if (type(a) is float or type(b) is float) and is_number(a) and is_number(b):
        return to_decimal(a) == to_decimal(b)
    return bool(a == b)


def _field(mapping: Mapping[str, Any] | None, path: str) -> Any:
    value: Any = mapping
    for segment in path.split("."):
        if not isinstance(value, Mapping):
            return None
        value = value.get(segment)
    return value


def is_number(value: Any) -> bool:
    """True for int, float and Decimal, never for bool (True is not an amount)."""
    return isinstance(value, int | float | Decimal) and not isinstance(value, bool)


def less_than(a: Any, b: Any) -> bool:
    """a < b with amounts compared as decimals; text against a number is an error, not False."""
    if (type(a) is float or type(b) is float) and is_number(a) and is_number(b):
        return bool(to_decimal(a) < to_decimal(b))  # type: ignore[operator]
    try:
        return bool(a < b)
    except TypeError:
        raise EvaluationError("ML306", compare_message(a, b)) from None


def less_or_equal(a: Any, b: Any) -> bool:
    """a <= b with the same rules as `less_than`."""
    if (type(a) is float or type(b) is float) and is_number(a) and is_number(b):
        return bool(to_decimal(a) <= to_decimal(b))  # type: ignore[operator]
    try:
        return bool(a <= b)
    except TypeError:
        raise EvaluationError("ML306", compare_message(a, b)) from None


def compare_message(a: Any, b: Any) -> str:
    message = f"cannot compare {type(a).__name__} {a!r} with {type(b).__name__} {b!r}"
    kinds = {type(a), type(b)}
    if str in kinds and (date in kinds or datetime in kinds):
        message += " (read the text as a date first: date(field) or datetime(field))"
    elif str in kinds and any(is_number(v) for v in (a, b)):
        message += " (the field holds text, not a number)"
    return message


# --- date helpers --------------------------------------------------------------------------------


def days_overdue(ctx: EvaluationContext, due: Any) -> int | None:
    """Days since the due date (today - due); negative while not yet due; None without a due date."""
    # Inlined fast path for BC's "YYYY-MM-DD": this helper runs on every invoice of a sweep.
    if type(due) is str and len(due) == 10 and due != BC_BLANK_DATE:
        try:
            return (ctx.today - date.fromisoformat(due)).days
        except ValueError:
            pass
    d = to_date(due)
    if d is None:
        return None
    return (ctx.today - d).days


def days_until_due(ctx: EvaluationContext, due: Any) -> int | None:
    """Days left until the due date (due - today); 0 on the day, negative once overdue."""
    d = to_date(due)
    if d is None:
        return None
    return (d - ctx.today).days


def days_between(start: Any, end: Any) -> int | None:
    """Whole days from `start` to `end` (end - start); None when either is missing."""
    a = to_date(start)
    b = to_date(end)
    if a is None or b is None:
        return None
    return (b - a).days


def date_of(value: Any) -> date | None:
    """The date in an ISO date or date-time string, for comparing with `today`."""
    return to_date(value)


def datetime_of(value: Any) -> datetime | None:
    """An aware date-time from an ISO 8601 string, for comparing with `now`."""
    return to_datetime(value)


def hours_since(ctx: EvaluationContext, value: Any) -> Decimal | None:
    """Hours from an ISO date-time (e.g. lastModifiedDateTime) to now, to two decimals."""
    moment = to_datetime(value)
    if moment is None:
        return None
    seconds = Decimal(int((ctx.now - moment).total_seconds()))
    return (seconds / Decimal(3600)).quantize(Decimal("0.01"), rounding=ROUND_HALF_UP)


# --- crossing helpers ----------------------------------------------------------------------------


def crossed_above(value: Any, limit: Any, prev_value: Any, prev_limit: Any) -> bool:
    """True when value > limit now but prev_value <= prev_limit before; no history, no crossing."""
    if value is None or limit is None or prev_value is None or prev_limit is None:
        return False
    return less_than(limit, value) and less_or_equal(prev_value, prev_limit)


def crossed_below(value: Any, limit: Any, prev_value: Any, prev_limit: Any) -> bool:
    """True when value < limit now but prev_value >= prev_limit before; no history, no crossing."""
    if value is None or limit is None or prev_value is None or prev_limit is None:
        return False
    return less_than(value, limit) and less_or_equal(prev_limit, prev_value)


def changed(ctx: EvaluationContext, path: str) -> bool:
    """True when the field differs from the previous snapshot; False without a previous snapshot."""
    if ctx.previous is None:
        return False
    return not values_equal(_field(ctx.record, path), _field(ctx.previous, path))


def was(ctx: EvaluationContext, path: str) -> Any:
    """The field's value in the previous snapshot (None without one)."""
    return _field(ctx.previous, path)


# --- value helpers -------------------------------------------------------------------------------


def is_blank(value: Any) -> bool:
    """True for None, "", whitespace, an empty list, and BC's empty date/GUID markers."""
    if value is None:
        return True
    if isinstance(value, str):
        stripped = value.strip()
        return not stripped or stripped in _BLANK_MARKERS
    if isinstance(value, list | tuple | dict | set | frozenset):
        return len(value) == 0
    return False


def lower(value: Any) -> str | None:
    """Lower-case text (None stays None)."""
    return None if value is None else str(value).lower()


def upper(value: Any) -> str | None:
    """Upper-case text (None stays None)."""
    return None if value is None else str(value).upper()


def round_money(value: Any, places: Any = 2) -> Decimal | None:
    """An amount rounded half away from zero to `places` decimals (0-6), as a Decimal."""
    amount = to_decimal(value)
    if amount is None:
        return None
    if isinstance(places, bool) or not isinstance(places, int) or not 0 <= places <= MAX_MONEY_PLACES:
        raise EvaluationError("ML306", f"round_money places must be an integer 0-{MAX_MONEY_PLACES}")
    return amount.quantize(Decimal(1).scaleb(-places), rounding=ROUND_HALF_UP)


def _present(values: Sequence[Any]) -> list[Any]:
    if len(values) == 1 and isinstance(values[0], list | tuple):
        values = values[0]
    return [v for v in values if v is not None]


def min_of(*values: Any) -> Any:
    """The smallest of the arguments (or of one list), ignoring missing values."""
    present = _present(values)
    if not present:
        return None
    best = present[0]
    for v in present[1:]:
        if less_than(v, best):
            best = v
    return best


def max_of(*values: Any) -> Any:
    """The largest of the arguments (or of one list), ignoring missing values."""
    present = _present(values)
    if not present:
        return None
    best = present[0]
    for v in present[1:]:
        if less_than(best, v):
            best = v
    return best


def abs_of(value: Any) -> Any:
    """The absolute value of a number (None stays None)."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float | Decimal):
        raise EvaluationError("ML306", f"abs() needs a number, got {type(value).__name__} {value!r}")
    return abs(value)


def length(value: Any) -> int | None:
    """The length of a text or list (None stays None)."""
    if value is None:
        return None
    if isinstance(value, str | list | tuple | dict | set | frozenset):
        return len(value)
    raise EvaluationError("ML306", f"len() needs text or a list, got {type(value).__name__} {value!r}")


def coalesce(*values: Any) -> Any:
    """The first argument that is not None (None when all are)."""
    for value in values:
        if value is not None:
            return value
    return None


def _helper(
    func: Callable[..., Any],
    signature: str,
    *,
    name: str | None = None,
    needs_context: bool = False,
    field_args: tuple[int, ...] = (),
) -> Helper:
    doc = (func.__doc__ or "").strip().splitlines()[0]
    return Helper(
        name=name or func.__name__,
        func=func,
        doc=doc,
        signature=signature,
        needs_context=needs_context,
        field_args=field_args,
    )


_TABLE: tuple[Helper, ...] = (
    _helper(days_overdue, "days_overdue(date) -> int | None", needs_context=True),
    _helper(days_until_due, "days_until_due(date) -> int | None", needs_context=True),
    _helper(days_between, "days_between(start, end) -> int | None"),
    _helper(hours_since, "hours_since(datetime) -> Decimal | None", needs_context=True),
    _helper(date_of, "date(value) -> date | None", name="date"),
    _helper(datetime_of, "datetime(value) -> datetime | None", name="datetime"),
    _helper(crossed_above, "crossed_above(value, limit, prev_value, prev_limit) -> bool"),
    _helper(crossed_below, "crossed_below(value, limit, prev_value, prev_limit) -> bool"),
    _helper(changed, "changed(field) -> bool", needs_context=True, field_args=(0,)),
    _helper(was, "was(field) -> value | None", needs_context=True, field_args=(0,)),
    _helper(is_blank, "is_blank(value) -> bool"),
    _helper(lower, "lower(text) -> str | None"),
    _helper(upper, "upper(text) -> str | None"),
    _helper(round_money, "round_money(amount, places=2) -> Decimal | None"),
    _helper(min_of, "min(a, b, ...) -> value | None", name="min"),
    _helper(max_of, "max(a, b, ...) -> value | None", name="max"),
    _helper(abs_of, "abs(number) -> number | None", name="abs"),
    _helper(length, "len(text_or_list) -> int | None", name="len"),
    _helper(coalesce, "coalesce(a, b, ...) -> value | None"),
)

HELPERS: Mapping[str, Helper] = MappingProxyType({h.name: h for h in _TABLE})

# Values the expression language provides by name (not functions): shown when someone writes today().
CONTEXT_NAMES: Mapping[str, str] = MappingProxyType(
    {
        "today": "the current date in the ruleset's business time zone",
        "now": "the current moment (timezone-aware)",
        "previous": "the previous snapshot of the record (None when there is none)",
    }
)
