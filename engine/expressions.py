"""Safe condition expressions: parsed with `ast`, checked against a whitelist, compiled once to Python.

The language is a small subset of Python expressions (simpleeval is the reference for its meaning):
boolean logic, comparisons (`in`, `not in`, chains), arithmetic, `a if c else b`, literals, field
paths (`status`, `customer.blocked`, `previous.balanceDue`), the context values `today`, `now` and
`previous`, and calls of the registered helpers. Everything else is refused with a code and the
offset of the offending part.

A compiled expression is real Python generated from the checked tree: a field becomes a dict lookup
that yields None when missing, so a rule costs about what a hand-written predicate costs. The
generated code sees no builtins; it only reaches the names this module puts in its namespace.

Differences from plain Python, on purpose (finance data, missing fields):
- ordering comparisons with None are False, arithmetic with None gives None: missing data never fires;
- numbers with a fraction are exact decimals: `0.1 + 0.2 == 0.3`, and BC's JSON floats compare with
  decimal literals through their shortest repr;
- `**`, `*`, `+` are bounded (exponent <= 100, integers <= 100 digits, text and lists <= 10,000 items);
- `%` is arithmetic only (no string formatting).
"""

from __future__ import annotations

import ast
import difflib
import re
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass
from decimal import ROUND_FLOOR, Decimal
from typing import Any

from engine.errors import EngineError, EvaluationError, ExpressionError
from engine.functions import (
    CONTEXT_NAMES,
    HELPERS,
    EvaluationContext,
    Helper,
    is_number,
    less_or_equal,
    less_than,
    to_decimal,
    values_equal,
)

MAX_LENGTH = 2000
MAX_DEPTH = 50
MAX_NODES = 1000
MAX_EXPONENT = 100
MAX_INT_DIGITS = 100
MAX_SEQUENCE = 10_000
_MAX_INT = 10**MAX_INT_DIGITS
# 10**100 < 2**333: a product or power whose operand bit lengths add beyond this is surely too big.
_MAX_INT_BITS = _MAX_INT.bit_length()


@dataclass(frozen=True)
class FieldRef:
    """A record field path used by an expression, with its place in the source.

    `previous` is True for `previous.x` (the field `x` read from the previous snapshot).
    """

    path: str
    offset: int
    length: int
    previous: bool = False


class CompiledExpression:
    """An expression checked and compiled once; call it with an `EvaluationContext`."""

    __slots__ = ("fields", "function", "functions", "python_source", "source")

    def __init__(
        self,
        source: str,
        fields: tuple[FieldRef, ...],
        functions: frozenset[str],
        function: Callable[[EvaluationContext], Any],
        python_source: str,
    ) -> None:
        self.source = source
        self.fields = fields
        self.functions = functions
        # The generated function itself: callers in a hot loop may call it directly.
        self.function = function
        self.python_source = python_source

    def __call__(self, ctx: EvaluationContext) -> Any:
        # Overridden per expression by compile_expression (see there); kept for direct construction.
        return self.function(ctx)

    def __repr__(self) -> str:
        return f"CompiledExpression({self.source!r})"


# --- run-time operations (the generated code calls these) ----------------------------------------


def _bounded_int(value: int) -> int:
    if -_MAX_INT < value < _MAX_INT:
        return value
    raise EvaluationError("ML305", f"integer result has more than {MAX_INT_DIGITS} digits")


def _numbers(op: str, a: Any, b: Any) -> tuple[Any, Any]:
    if not (is_number(a) and is_number(b)):
        raise EvaluationError(
            "ML306", f"cannot apply {op!r} to {type(a).__name__} {a!r} and {type(b).__name__} {b!r}"
        )
    if type(a) is int and type(b) is int:
        return a, b
    # A float or Decimal is involved: compute in decimals, so 0.1 + 0.2 == 0.3 and no float artefacts.
    return to_decimal(a), to_decimal(b)


def _add(a: Any, b: Any) -> Any:
    if a is None or b is None:
        return None
    if isinstance(a, str) and isinstance(b, str):
        if len(a) + len(b) > MAX_SEQUENCE:
            raise EvaluationError("ML305", f"text longer than {MAX_SEQUENCE:,} characters")
        return a + b
    if isinstance(a, list | tuple) and isinstance(b, list | tuple):
        if len(a) + len(b) > MAX_SEQUENCE:
            raise EvaluationError("ML305", f"result longer than {MAX_SEQUENCE:,} items")
        return list(a) + list(b)
    x, y = _numbers("+", a, b)
    result = x + y
    return _bounded_int(result) if type(result) is int else result


def _sub(a: Any, b: Any) -> Any:
    if a is None or b is None:
        return None
    x, y = _numbers("-", a, b)
    result = x - y
    return _bounded_int(result) if type(result) is int else result


def _repeat(seq: Any, times: Any) -> Any:
    if isinstance(times, bool) or not isinstance(times, int):
        raise EvaluationError(
            "ML306", f"text or a list can only be repeated a whole number of times, not {times!r}"
        )
    if times > 0 and len(seq) * times > MAX_SEQUENCE:
        raise EvaluationError("ML305", f"repeat would build more than {MAX_SEQUENCE:,} items")
    return seq * times


def _mul(a: Any, b: Any) -> Any:
    if a is None or b is None:
        return None
    if isinstance(a, str | list | tuple):
        return _repeat(a, b)
    if isinstance(b, str | list | tuple):
        return _repeat(b, a)
    x, y = _numbers("*", a, b)
    if type(x) is int and type(y) is int:
        if x.bit_length() + y.bit_length() > _MAX_INT_BITS + 1:
            raise EvaluationError("ML305", f"integer result has more than {MAX_INT_DIGITS} digits")
        return _bounded_int(x * y)
    return x * y


def _nonzero(op: str, b: Any) -> None:
    if b == 0:
        raise EvaluationError("ML306", f"division by zero in {op!r}")


def _div(a: Any, b: Any) -> Any:
    if a is None or b is None:
        return None
    x, y = _numbers("/", a, b)
    _nonzero("/", y)
    # True division is exact-decimal, never float: 10 / 4 == 2.5 exactly, money stays money.
    return to_decimal(x) / to_decimal(y)  # type: ignore[operator]


def _floordiv(a: Any, b: Any) -> Any:
    if a is None or b is None:
        return None
    x, y = _numbers("//", a, b)
    _nonzero("//", y)
    if type(x) is int and type(y) is int:
        return x // y
    # Decimal's // truncates toward zero; Python floors. Keep Python's meaning.
    return (x / y).to_integral_value(rounding=ROUND_FLOOR)


def _mod(a: Any, b: Any) -> Any:
    if a is None or b is None:
        return None
    if isinstance(a, str):
        # "%*d" % (10**9, 1) would build a gigabyte: '%' never formats text here.
        raise EvaluationError("ML306", "'%' is the remainder of numbers; text formatting is not available")
    x, y = _numbers("%", a, b)
    _nonzero("%", y)
    if type(x) is int and type(y) is int:
        return x % y
    return x - y * (x / y).to_integral_value(rounding=ROUND_FLOOR)


def _pow(a: Any, b: Any) -> Any:
    if a is None or b is None:
        return None
    x, y = _numbers("**", a, b)
    if abs(y) > MAX_EXPONENT:
        raise EvaluationError("ML305", f"exponent {y} is larger than {MAX_EXPONENT}")
    if type(x) is int and type(y) is int:
        if y < 0:
            if x == 0:
                raise EvaluationError("ML306", "zero cannot be raised to a negative power")
            return Decimal(1) / (Decimal(x) ** -y)
        if x.bit_length() * y > _MAX_INT_BITS + 1:
            raise EvaluationError("ML305", f"integer result has more than {MAX_INT_DIGITS} digits")
        return _bounded_int(x**y)
    if x == 0 and y < 0:
        raise EvaluationError("ML306", "zero cannot be raised to a negative power")
    return to_decimal(x) ** to_decimal(y)  # type: ignore[operator]


def _neg(a: Any) -> Any:
    if a is None:
        return None
    if not is_number(a):
        raise EvaluationError("ML306", f"cannot negate {type(a).__name__} {a!r}")
    return -a


def _pos(a: Any) -> Any:
    if a is None:
        return None
    if not is_number(a):
        raise EvaluationError("ML306", f"unary '+' needs a number, got {type(a).__name__} {a!r}")
    return a


def _eq(a: Any, b: Any) -> bool:
    return values_equal(a, b)


def _lt(a: Any, b: Any) -> bool:
    return a is not None and b is not None and less_than(a, b)


def _gt(a: Any, b: Any) -> bool:
    return a is not None and b is not None and less_than(b, a)


def _le(a: Any, b: Any) -> bool:
    return a is not None and b is not None and less_or_equal(a, b)


def _ge(a: Any, b: Any) -> bool:
    return a is not None and b is not None and less_or_equal(b, a)


def _contains(container: Any, item: Any) -> bool:
    """`item in container`; nothing is in a missing container, and amounts compare as decimals."""
    if container is None:
        return False
    if isinstance(container, str):
        if not isinstance(item, str):
            raise EvaluationError("ML306", f"'in' on text needs text on the left, got {type(item).__name__}")
        return item in container
    if isinstance(container, Mapping):
        return item in container if isinstance(item, str) else False
    if isinstance(container, list | tuple | set | frozenset):
        return any(values_equal(item, member) for member in container)
    raise EvaluationError("ML306", f"'in' needs text or a list on the right, got {type(container).__name__}")


def _path(root: Any, segments: tuple[str, ...]) -> Any:
    value = root
    for segment in segments:
        # type() first: the ABC check behind isinstance(x, Mapping) is slow for the common dict.
        if type(value) is not dict and not isinstance(value, Mapping):
            return None
        value = value.get(segment)
    return value


def _item(value: Any, key: Any) -> Any:
    if isinstance(value, Mapping):
        return value.get(key)
    if isinstance(value, list | tuple | str) and isinstance(key, int) and not isinstance(key, bool):
        return value[key] if -len(value) <= key < len(value) else None
    return None


def _failure(exc: Exception, source: str) -> EngineError:
    """The error a failed evaluation raises: always an EngineError that names the expression."""
    if isinstance(exc, EvaluationError):
        return EvaluationError(exc.code, exc.message, source=source)
    if isinstance(exc, EngineError):
        return exc
    return EvaluationError("ML306", str(exc) or type(exc).__name__, source=source)


_RUNTIME: dict[str, Any] = {
    "_add": _add,
    "_sub": _sub,
    "_mul": _mul,
    "_div": _div,
    "_floordiv": _floordiv,
    "_mod": _mod,
    "_pow": _pow,
    "_neg": _neg,
    "_pos": _pos,
    "_eq": _eq,
    "_lt": _lt,
    "_gt": _gt,
    "_le": _le,
    "_ge": _ge,
    "_contains": _contains,
    "_path": _path,
    "_item": _item,
    "_type": type,
    "_dict": dict,
    "_SCALARS": frozenset({str, int, bool, type(None)}),
    "_EngineError": EngineError,
    # The generated code runs without builtins; these are the only ones its error handler names.
    "TypeError": TypeError,
    "ValueError": ValueError,
    "ArithmeticError": ArithmeticError,
    "LookupError": LookupError,
    "AttributeError": AttributeError,
    "_failure": _failure,
}

_BINOPS: dict[type[ast.operator], tuple[str, Callable[[Any, Any], Any]]] = {
    ast.Add: ("_add", _add),
    ast.Sub: ("_sub", _sub),
    ast.Mult: ("_mul", _mul),
    ast.Div: ("_div", _div),
    ast.FloorDiv: ("_floordiv", _floordiv),
    ast.Mod: ("_mod", _mod),
    ast.Pow: ("_pow", _pow),
}
_FORBIDDEN_BINOPS: dict[type[ast.operator], str] = {
    ast.BitAnd: "&",
    ast.BitOr: "|",
    ast.BitXor: "^",
    ast.LShift: "<<",
    ast.RShift: ">>",
    ast.MatMult: "@",
}
_ORDER_OPS: dict[type[ast.cmpop], tuple[str, str, Callable[[Any, Any], bool]]] = {
    ast.Lt: ("<", "_lt", _lt),
    ast.Gt: (">", "_gt", _gt),
    ast.LtE: ("<=", "_le", _le),
    ast.GtE: (">=", "_ge", _ge),
}
_FORBIDDEN_NODES: dict[type[ast.AST], str] = {
    ast.Lambda: "lambda functions are not allowed",
    ast.ListComp: "comprehensions are not allowed",
    ast.SetComp: "comprehensions are not allowed",
    ast.DictComp: "comprehensions are not allowed",
    ast.GeneratorExp: "generator expressions are not allowed",
    ast.NamedExpr: "assignment with ':=' is not allowed",
    ast.JoinedStr: "f-strings are not allowed; join text with +",
    ast.FormattedValue: "f-strings are not allowed; join text with +",
    ast.Starred: "'*' unpacking is not allowed",
    ast.Dict: "dict literals are not allowed",
    ast.Slice: "slices are not allowed; index with a single constant",
    ast.Await: "'await' is not allowed",
    ast.Yield: "'yield' is not allowed",
    ast.YieldFrom: "'yield' is not allowed",
}
_CONTEXT_ATTRS = {"today": "ctx.today", "now": "ctx.now"}
_NO_VALUE = object()
_LINE_BREAK = re.compile(r"\r\n|\r|\n")


@dataclass(frozen=True)
class _Code:
    """Generated Python for one node; `value` is the folded constant when the node is constant."""

    text: str
    value: Any = _NO_VALUE

    @property
    def constant(self) -> bool:
        return self.value is not _NO_VALUE


class _Compiler:
    def __init__(
        self,
        source: str,
        helpers: Mapping[str, Helper],
        known_fields: Collection[str] | None,
    ) -> None:
        self.source = source
        self.helpers = helpers
        self.known_fields = known_fields
        self.fields: list[FieldRef] = []
        self.functions: set[str] = set()
        self.namespace: dict[str, Any] = dict(_RUNTIME)
        self.uses_record = False
        self._temps = 0
        self._constants = 0
        # ast positions are (line, UTF-8 byte column); diagnostics want character offsets.
        self._line_starts = [0]
        self._lines: list[str] = []
        pos = 0
        for match in _LINE_BREAK.finditer(source):
            self._lines.append(source[pos : match.start()])
            pos = match.end()
            self._line_starts.append(pos)
        self._lines.append(source[pos:])

    # -- positions and errors --

    def _char_offset(self, lineno: int, col_bytes: int) -> int:
        line = self._lines[lineno - 1] if 0 < lineno <= len(self._lines) else ""
        col = len(line.encode("utf-8")[:col_bytes].decode("utf-8", errors="ignore"))
        return self._line_starts[lineno - 1] + col if 0 < lineno <= len(self._line_starts) else col

    def span(self, node: ast.AST) -> tuple[int, int]:
        lineno = getattr(node, "lineno", 1)
        start = self._char_offset(lineno, getattr(node, "col_offset", 0))
        end_lineno = getattr(node, "end_lineno", None)
        end_col = getattr(node, "end_col_offset", None)
        if end_lineno is None or end_col is None:
            return start, 1
        return start, max(1, self._char_offset(end_lineno, end_col) - start)

    def error(self, code: str, message: str, node: ast.AST) -> ExpressionError:
        offset, length = self.span(node)
        return ExpressionError(code, message, offset=offset, length=length)

    # -- names for the generated code --

    def temp(self) -> str:
        self._temps += 1
        return f"_t{self._temps}"

    def constant_name(self, value: Any) -> str:
        self._constants += 1
        name = f"_k{self._constants}"
        self.namespace[name] = value
        return name

    def literal(self, value: Any) -> _Code:
        """Code for a constant value: inline when repr round-trips exactly, else a namespace slot."""
        if value is None or isinstance(value, bool | int | str):
            return _Code(repr(value), value)
        return _Code(self.constant_name(value), value)

    # -- the walk --

    def compile(self, node: ast.AST) -> _Code:
        forbidden = _FORBIDDEN_NODES.get(type(node))
        if forbidden is not None:
            raise self.error("ML304", forbidden, node)
        method = getattr(self, f"visit_{type(node).__name__}", None)
        if method is None:
            raise self.error("ML304", f"{_describe(node)} is not allowed in a condition", node)
        result: _Code = method(node)
        return result

    def fold(self, node: ast.AST, func: Callable[..., Any], *values: Any) -> _Code:
        try:
            return self.literal(func(*values))
        except EvaluationError as exc:
            # Refuse 9**9**9**9 and "x" * 10**6 before any record is seen.
            raise self.error(exc.code, exc.message, node) from None

    def visit_Constant(self, node: ast.Constant) -> _Code:
        value = node.value
        if isinstance(value, float):
            text = ast.get_source_segment(self.source, node) or repr(value)
            # The literal as written, exactly: 0.1 is Decimal("0.1"), not the nearest binary float.
            return self.literal(Decimal(text.replace("_", "")))
        if value is None or isinstance(value, bool | int | str):
            if isinstance(value, int) and not isinstance(value, bool) and abs(value) >= _MAX_INT:
                raise self.error("ML305", f"integer literal has more than {MAX_INT_DIGITS} digits", node)
            return self.literal(value)
        raise self.error("ML304", f"{type(value).__name__} literals are not allowed", node)

    def visit_Name(self, node: ast.Name) -> _Code:
        name = node.id
        if name.startswith("_"):
            raise self.error("ML304", f"names starting with '_' are not allowed ({name!r})", node)
        if name in _CONTEXT_ATTRS:
            return _Code(_CONTEXT_ATTRS[name])
        if name == "previous":
            return _Code("ctx.previous")
        return self.field((name,), node, previous=False)

    def field(self, segments: tuple[str, ...], node: ast.AST, *, previous: bool) -> _Code:
        path = ".".join(segments)
        offset, length = self.span(node)
        if previous:
            # Point at the field path after "previous.".
            offset, length = offset + len("previous."), length - len("previous.")
        self.add_field(path, offset, length, previous, node)
        if previous:
            return _Code(f"_path(ctx.previous, {segments!r})")
        self.uses_record = True
        if len(segments) == 1:
            return _Code(f"rec.get({segments[0]!r})")
        if len(segments) == 2:
            # _path for the commonest shape (a dict record, an expanded dict), without its call.
            head, tail = segments
            return _Code(
                f"(rec.get({head!r}).get({tail!r}) if _type(rec) is _dict and _type(rec.get({head!r})) is _dict "
                f"else _path(rec, {segments!r}))"
            )
        return _Code(f"_path(rec, {segments!r})")

    def add_field(self, path: str, offset: int, length: int, previous: bool, node: ast.AST) -> None:
        if self.known_fields is not None and path not in self.known_fields:
            hint = difflib.get_close_matches(path, list(self.known_fields), n=1)
            suggestion = f" (did you mean {hint[0]!r}?)" if hint else ""
            raise ExpressionError(
                "ML302", f"unknown field {path!r}{suggestion}", offset=offset, length=length
            )
        self.fields.append(FieldRef(path=path, offset=offset, length=length, previous=previous))

    def field_path(self, node: ast.AST) -> tuple[str, ...] | None:
        """The segments of a pure dotted name (a.b.c), or None when the node is something else."""
        segments: list[str] = []
        current = node
        while isinstance(current, ast.Attribute):
            segments.append(current.attr)
            current = current.value
        if not isinstance(current, ast.Name):
            return None
        segments.append(current.id)
        segments.reverse()
        for segment in segments:
            if segment.startswith("_"):
                raise self.error("ML304", f"names starting with '_' are not allowed ({segment!r})", node)
        return tuple(segments)

    def visit_Attribute(self, node: ast.Attribute) -> _Code:
        if node.attr.startswith("_"):
            raise self.error("ML304", f"names starting with '_' are not allowed ({node.attr!r})", node)
        segments = self.field_path(node)
        if segments is not None:
            root = segments[0]
            if root in _CONTEXT_ATTRS:
                raise self.error("ML304", f"{root!r} has no fields", node)
            if root == "previous":
                return self.field(segments[1:], node, previous=True)
            return self.field(segments, node, previous=False)
        if isinstance(node.value, ast.Subscript):
            inner = self.compile(node.value)
            return _Code(f"_item({inner.text}, {node.attr!r})")
        raise self.error(
            "ML304",
            "attributes can only be read from record fields (methods and other attributes are not available)",
            node,
        )

    def visit_Subscript(self, node: ast.Subscript) -> _Code:
        if not isinstance(node.value, ast.Name | ast.Attribute | ast.Subscript):
            raise self.error("ML304", "only record fields can be indexed", node)
        key = node.slice
        if isinstance(key, ast.Slice):
            raise self.error("ML304", _FORBIDDEN_NODES[ast.Slice], key)
        key_code = self.compile(key)
        key_value = key_code.value
        if not key_code.constant or isinstance(key_value, bool) or not isinstance(key_value, int | str):
            raise self.error("ML304", "an index must be a constant number or text", key)
        if isinstance(key_value, str) and key_value.startswith("_"):
            raise self.error("ML304", "keys starting with '_' are not allowed", key)
        value = self.compile(node.value)
        return _Code(f"_item({value.text}, {key_code.text})")

    def visit_BoolOp(self, node: ast.BoolOp) -> _Code:
        joiner = " and " if isinstance(node.op, ast.And) else " or "
        parts = [self.compile(v).text for v in node.values]
        return _Code("(" + joiner.join(parts) + ")")

    def visit_UnaryOp(self, node: ast.UnaryOp) -> _Code:
        operand = self.compile(node.operand)
        if isinstance(node.op, ast.Not):
            if operand.constant:
                return self.literal(not operand.value)
            return _Code(f"(not {operand.text})")
        if isinstance(node.op, ast.USub):
            if operand.constant:
                return self.fold(node, _neg, operand.value)
            return _Code(f"_neg({operand.text})")
        if isinstance(node.op, ast.UAdd):
            if operand.constant:
                return self.fold(node, _pos, operand.value)
            return _Code(f"_pos({operand.text})")
        raise self.error("ML304", "bitwise '~' is not allowed", node)

    def visit_BinOp(self, node: ast.BinOp) -> _Code:
        symbol = _FORBIDDEN_BINOPS.get(type(node.op))
        if symbol is not None:
            raise self.error("ML304", f"bitwise operator {symbol!r} is not allowed; use 'and' / 'or'", node)
        name, func = _BINOPS[type(node.op)]
        if (
            isinstance(node.op, ast.Mod)
            and isinstance(node.left, ast.Constant)
            and isinstance(node.left.value, str)
        ):
            raise self.error("ML304", "'%' text formatting is not allowed; join text with +", node)
        left = self.compile(node.left)
        right = self.compile(node.right)
        if left.constant and right.constant:
            return self.fold(node, func, left.value, right.value)
        if isinstance(node.op, ast.Pow) and right.constant:
            # The exponent is known now: refuse x ** 1000 at load time rather than on the first record.
            exponent = right.value
            if is_number(exponent) and abs(exponent) > MAX_EXPONENT:
                raise self.error("ML305", f"exponent {exponent} is larger than {MAX_EXPONENT}", node)
        return _Code(f"{name}({left.text}, {right.text})")

    def visit_IfExp(self, node: ast.IfExp) -> _Code:
        test = self.compile(node.test)
        body = self.compile(node.body)
        orelse = self.compile(node.orelse)
        return _Code(f"({body.text} if {test.text} else {orelse.text})")

    def visit_List(self, node: ast.List) -> _Code:
        return self.collection(node, node.elts, list)

    def visit_Tuple(self, node: ast.Tuple) -> _Code:
        return self.collection(node, node.elts, tuple)

    def visit_Set(self, node: ast.Set) -> _Code:
        return self.collection(node, node.elts, frozenset)

    def collection(self, node: ast.AST, elements: list[ast.expr], kind: Callable[[list[Any]], Any]) -> _Code:
        values: list[Any] = []
        for element in elements:
            code = self.compile(element)
            if not code.constant:
                raise self.error("ML304", "lists may only hold constants", element)
            values.append(code.value)
        if len(values) > MAX_SEQUENCE:
            raise self.error("ML305", f"list longer than {MAX_SEQUENCE:,} items", node)
        try:
            value = kind(values)
        except TypeError:
            raise self.error("ML304", "set members must be plain values", node) from None
        return _Code(self.constant_name(value), value)

    def visit_Compare(self, node: ast.Compare) -> _Code:
        operands = [node.left, *node.comparators]
        codes = [self.compile(o) for o in operands]
        parts: list[str] = []
        # In a chain (a < b < c) the middle operand is evaluated once, through a temporary.
        texts = [c.text for c in codes]
        for i, op in enumerate(node.ops):
            left, right = codes[i], codes[i + 1]
            left_text = texts[i]
            right_text = texts[i + 1]
            if i + 1 < len(node.ops) and not right.constant:
                temp = self.temp()
                right_text = f"({temp} := {right.text})"
                texts[i + 1] = temp
            parts.append(self.comparison(node, op, left, right, left_text, right_text))
        if all(c.constant for c in codes):
            # Fold a constant comparison by running its generated code once.
            return self.literal(self.run_constant(" and ".join(parts), node))
        if len(parts) == 1:
            return _Code(parts[0])
        return _Code("(" + " and ".join(parts) + ")")

    def run_constant(self, text: str, node: ast.AST) -> Any:
        try:
            return eval(text, {**self.namespace, "__builtins__": {}}, {})  # noqa: S307 - text is generated from checked constants
        except EvaluationError as exc:
            raise self.error(exc.code, exc.message, node) from None

    def comparison(self, node: ast.AST, op: ast.cmpop, left: _Code, right: _Code, lt: str, rt: str) -> str:
        if isinstance(op, ast.Eq | ast.NotEq):
            negate = isinstance(op, ast.NotEq)
            if _plain(left) or _plain(right):
                return f"({lt} {'!=' if negate else '=='} {rt})"
            return f"({'not ' if negate else ''}_eq({lt}, {rt}))"
        order = _ORDER_OPS.get(type(op))
        if order is not None:
            symbol, helper, _ = order
            for const_side, other_text, flipped in ((right, lt, False), (left, rt, True)):
                value = const_side.value
                if const_side.constant and (
                    (isinstance(value, int) and not isinstance(value, bool)) or isinstance(value, str)
                ):
                    # Fast path: a constant int compares exactly with int, float and Decimal values,
                    # so only the missing-data guard is needed.
                    temp = self.temp()
                    const_text = const_side.text
                    if flipped:
                        return f"(({temp} := {other_text}) is not None and {const_text} {symbol} {temp})"
                    return f"(({temp} := {other_text}) is not None and {temp} {symbol} {const_text})"
            return f"{helper}({lt}, {rt})"
        if isinstance(op, ast.In | ast.NotIn):
            prefix = "not " if isinstance(op, ast.NotIn) else ""
            if (
                right.constant
                and isinstance(right.value, list | tuple | frozenset)
                and all(v is None or isinstance(v, str | int) for v in right.value)
            ):
                # Constant set of plain values: a frozenset lookup, with a fallback for odd left values.
                members = self.constant_name(frozenset(right.value))
                temp = self.temp()
                return (
                    f"({prefix}({temp} in {members} if _type({temp} := {lt}) in _SCALARS "
                    f"else _contains({members}, {temp})))"
                )
            return f"({prefix}_contains({rt}, {lt}))"
        if isinstance(op, ast.Is | ast.IsNot):
            for side in (left, right):
                if side.constant and (side.value is None or isinstance(side.value, bool)):
                    return f"({lt} {'is not' if isinstance(op, ast.IsNot) else 'is'} {rt})"
            raise self.error("ML304", "'is' only compares with None, True or False; use == for values", node)
        raise self.error("ML304", f"{_describe(op)} is not allowed", node)

    def visit_Call(self, node: ast.Call) -> _Code:
        func = node.func
        if not isinstance(func, ast.Name):
            if isinstance(func, ast.Attribute):
                hint = f"; use the helper {func.attr}(x)" if func.attr in self.helpers else ""
                raise self.error("ML304", f"methods cannot be called (.{func.attr}(...)){hint}", node)
            raise self.error("ML304", "only helper functions can be called", node)
        name = func.id
        helper = self.helpers.get(name)
        if helper is None:
            raise self.error("ML303", self.unknown_function(name), func)
        if node.keywords:
            raise self.error("ML304", f"keyword arguments are not supported ({name}(...))", node.keywords[0])
        count = len(node.args)
        if count < helper.min_args or (helper.max_args is not None and count > helper.max_args):
            raise self.error("ML307", f"{helper.signature} takes {_arity(helper)}, got {count}", node)
        self.functions.add(name)
        args: list[str] = []
        for position, arg in enumerate(node.args):
            if isinstance(arg, ast.Starred):
                raise self.error("ML304", "'*' unpacking is not allowed", arg)
            if position in helper.field_args:
                args.append(self.field_argument(name, arg))
            else:
                args.append(self.compile(arg).text)
        target = f"_h_{name}"
        self.namespace[target] = helper.func
        if helper.needs_context:
            args.insert(0, "ctx")
        return _Code(f"{target}({', '.join(args)})")

    def field_argument(self, helper: str, arg: ast.expr) -> str:
        """`changed(status)` passes the path 'status', not its value."""
        if isinstance(arg, ast.Constant) and isinstance(arg.value, str):
            path = arg.value
            if not path or any(not part or part.startswith("_") for part in path.split(".")):
                raise self.error("ML304", f"{path!r} is not a field path", arg)
            offset, length = self.span(arg)
            self.add_field(path, offset + 1, max(1, length - 2), False, arg)
            return repr(path)
        segments = self.field_path(arg)
        if segments is None or segments[0] in _CONTEXT_ATTRS or segments[0] == "previous":
            raise self.error("ML304", f"{helper}() takes a field of the record, e.g. {helper}(status)", arg)
        path = ".".join(segments)
        offset, length = self.span(arg)
        self.add_field(path, offset, length, False, arg)
        return repr(path)

    def unknown_function(self, name: str) -> str:
        if name in CONTEXT_NAMES:
            return f"{name!r} is a value, not a function: write {name} without ()"
        hint = difflib.get_close_matches(name, list(self.helpers), n=1)
        if hint:
            return f"unknown function {name!r} (did you mean {hint[0]!r}?)"
        return f"unknown function {name!r}; available: {', '.join(sorted(self.helpers))}"


def _plain(code: _Code) -> bool:
    """A constant whose == is exact against any record value (no float/Decimal subtlety)."""
    return code.constant and (code.value is None or isinstance(code.value, str | int))


def _arity(helper: Helper) -> str:
    if helper.max_args is None:
        return f"at least {helper.min_args} argument(s)"
    if helper.min_args == helper.max_args:
        return f"{helper.min_args} argument(s)"
    return f"{helper.min_args} to {helper.max_args} arguments"


def _describe(node: ast.AST) -> str:
    return {
        "Call": "this call",
        "Dict": "a dict literal",
    }.get(type(node).__name__, f"'{type(node).__name__}'")


# Operator and load/store markers are children in `ast` but add no nesting a reader would see.
_LEAF_MARKERS = (ast.expr_context, ast.operator, ast.cmpop, ast.boolop, ast.unaryop)


def _check_size(tree: ast.AST) -> tuple[int, ast.AST] | None:
    """The first node deeper than MAX_DEPTH or beyond MAX_NODES, walked without recursion."""
    stack: list[tuple[ast.AST, int]] = [(tree, 0)]
    count = 0
    while stack:
        node, depth = stack.pop()
        count += 1
        if depth > MAX_DEPTH:
            return depth, node
        if count > MAX_NODES:
            return -count, node
        stack.extend(
            (child, depth + 1) for child in ast.iter_child_nodes(node) if not isinstance(child, _LEAF_MARKERS)
        )
    return None


def compile_expression(
    source: str,
    *,
    helpers: Mapping[str, Helper] = HELPERS,
    max_length: int = MAX_LENGTH,
    known_fields: Collection[str] | None = None,
) -> CompiledExpression:
    """Check `source` against the whitelist and compile it into a Python function, once.

    Raises ExpressionError: ML301 syntax, ML302 unknown field (only when `known_fields` is given),
    ML303 unknown function, ML304 forbidden construct, ML305 too large/unbounded, ML307 wrong
    number of helper arguments.
    """
    if not isinstance(source, str):
        raise TypeError(f"expression source must be str, not {type(source).__name__}")
    if len(source) > max_length:
        raise ExpressionError(
            "ML305",
            f"expression is {len(source):,} characters long; the limit is {max_length:,}",
            offset=0,
            length=len(source),
        )
    if not source.strip():
        raise ExpressionError("ML301", "empty expression", offset=0, length=len(source))
    tree = _parse(source)
    compiler = _Compiler(source, helpers, known_fields)
    too_big = _check_size(tree)
    if too_big is not None:
        size, node = too_big
        what = f"nested more than {MAX_DEPTH} levels deep" if size >= 0 else f"more than {MAX_NODES} parts"
        raise compiler.error("ML305", f"expression is {what}", node)
    body = compiler.compile(tree.body)
    python_source = _function_source(body.text, compiler.uses_record)
    namespace: dict[str, Any] = {**compiler.namespace, "__builtins__": {}, "_SOURCE": source}
    try:
        code = compile(python_source, f"<expression {source[:60]!r}>", "exec")
    except (SyntaxError, RecursionError, MemoryError):
        raise ExpressionError(
            "ML305", "expression is too deeply nested to compile", offset=0, length=len(source)
        ) from None
    exec(code, namespace)  # noqa: S102 - code generated from the whitelisted tree, no builtins
    function = namespace["_expression"]
    # A subclass per expression whose __call__ IS the generated function: calling the object costs
    # no extra Python frame (a delegating __call__ made evaluation ~1.5x slower in the benchmark).
    fast_class: type[CompiledExpression] = type(
        "CompiledExpression", (CompiledExpression,), {"__slots__": (), "__call__": staticmethod(function)}
    )
    return fast_class(
        source=source,
        fields=tuple(compiler.fields),
        functions=frozenset(compiler.functions),
        function=function,
        python_source=python_source,
    )


def _parse(source: str) -> ast.Expression:
    try:
        return ast.parse(source, mode="eval")
    except SyntaxError as exc:
        if "too many nested" in (exc.msg or ""):
            raise ExpressionError(
                "ML305", "expression is nested too deeply", offset=0, length=len(source)
            ) from None
        return _raise_syntax(source, exc)
    except (RecursionError, MemoryError):
        raise ExpressionError(
            "ML305", "expression is nested too deeply to parse", offset=0, length=len(source)
        ) from None
    except ValueError as exc:  # e.g. NUL characters
        raise ExpressionError("ML301", str(exc), offset=0, length=len(source)) from None


_LONE_EQUALS = re.compile(r"(?<![=!<>])=(?!=)")


def _raise_syntax(source: str, exc: SyntaxError) -> ast.Expression:
    message = exc.msg or "invalid syntax"
    if message == "invalid syntax" and _LONE_EQUALS.search(exc.text or ""):
        message += " (compare with ==, not =)"
    if not exc.offset:
        # Python reports offset 0 when the input ends too early ("status =="): point at the end.
        offset, length = len(source.rstrip()), 1
    else:
        offset = _absolute(source, exc.lineno or 1, exc.offset)
        length = 1
        if exc.end_lineno and exc.end_offset:
            length = max(1, _absolute(source, exc.end_lineno, exc.end_offset) - offset)
    raise ExpressionError("ML301", message, offset=offset, length=length) from None


def _absolute(source: str, lineno: int, column: int) -> int:
    """0-based offset in `source` of a SyntaxError (line, 1-based column) position."""
    starts = [0] + [match.end() for match in _LINE_BREAK.finditer(source)]
    lineno = min(max(1, lineno), len(starts))
    line_end = starts[lineno] - 1 if lineno < len(starts) else len(source)
    return max(0, min(starts[lineno - 1] + column - 1, line_end))


def _function_source(body: str, uses_record: bool) -> str:
    # Errors from helpers get the expression source attached; Python errors that slip past the
    # run-time checks (a list where a number was expected...) become ML306, never a crash.
    record = "        rec = ctx.record\n" if uses_record else ""
    return (
        "def _expression(ctx):\n"
        "    try:\n"
        f"{record}"
        f"        return {body}\n"
        "    except (_EngineError, TypeError, ValueError, ArithmeticError, LookupError, AttributeError) as exc:\n"
        "        raise _failure(exc, _SOURCE) from None\n"
    )


__all__ = [
    "MAX_DEPTH",
    "MAX_EXPONENT",
    "MAX_INT_DIGITS",
    "MAX_LENGTH",
    "MAX_SEQUENCE",
    "CompiledExpression",
    "EvaluationContext",
    "FieldRef",
    "compile_expression",
]
