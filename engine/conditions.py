"""Shorthand conditions compiled into small check objects, once, at load time.

Each check answers `test(ctx)` fast (the hot path of a sweep over many invoices) and `explain(ctx)`
in words finance staff understand (why a rule fired or did not). Semantics follow
engine.functions: missing data never makes a condition hold, amounts compare as decimals, BC's
"0001-01-01" is "no date", and a crossing needs the previous version of the record.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from engine import functions as fn
from engine.errors import EngineError, EvaluationError
from engine.expressions import CompiledExpression
from engine.functions import EvaluationContext
from engine.model import Comparison, Crossing, DaysWindow, Scalar

Getter = Callable[[Mapping[str, Any] | None], Any]


def make_getter(path: str) -> Getter:
    """A fast reader for `field` or `navigation.field` on a record (None when absent)."""
    head, _, tail = path.partition(".")
    if not tail:

        def get_one(record: Mapping[str, Any] | None) -> Any:
            return None if record is None else record.get(head)

        return get_one

    def get_two(record: Mapping[str, Any] | None) -> Any:
        if record is None:
            return None
        related = record.get(head)
        # type() first: the ABC check behind isinstance(x, Mapping) is slow for the common dict.
        return related.get(tail) if type(related) is dict or isinstance(related, Mapping) else None

    return get_two


def show(value: Any) -> str:
    """A value as finance staff would read it in a reason."""
    if value is None:
        return "empty"
    if isinstance(value, str):
        return repr(value)
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


@dataclass(frozen=True)
class FieldUse:
    """A field path a condition reads, with the kind of value it expects (for lint)."""

    path: str
    expects: str  # "any", "number", "date", "comparable"
    loc: tuple[str | int, ...]  # where, inside the `when:` list item (for positions)
    key: bool = False  # the position is the mapping key at `loc`, not its value
    offset: int | None = None  # character offset inside an expression


class Check:
    """Base of compiled conditions."""

    kind: str = "check"
    needs_previous: bool = False

    def test(self, ctx: EvaluationContext) -> bool:
        raise NotImplementedError

    def explain(self, ctx: EvaluationContext) -> str:
        raise NotImplementedError

    def explain_held(self, ctx: EvaluationContext) -> str:
        """`explain` for a check whose `test` just held (a fired rule's reason); may skip re-testing."""
        return self.explain(ctx)

    def predicate(self, code: PredicateCode) -> str:
        """A Python expression (over `ctx` and the dict `rec`) that is truthy exactly when `test` holds.

        Used by `compile_predicate`; may raise what `test` raises. The default calls `test`.
        """
        return f"{code.name(self.test)}(ctx)"

    def uses(self) -> tuple[FieldUse, ...]:
        return ()


_OPS: Mapping[str, tuple[str, Callable[[Any, Any], bool]]] = {
    "eq": ("is", lambda a, b: fn.values_equal(a, b)),
    "ne": ("is not", lambda a, b: not fn.values_equal(a, b)),
    "gt": (">", lambda a, b: fn.less_than(b, a)),
    "gte": (">=", lambda a, b: fn.less_or_equal(b, a)),
    "lt": ("<", lambda a, b: fn.less_than(a, b)),
    "lte": ("<=", lambda a, b: fn.less_or_equal(a, b)),
}


class FieldCheck(Check):
    """`status: Open`, `remainingAmount: {gt: 0}`, `status: {in: [Open, Paid]}`."""

    kind = "field"

    def __init__(self, path: str, test: Scalar | Comparison) -> None:
        self.path = path
        self.get = make_getter(path)
        self.plain = "." not in path  # read with record.get, what the getter does for a plain field
        ops: list[tuple[str, Any]] = []
        self.members: tuple[Any, ...] | None = None
        self.excluded: tuple[Any, ...] | None = None
        if isinstance(test, Comparison):
            for name in ("eq", "ne", "gt", "gte", "lt", "lte"):
                if name in test.model_fields_set:
                    ops.append((name, getattr(test, name)))
            self.members = test.in_
            self.excluded = test.not_in
        else:
            ops.append(("eq", test))
        self.ops = tuple(ops)
        self.ordered = any(name in {"gt", "gte", "lt", "lte"} for name, _ in ops)
        held = [f"{_OPS[name][0]} {show(bound)}" for name, bound in self.ops]
        if self.members is not None:
            held.append("in the set")
        if self.excluded is not None:
            held.append("not excluded")
        self._held_words = " and ".join(held)
        # `status: Open` held on the text 'Open': the reason is this same text for every record.
        self._held_text: str | None = None
        plain_eq = len(ops) == 1 and ops[0][0] == "eq" and type(ops[0][1]) is str
        if plain_eq and self.members is None and self.excluded is None:
            self._held_text = f"{path} is {show(ops[0][1])}"

    def _failure(self, value: Any) -> str | None:
        """None when the condition holds, else why not."""
        for name, bound in self.ops:
            if name not in {"eq", "ne"} and value is None:
                return f"{self.path} is empty"
            word, op = _OPS[name]
            if not op(value, bound):
                if name == "eq":
                    return f"{self.path} is {show(value)}, not {show(bound)}"
                if name == "ne":
                    return f"{self.path} is {show(value)}"
                return f"{self.path} {show(value)} is not {word} {show(bound)}"
        if self.members is not None and not any(fn.values_equal(value, m) for m in self.members):
            return f"{self.path} is {show(value)}, not one of {', '.join(show(m) for m in self.members)}"
        if self.excluded is not None and any(fn.values_equal(value, m) for m in self.excluded):
            return f"{self.path} is {show(value)}, which is excluded"
        return None

    def test(self, ctx: EvaluationContext) -> bool:
        value = self.get(ctx.record)
        # Fast path for the commonest forms; everything else goes through _failure.
        if len(self.ops) == 1 and self.members is None and self.excluded is None:
            name, bound = self.ops[0]
            if name == "eq":
                return fn.values_equal(value, bound)
            if value is None:
                return False
            return _OPS[name][1](value, bound)
        return self._failure(value) is None

    def explain(self, ctx: EvaluationContext) -> str:
        value = self.get(ctx.record)
        failure = self._failure(value)
        if failure is not None:
            return failure
        parts = [f"{_OPS[name][0]} {show(bound)}" for name, bound in self.ops]
        if self.members is not None:
            parts.append("in the set")
        if self.excluded is not None:
            parts.append("not excluded")
        return (
            f"{self.path} {show(value)} " + " and ".join(parts)
            if self.ordered
            else f"{self.path} is {show(value)}"
        )

    def explain_held(self, ctx: EvaluationContext) -> str:
        # The check held, so _failure is None: only the wording is left.
        value = ctx.record.get(self.path) if self.plain else self.get(ctx.record)
        if not self.ordered:
            if self._held_text is not None and type(value) is str:
                return self._held_text  # value == the bound, so show(value) is show(bound)
            return f"{self.path} is {show(value)}"
        return f"{self.path} {show(value)} {self._held_words}"

    def predicate(self, code: PredicateCode) -> str:
        if len(self.ops) != 1 or self.members is not None or self.excluded is not None:
            return super().predicate(code)
        name, bound = self.ops[0]
        value = code.read(self.path)
        if name in {"eq", "ne"}:
            temp = code.temp()
            if exact_bound(bound) or isinstance(bound, str):
                # values_equal is plain == unless a float meets a number.
                test = f"(({temp} := {value}) == {code.name(bound)})"
            else:
                test = f"{code.name(fn.values_equal)}(({temp} := {value}), {code.name(bound)})"
            # As test(): `ne` never holds on a missing value.
            return test if name == "eq" else f"(not {test} and {temp} is not None)"
        if type(bound) is not int or not exact_bound(bound):
            return super().predicate(code)
        # An int bound within 2**53 orders exactly like the decimal comparison for int and float
        # values (a float's shortest repr rounds back to it, so it cannot cross an integer that is a
        # float too); other values take the helpers.
        temp = code.temp()
        symbol = {"gt": ">", "gte": ">=", "lt": "<", "lte": "<="}[name]
        helper = code.name(_OPS[name][1])
        return (
            f"(({temp} := {value}) is not None and ({temp} {symbol} {code.name(bound)} "
            f"if _type({temp}) in _INT_FLOAT else {helper}({temp}, {code.name(bound)})))"
        )

    def uses(self) -> tuple[FieldUse, ...]:
        return (FieldUse(self.path, "comparable" if self.ordered else "any", (self.path,), key=True),)


class DaysCheck(Check):
    """`days_overdue: {gte: 7}`, `days_until_due: {lte: 3, gte: 0}`, optionally with `stages`."""

    def __init__(self, kind: str, window: DaysWindow) -> None:
        self.kind = kind
        self.window = window
        self.path = window.field
        self.get = make_getter(window.field)
        self.count = fn.days_overdue if kind == "days_overdue" else fn.days_until_due
        bounds: list[tuple[str, int]] = []
        for name in ("eq", "gt", "gte", "lt", "lte"):
            value = getattr(window, name)
            if value is not None:
                bounds.append((name, value))
        self.bounds = tuple(bounds)
        self.stages = window.stages

    def days(self, ctx: EvaluationContext) -> int | None:
        return self.count(ctx, self.get(ctx.record))

    def stage(self, days: int) -> int | None:
        """The stage reached: highest stage <= days overdue, or lowest stage >= days until due."""
        if self.stages is None:
            return None
        if self.kind == "days_overdue":
            reached = [s for s in self.stages if days >= s]
            return reached[-1] if reached else None
        ahead = [s for s in self.stages if 0 <= days <= s]
        return ahead[0] if ahead else None

    def _holds(self, days: int) -> bool:
        for name, bound in self.bounds:
            if not _OPS[name][1](days, bound):
                return False
        return self.stages is None or self.stage(days) is not None

    def test(self, ctx: EvaluationContext) -> bool:
        days = self.days(ctx)
        return days is not None and self._holds(days)

    def explain(self, ctx: EvaluationContext) -> str:
        raw = self.get(ctx.record)
        days = self.days(ctx)
        if days is None:
            return f"{self.path} is empty"
        label = "overdue" if self.kind == "days_overdue" else "until due"
        text = f"{days} day{'' if abs(days) == 1 else 's'} {label} ({self.path} {raw}, today {ctx.today})"
        if not self._holds(days):
            wanted = [f"{_OPS[n][0]} {b}" for n, b in self.bounds]
            if self.stages is not None:
                wanted.append("a stage in " + ", ".join(map(str, self.stages)))
            return f"{text}; needs {' and '.join(wanted)}"
        stage = self.stage(days)
        return text + (f", stage {stage}" if stage is not None else "")

    def predicate(self, code: PredicateCode) -> str:
        if not all(type(bound) is int for _, bound in self.bounds) or not all(
            type(s) is int for s in self.stages or ()
        ):
            return super().predicate(code)
        temp = code.temp()
        symbols = {"eq": "==", "gt": ">", "gte": ">=", "lt": "<", "lte": "<="}
        parts = [f"({temp} := {code.name(self.count)}(ctx, {code.read(self.path)})) is not None"]
        parts += [f"{temp} {symbols[name]} {bound}" for name, bound in self.bounds]
        if self.stages is not None:
            # stage() is not None: some stage reached (overdue) or still ahead (until due).
            if self.kind == "days_overdue":
                parts.append(f"{temp} >= {min(self.stages)}")
            else:
                parts.append(f"0 <= {temp} <= {max(self.stages)}")
        return "(" + " and ".join(parts) + ")"

    def uses(self) -> tuple[FieldUse, ...]:
        return (FieldUse(self.path, "date", (self.kind, "field")),)


class CrossingCheck(Check):
    """`crossed_above: {value: balanceDue, limit: creditLimit}` (and crossed_below)."""

    needs_previous = True

    def __init__(self, kind: str, crossing: Crossing) -> None:
        self.kind = kind
        self.value_path = crossing.value
        self.get_value = make_getter(crossing.value)
        self.limit_path = crossing.limit if isinstance(crossing.limit, str) else None
        constant = crossing.limit

        def get_limit(record: Mapping[str, Any] | None) -> Any:
            return constant

        self.get_limit = make_getter(crossing.limit) if isinstance(crossing.limit, str) else get_limit
        self.crossed = fn.crossed_above if kind == "crossed_above" else fn.crossed_below

    def _values(self, ctx: EvaluationContext) -> tuple[Any, Any, Any, Any]:
        return (
            self.get_value(ctx.record),
            self.get_limit(ctx.record),
            self.get_value(ctx.previous),
            self.get_limit(ctx.previous) if self.limit_path else self.get_limit(None),
        )

    def test(self, ctx: EvaluationContext) -> bool:
        if ctx.previous is None:
            return False
        return self.crossed(*self._values(ctx))

    def explain(self, ctx: EvaluationContext) -> str:
        limit_name = self.limit_path or "the limit"
        if ctx.previous is None:
            return f"no previous version of the record, so no crossing of {limit_name} can be seen"
        value, limit, prev_value, prev_limit = self._values(ctx)
        direction = "above" if self.kind == "crossed_above" else "below"
        if self.crossed(value, limit, prev_value, prev_limit):
            was_word, now_word = ("<=", ">") if direction == "above" else (">=", "<")
            return (
                f"{self.value_path} went from {show(prev_value)} ({was_word} {limit_name} {show(prev_limit)}) "
                f"to {show(value)} ({now_word} {show(limit)})"
            )
        return (
            f"{self.value_path} did not cross {direction} {limit_name}: "
            f"was {show(prev_value)} (limit {show(prev_limit)}), now {show(value)} (limit {show(limit)})"
        )

    def crossing_key(self, ctx: EvaluationContext) -> str:
        """Identifies this crossing: the version at which it happened (replays give the same key)."""
        stamp = ctx.record.get("lastModifiedDateTime")
        if stamp:
            return str(stamp)
        value, limit, prev_value, prev_limit = self._values(ctx)
        return f"{show(prev_value)}/{show(prev_limit)}->{show(value)}/{show(limit)}"

    def uses(self) -> tuple[FieldUse, ...]:
        found = [FieldUse(self.value_path, "number", (self.kind, "value"))]
        if self.limit_path:
            found.append(FieldUse(self.limit_path, "number", (self.kind, "limit")))
        return tuple(found)


class ChangedCheck(Check):
    """`changed: [status, dueDate]`: any of the fields differs from the previous version."""

    kind = "changed"
    needs_previous = True

    def __init__(self, paths: tuple[str, ...]) -> None:
        self.paths = paths
        self.getters = tuple(make_getter(p) for p in paths)

    def test(self, ctx: EvaluationContext) -> bool:
        if ctx.previous is None:
            return False
        return any(not fn.values_equal(get(ctx.record), get(ctx.previous)) for get in self.getters)

    def explain(self, ctx: EvaluationContext) -> str:
        if ctx.previous is None:
            return "no previous version of the record to compare with"
        changes = [
            f"{path} {show(get(ctx.previous))} -> {show(get(ctx.record))}"
            for path, get in zip(self.paths, self.getters, strict=True)
            if not fn.values_equal(get(ctx.record), get(ctx.previous))
        ]
        if changes:
            return "changed: " + ", ".join(changes)
        return f"none of {', '.join(self.paths)} changed"

    def uses(self) -> tuple[FieldUse, ...]:
        return tuple(FieldUse(p, "any", ("changed", i)) for i, p in enumerate(self.paths))


class ChangedValueCheck(Check):
    """`changed_to: {status: Open}` (was not Open, is now) or `changed_from: {status: Draft}`."""

    needs_previous = True

    def __init__(self, kind: str, values: Mapping[str, Scalar]) -> None:
        self.kind = kind
        self.items = tuple((path, make_getter(path), value) for path, value in values.items())

    def _holds(self, before: Any, after: Any, value: Any) -> bool:
        if self.kind == "changed_to":
            return fn.values_equal(after, value) and not fn.values_equal(before, value)
        return fn.values_equal(before, value) and not fn.values_equal(after, value)

    def test(self, ctx: EvaluationContext) -> bool:
        if ctx.previous is None:
            return False
        return all(self._holds(get(ctx.previous), get(ctx.record), value) for _, get, value in self.items)

    def explain(self, ctx: EvaluationContext) -> str:
        if ctx.previous is None:
            return "no previous version of the record to compare with"
        parts = []
        for path, get, value in self.items:
            before, after = get(ctx.previous), get(ctx.record)
            if not self._holds(before, after, value):
                direction = "to" if self.kind == "changed_to" else "from"
                return (
                    f"{path} did not change {direction} {show(value)} (was {show(before)}, now {show(after)})"
                )
            parts.append(f"{path} changed from {show(before)} to {show(after)}")
        return "; ".join(parts)

    def uses(self) -> tuple[FieldUse, ...]:
        return tuple(FieldUse(path, "any", (self.kind, path), key=True) for path, _, _ in self.items)


class ExprCheck(Check):
    """`expr: "..."`: an expression compiled once by engine.expressions."""

    kind = "expr"

    def __init__(self, compiled: CompiledExpression) -> None:
        self.compiled = compiled
        self.needs_previous = bool({"changed", "was"} & compiled.functions) or any(
            ref.previous for ref in compiled.fields
        )

    def test(self, ctx: EvaluationContext) -> bool:
        return bool(self.compiled(ctx))

    def predicate(self, code: PredicateCode) -> str:
        return f"{code.name(self.compiled.function)}(ctx)"

    def explain_held(self, ctx: EvaluationContext) -> str:
        # The expression is pure: having just held, it is true again.
        return f"`{self.compiled.source}` is true"

    def explain(self, ctx: EvaluationContext) -> str:
        try:
            value = self.compiled(ctx)
        except (EngineError, ArithmeticError, TypeError, ValueError) as exc:
            return f"expression `{self.compiled.source}` failed: {exc}"
        return f"`{self.compiled.source}` is {'true' if value else 'false'}"

    def uses(self) -> tuple[FieldUse, ...]:
        return tuple(FieldUse(ref.path, "any", ("expr",), offset=ref.offset) for ref in self.compiled.fields)


def run_test(check: Check, ctx: EvaluationContext) -> tuple[bool, str | None]:
    """(holds, error): a check that raises counts as not holding, with the error for the reason."""
    try:
        return check.test(ctx), None
    except EvaluationError as exc:
        return False, f"{exc.code} {exc.message}"
    except (EngineError, ArithmeticError, TypeError, ValueError) as exc:
        return False, str(exc)


_MAX_EXACT = 2**53  # integers a float holds exactly


def exact_bound(value: Any) -> bool:
    """A bound whose == and ordering against int and float values need no decimal conversion."""
    return (
        value is None
        or isinstance(value, bool)
        or (type(value) is int and -_MAX_EXACT <= value <= _MAX_EXACT)
    )


class PredicateCode:
    """Names and temporaries for the Python source of one rule's predicate."""

    def __init__(self) -> None:
        self.namespace: dict[str, Any] = {
            "__builtins__": {},
            "_type": type,
            "_dict": dict,
            "_isinstance": isinstance,
            "_Mapping": Mapping,
            "_INT_FLOAT": frozenset({int, float}),
            "_CAUGHT": (EngineError, ArithmeticError, TypeError, ValueError),
        }
        self.temps = 0

    def name(self, value: Any) -> str:
        key = f"_n{len(self.namespace)}"
        self.namespace[key] = value
        return key

    def temp(self) -> str:
        self.temps += 1
        return f"_t{self.temps}"

    def read(self, path: str) -> str:
        """What make_getter(path) returns, for the plain dict `rec`."""
        head, _, tail = path.partition(".")
        if not tail:
            return f"rec.get({self.name(head)})"
        temp = self.temp()
        return (
            f"({temp}.get({self.name(tail)}) if _type({temp} := rec.get({self.name(head)})) is _dict "
            f"or _isinstance({temp}, _Mapping) else None)"
        )


Predicate = Callable[[EvaluationContext], bool]


def compile_predicate(checks: tuple[Check, ...]) -> Predicate:
    """All of `checks` as one Python function: True when every check holds, in order.

    The same answer as running each check through `run_test` and stopping at the first that does
    not hold (or raises one of the errors run_test turns into "does not hold"), without a call, a
    tuple and a try per check. Records that are not plain dicts take the checks one by one.
    """

    def one_by_one(ctx: EvaluationContext) -> bool:
        return all(run_test(check, ctx)[0] for check in checks)

    code = PredicateCode()
    tests = [check.predicate(code) for check in checks]
    fallback = code.name(one_by_one)
    source = (
        "def _holds(ctx):\n"
        "    rec = ctx.record\n"
        "    if _type(rec) is not _dict:\n"
        f"        return {fallback}(ctx)\n"
        "    try:\n"
        f"        if {' and '.join(tests) or 'True'}:\n"
        "            return True\n"
        "    except _CAUGHT:\n"
        "        pass\n"
        "    return False\n"
    )
    namespace = code.namespace
    exec(compile(source, "<rule conditions>", "exec"), namespace)  # noqa: S102 - built from compiled checks
    predicate: Predicate = namespace["_holds"]
    return predicate
