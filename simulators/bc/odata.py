"""The OData subset Business Central's API pages answer, as the simulator understands it.

`$filter`: eq ne gt ge lt le, and, or, not, parentheses, startswith/endswith/contains, tolower/toupper;
literals: 'strings' (with '' escapes), numbers, true/false/null, GUIDs (bare or quoted), dates and
unquoted datetimes. `or` across different fields is refused as BC refuses it
(BC docs webservices/odata-known-limitations).
`$select` and `$expand` (with nested `$select`/`$expand`) are parsed here too.

BC docs pages are cited by their path under
https://learn.microsoft.com/dynamics365/business-central/dev-itpro/.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, date, datetime
from typing import Any


class ODataQueryError(ValueError):
    """A query BC would refuse with 400; `code` is BC's error code."""

    def __init__(self, message: str, code: str = "BadRequest") -> None:
        super().__init__(message)
        self.code = code


_TOKEN = re.compile(
    r"""
    (?P<ws>\s+)
  | (?P<punct>[(),])
  | (?P<string>'(?:[^']|'')*')
  | (?P<guid>[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}(?![\w-]))
  | (?P<datetime>\d{4}-\d{2}-\d{2}T\d{2}:\d{2}(?::\d{2}(?:\.\d+)?)?(?:Z|[+-]\d{2}:\d{2}))
  | (?P<date>\d{4}-\d{2}-\d{2}(?![\w:]))
  | (?P<number>-?\d+(?:\.\d+)?(?:[eE][+-]?\d+)?[mMdDfF]?)
  | (?P<name>[A-Za-z_][A-Za-z0-9_/]*)
    """,
    re.VERBOSE,
)

_COMPARE = {"eq", "ne", "gt", "ge", "lt", "le"}
_GUID_TEXT = re.compile(r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$")


@dataclass(frozen=True)
class Token:
    kind: str
    text: str
    pos: int


@dataclass(frozen=True)
class Literal:
    kind: str  # string | guid | datetime | date | number | bool | null
    value: Any


@dataclass(frozen=True)
class FieldRef:
    name: str
    transform: str = ""  # "", "tolower", "toupper"


Predicate = Callable[[dict[str, Any]], bool]


@dataclass(frozen=True)
class Filter:
    predicate: Predicate
    fields: frozenset[str]


def _tokens(text: str) -> list[Token]:
    out: list[Token] = []
    pos = 0
    while pos < len(text):
        match = _TOKEN.match(text, pos)
        if not match:
            raise ODataQueryError(f"Syntax error at position {pos} in '{text}'.")
        kind = match.lastgroup or ""
        if kind != "ws":
            out.append(Token(kind, match.group(), pos))
        pos = match.end()
    return out


def parse_datetime(text: str) -> datetime:
    moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC)


class _Parser:
    def __init__(self, text: str, known_fields: set[str], type_name: str) -> None:
        self.text = text
        self.tokens = _tokens(text)
        self.i = 0
        self.known = known_fields
        self.type_name = type_name

    def peek(self) -> Token | None:
        return self.tokens[self.i] if self.i < len(self.tokens) else None

    def take(self, text: str | None = None) -> Token:
        tok = self.peek()
        if tok is None or (text is not None and tok.text.lower() != text):
            where = f"position {tok.pos}" if tok else "the end"
            raise ODataQueryError(f"Syntax error at {where} in '{self.text}': expected {text or 'more'}.")
        self.i += 1
        return tok

    def is_word(self, word: str) -> bool:
        tok = self.peek()
        return tok is not None and tok.kind == "name" and tok.text.lower() == word

    def parse(self) -> Filter:
        result = self.or_expr()
        if self.peek() is not None:
            tok = self.peek()
            assert tok is not None
            raise ODataQueryError(f"Syntax error at position {tok.pos} in '{self.text}'.")
        return result

    def or_expr(self) -> Filter:
        parts = [self.and_expr()]
        while self.is_word("or"):
            self.take()
            parts.append(self.and_expr())
        if len(parts) == 1:
            return parts[0]
        fields = frozenset().union(*(p.fields for p in parts))
        if len(fields) > 1:
            # BC cannot turn an `or` over several fields into one record filter (odata-known-limitations).
            raise ODataQueryError(
                "The 'or' operator is not supported across different fields: "
                + ", ".join(sorted(fields))
                + ".",
                code="BadRequest_NotSupported",
            )
        preds = [p.predicate for p in parts]
        return Filter(lambda r: any(p(r) for p in preds), fields)

    def and_expr(self) -> Filter:
        parts = [self.unary()]
        while self.is_word("and"):
            self.take()
            parts.append(self.unary())
        if len(parts) == 1:
            return parts[0]
        preds = [p.predicate for p in parts]
        return Filter(lambda r: all(p(r) for p in preds), frozenset().union(*(p.fields for p in parts)))

    def unary(self) -> Filter:
        if self.is_word("not"):
            self.take()
            inner = self.unary()
            return Filter(lambda r: not inner.predicate(r), inner.fields)
        tok = self.peek()
        if tok is not None and tok.text == "(":
            self.take("(")
            inner = self.or_expr()
            self.take(")")
            return inner
        if (
            tok is not None
            and tok.kind == "name"
            and tok.text.lower() in {"startswith", "endswith", "contains"}
        ):
            return self.string_function()
        return self.comparison()

    def field(self) -> FieldRef:
        tok = self.take()
        if tok.kind == "name" and tok.text.lower() in {"tolower", "toupper"}:
            self.take("(")
            inner = self.field()
            self.take(")")
            return FieldRef(inner.name, tok.text.lower())
        if tok.kind != "name":
            raise ODataQueryError(
                f"Syntax error at position {tok.pos} in '{self.text}': expected a field name."
            )
        if tok.text not in self.known:
            raise ODataQueryError(
                f"Could not find a property named '{tok.text}' on type 'Microsoft.NAV.{self.type_name}'.",
                code="BadRequest_NotFound",
            )
        return FieldRef(tok.text)

    def literal(self) -> Literal:
        tok = self.take()
        if tok.kind == "string":
            text = tok.text[1:-1].replace("''", "'")
            return Literal("guid", text.lower()) if _GUID_TEXT.match(text) else Literal("string", text)
        if tok.kind == "guid":
            return Literal("guid", tok.text.lower())
        if tok.kind == "datetime":
            return Literal("datetime", parse_datetime(tok.text))
        if tok.kind == "date":
            return Literal("date", date.fromisoformat(tok.text))
        if tok.kind == "number":
            return Literal("number", float(tok.text.rstrip("mMdDfF")))
        if tok.kind == "name" and tok.text.lower() in {"true", "false"}:
            return Literal("bool", tok.text.lower() == "true")
        if tok.kind == "name" and tok.text.lower() == "null":
            return Literal("null", None)
        raise ODataQueryError(f"Syntax error at position {tok.pos} in '{self.text}': expected a value.")

    def comparison(self) -> Filter:
        ref = self.field()
        op_tok = self.take()
        op = op_tok.text.lower()
        if op not in _COMPARE:
            raise ODataQueryError(
                f"Syntax error at position {op_tok.pos} in '{self.text}': unknown operator."
            )
        lit = self.literal()
        return Filter(_compare(ref, op, lit), frozenset({ref.name}))

    def string_function(self) -> Filter:
        name = self.take().text.lower()
        self.take("(")
        ref = self.field()
        self.take(",")
        lit = self.literal()
        self.take(")")
        if lit.kind not in {"string", "guid"}:
            raise ODataQueryError(f"{name} needs a string value in '{self.text}'.")
        needle = str(lit.value)

        def test(record: dict[str, Any]) -> bool:
            value = _transform(str(record.get(ref.name) or ""), ref.transform)
            if name == "startswith":
                return value.startswith(needle)
            if name == "endswith":
                return value.endswith(needle)
            return needle in value

        return Filter(test, frozenset({ref.name}))


def _transform(value: str, how: str) -> str:
    return value.lower() if how == "tolower" else value.upper() if how == "toupper" else value


def _coerce(value: Any, lit: Literal) -> Any:
    if value is None:
        return None
    if lit.kind == "guid":
        return str(value).lower()
    if lit.kind == "datetime":
        text = str(value)
        return parse_datetime(text) if "T" in text else datetime.fromisoformat(text).replace(tzinfo=UTC)
    if lit.kind == "date":
        return date.fromisoformat(str(value)[:10])
    if lit.kind == "number":
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ODataQueryError(f"Cannot compare a {type(value).__name__} field with a number.")
        return float(value)
    if lit.kind == "bool":
        if not isinstance(value, bool):
            raise ODataQueryError("Cannot compare a non-boolean field with true/false.")
        return value
    return str(value)


def _compare(ref: FieldRef, op: str, lit: Literal) -> Predicate:
    def test(record: dict[str, Any]) -> bool:
        raw = record.get(ref.name)
        if ref.transform and raw is not None:
            raw = _transform(str(raw), ref.transform)
        if lit.kind == "null":
            return (raw is None) if op == "eq" else (raw is not None) if op == "ne" else False
        left = _coerce(raw, lit)
        right = lit.value
        if left is None:
            return op == "ne"
        if op == "eq":
            return bool(left == right)
        if op == "ne":
            return bool(left != right)
        if op == "gt":
            return bool(left > right)
        if op == "ge":
            return bool(left >= right)
        if op == "lt":
            return bool(left < right)
        return bool(left <= right)

    return test


def parse_filter(text: str, known_fields: set[str], type_name: str) -> Filter:
    if not text.strip():
        raise ODataQueryError("The $filter expression is empty.")
    return _Parser(text, known_fields, type_name).parse()


def split_top_level(text: str) -> list[str]:
    """Split on commas outside parentheses: `customer($select=a,b),vendor` -> two items."""
    parts: list[str] = []
    depth = 0
    start = 0
    for i, ch in enumerate(text):
        if ch == "(":
            depth += 1
        elif ch == ")":
            depth -= 1
            if depth < 0:
                raise ODataQueryError(f"Unbalanced parentheses in '{text}'.")
        elif ch == "," and depth == 0:
            parts.append(text[start:i].strip())
            start = i + 1
    if depth:
        raise ODataQueryError(f"Unbalanced parentheses in '{text}'.")
    parts.append(text[start:].strip())
    return [p for p in parts if p]


@dataclass(frozen=True)
class ExpandItem:
    name: str
    select: tuple[str, ...] | None
    expand: tuple[ExpandItem, ...]


def parse_expand(text: str) -> tuple[ExpandItem, ...]:
    items: list[ExpandItem] = []
    for part in split_top_level(text):
        name, _, rest = part.partition("(")
        select: tuple[str, ...] | None = None
        nested: tuple[ExpandItem, ...] = ()
        if rest:
            if not rest.endswith(")"):
                raise ODataQueryError(f"Syntax error in $expand '{text}'.")
            for option in _split_options(rest[:-1]):
                key, _, value = option.partition("=")
                if key.strip() == "$select":
                    select = tuple(s.strip() for s in value.split(",") if s.strip())
                elif key.strip() == "$expand":
                    nested = parse_expand(value)
                else:
                    raise ODataQueryError(
                        f"The query option '{key.strip()}' is not supported inside $expand."
                    )
        items.append(ExpandItem(name.strip(), select, nested))
    return tuple(items)


def _split_options(text: str) -> list[str]:
    """Nested options are separated by ';' outside parentheses."""
    parts: list[str] = []
    depth = 0
    start = 0
    for i, ch in enumerate(text):
        if ch == "(":
            depth += 1
        elif ch == ")":
            depth -= 1
        elif ch == ";" and depth == 0:
            parts.append(text[start:i])
            start = i + 1
    parts.append(text[start:])
    return [p.strip() for p in parts if p.strip()]


def parse_select(text: str) -> tuple[str, ...]:
    return tuple(s.strip() for s in text.split(",") if s.strip())
