"""Message templates: a locked-down Jinja sandbox, finance filters, and SMS segment counting.

Templates are plain text (no HTML escaping) rendered with StrictUndefined, so a misspelt variable is
an error with a line number, never an empty gap in a message to a customer.

On top of Jinja's immutable sandbox (no private attributes, no mutation of lists and dicts):
- only listed filters, globals and string methods are available (no `format`, `center`, `lipsum`,
  `batch`...: each of those can build a gigabyte from a short template);
- `+ * ** % ~` and `range` are bounded; `%` never formats text;
- every loop stops after MAX_LOOP items; loops may not nest, recurse or live in macros; templates are
  self-contained (no include / import / extends / block);
- output is cut off with ML204 beyond MAX_OUTPUT characters.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from datetime import date, datetime
from decimal import ROUND_HALF_UP, Decimal
from pathlib import Path
from types import TracebackType
from typing import Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import jinja2
import jinja2.meta
from jinja2 import nodes
from jinja2.exceptions import SecurityError
from jinja2.sandbox import ImmutableSandboxedEnvironment
from jinja2.visitor import NodeTransformer

from engine.errors import EngineError, TemplateError
from engine.fastrender import FastRender, compile_fast
from engine.functions import MAX_MONEY_PLACES, to_date, to_datetime, to_decimal
from engine.phones import mask

MAX_OUTPUT = 20_000
MAX_LOOP = 1_000
MAX_TEXT = 10_000

_SAFE_FILTERS = (
    "abs",
    "capitalize",
    "count",
    "d",
    "default",
    "dictsort",
    "first",
    "float",
    "int",
    "items",
    "last",
    "length",
    "list",
    "lower",
    "map",
    "max",
    "min",
    "reject",
    "rejectattr",
    "round",
    "select",
    "selectattr",
    "sort",
    "string",
    "sum",
    "title",
    "trim",
    "truncate",
    "unique",
    "upper",
    "wordcount",
)
# Methods a template may call on values; everything else (format, center, replace, join...) is refused.
_SAFE_METHODS = frozenset(
    {
        "get",
        "items",
        "keys",
        "values",
        "upper",
        "lower",
        "title",
        "capitalize",
        "strip",
        "lstrip",
        "rstrip",
        "startswith",
        "endswith",
        "isdigit",
        "split",
    }
)
_CONCAT_FILTER = "mlc_concat"
_LOOP_FILTER = "mlc_loop"


# --- filters -------------------------------------------------------------------------------------


def money(amount: Any, currency: str | None = "", places: int = 2) -> str:
    """ "GBP 1,234.50": an amount rounded half away from zero, grouped, with an optional currency code."""
    if isinstance(places, bool) or not isinstance(places, int) or not 0 <= places <= MAX_MONEY_PLACES:
        raise ValueError(f"money: places must be an integer 0-{MAX_MONEY_PLACES}, got {places!r}")
    value = to_decimal(amount)
    if value is None:
        raise ValueError("money: no amount (the value is missing)")
    rounded = value.quantize(Decimal(1).scaleb(-places), rounding=ROUND_HALF_UP)
    text = f"{rounded:,.{places}f}"
    if text.startswith("-") and rounded == 0:
        text = text[1:]  # -0.00 after rounding is just 0.00
    return f"{currency} {text}" if currency else text


def format_date(value: Any, fmt: str = "%d %b %Y", tz: str | None = None) -> str:
    """A date or date-time (value or ISO string) with strftime `fmt`, optionally in time zone `tz`."""
    if value is None:
        raise ValueError("date: no value (the field is missing)")
    moment: date | datetime | None
    if isinstance(value, datetime) or (isinstance(value, str) and "T" in value):
        moment = to_datetime(value)
        if moment is not None and tz is not None:
            try:
                moment = moment.astimezone(ZoneInfo(tz))
            except (ZoneInfoNotFoundError, ValueError):
                raise ValueError(f"date: unknown time zone {tz!r}") from None
    else:
        moment = to_date(value)
    if moment is None:
        raise ValueError(f"date: {value!r} is an empty date")
    return moment.strftime(fmt)


def phone_mask(value: Any) -> str:
    """A phone number with the middle digits hidden, for messages that quote a number."""
    if value is None:
        raise ValueError("phone_mask: no number (the value is missing)")
    return mask(str(value))


def _join(value: Iterable[Any], separator: str = "") -> str:
    items = [str(v) for v in value]
    total = sum(len(i) for i in items) + len(separator) * max(0, len(items) - 1)
    if total > MAX_TEXT:
        raise SecurityError(f"join would build {total:,} characters (limit {MAX_TEXT:,})")
    return separator.join(items)


def _concat(values: list[Any]) -> str:
    parts = [str(v) for v in values]
    if sum(len(p) for p in parts) > MAX_TEXT:
        raise SecurityError(f"'~' would build more than {MAX_TEXT:,} characters")
    return "".join(parts)


def _bounded_loop(value: Any) -> Iterator[Any]:
    for count, item in enumerate(value):
        if count >= MAX_LOOP:
            raise SecurityError(f"a loop may run at most {MAX_LOOP:,} times")
        yield item


def _range(*args: int) -> range:
    result = range(*args)
    if len(result) > MAX_LOOP:
        raise SecurityError(f"range() of {len(result):,} items is over the limit of {MAX_LOOP:,}")
    return result


# --- the environment -----------------------------------------------------------------------------


def _size(value: Any) -> int | None:
    return len(value) if isinstance(value, str | list | tuple) else None


class _Rewriter(NodeTransformer):
    """Checks a parsed template and routes `~` and loops through bounded filters."""

    def __init__(self, name: str | None) -> None:
        self.name = name or "<template>"
        self.loop_depth = 0

    def forbid(self, node: nodes.Node, what: str) -> TemplateError:
        return TemplateError(
            "ML204", f"{what} are not allowed in message templates", template=self.name, line=node.lineno
        )

    def visit_For(self, node: nodes.For) -> nodes.Node:
        if node.recursive:
            raise self.forbid(node, "recursive loops")
        if self.loop_depth:
            raise self.forbid(node, "nested loops")
        node.iter = self._filter(self.visit(node.iter), _LOOP_FILTER, node.lineno)
        self.loop_depth += 1
        try:
            node.target = self.visit(node.target)
            node.body = [self.visit(child) for child in node.body]
        finally:
            self.loop_depth -= 1
        node.else_ = [self.visit(child) for child in node.else_]
        if node.test is not None:
            node.test = self.visit(node.test)
        return node

    def visit_Macro(self, node: nodes.Macro) -> nodes.Node:
        raise self.forbid(node, "macros")

    def visit_Block(self, node: nodes.Block) -> nodes.Node:
        # Without extends a block is pointless, and self.name() would call one from inside a loop.
        raise self.forbid(node, "blocks")

    def visit_CallBlock(self, node: nodes.CallBlock) -> nodes.Node:
        raise self.forbid(node, "call blocks")

    def visit_Include(self, node: nodes.Include) -> nodes.Node:
        raise self.forbid(node, "includes (templates are self-contained)")

    def visit_Import(self, node: nodes.Import) -> nodes.Node:
        raise self.forbid(node, "imports (templates are self-contained)")

    def visit_FromImport(self, node: nodes.FromImport) -> nodes.Node:
        raise self.forbid(node, "imports (templates are self-contained)")

    def visit_Extends(self, node: nodes.Extends) -> nodes.Node:
        raise self.forbid(node, "extends (templates are self-contained)")

    def visit_Concat(self, node: nodes.Concat) -> nodes.Node:
        items = [self.visit(child) for child in node.nodes]
        return self._filter(nodes.List(items, lineno=node.lineno), _CONCAT_FILTER, node.lineno)

    @staticmethod
    def _filter(value: nodes.Expr, name: str, lineno: int) -> nodes.Filter:
        return nodes.Filter(value, name, [], [], None, None, lineno=lineno)


class MessageEnvironment(ImmutableSandboxedEnvironment):
    """The sandbox message templates render in (see the module docstring for what it refuses)."""

    intercepted_binops = frozenset({"+", "*", "**", "%", "//", "/"})

    def _parse(self, source: str, name: str | None, filename: str | None) -> nodes.Template:
        tree = super()._parse(source, name, filename)
        result = _Rewriter(name).visit(tree)
        assert isinstance(result, nodes.Template)
        return result

    def is_safe_attribute(self, obj: Any, attr: str, value: Any) -> bool:
        if not super().is_safe_attribute(obj, attr, value):
            return False
        if callable(value) and not isinstance(obj, Mapping):
            return attr in _SAFE_METHODS
        return True

    def wrap_str_format(self, value: Any) -> Callable[..., str] | None:
        # No sandboxed str.format either: '{:>999999999}'.format(1) is a gigabyte. The attribute check
        # above then refuses `format` like any other unlisted method.
        return None

    def call_binop(self, context: jinja2.runtime.Context, operator_: str, left: Any, right: Any) -> Any:
        if operator_ == "%" and isinstance(left, str):
            raise SecurityError("'%' text formatting is not allowed")
        if operator_ == "**" and isinstance(right, int | float) and abs(right) > 100:
            raise SecurityError(f"exponent {right} is over the limit of 100")
        if (
            operator_ == "**"
            and isinstance(left, int)
            and isinstance(right, int)
            and left.bit_length() * right > 400
        ):
            raise SecurityError("power result is too large")
        if operator_ == "*":
            for seq, times in ((left, right), (right, left)):
                length = _size(seq)
                if length is not None and isinstance(times, int) and length * times > MAX_TEXT:
                    raise SecurityError(f"repeat would build more than {MAX_TEXT:,} items")
            if (
                isinstance(left, int)
                and isinstance(right, int)
                and left.bit_length() + right.bit_length() > 400
            ):
                raise SecurityError("product is too large")
        if operator_ == "+":
            a, b = _size(left), _size(right)
            if a is not None and b is not None and a + b > MAX_TEXT:
                raise SecurityError(f"'+' would build more than {MAX_TEXT:,} items")
        return super().call_binop(context, operator_, left, right)


def make_environment(
    templates_dir: Path | None = None, *, templates: Mapping[str, str] | None = None
) -> ImmutableSandboxedEnvironment:
    """The sandboxed environment for a templates folder and/or in-memory templates (those win)."""
    loaders: list[jinja2.BaseLoader] = []
    if templates is not None:
        loaders.append(jinja2.DictLoader(dict(templates)))
    if templates_dir is not None:
        loaders.append(jinja2.FileSystemLoader(str(templates_dir), encoding="utf-8"))
    if not loaders:
        raise ValueError("make_environment needs templates_dir or templates")
    env = MessageEnvironment(
        loader=loaders[0] if len(loaders) == 1 else jinja2.ChoiceLoader(loaders),
        undefined=jinja2.StrictUndefined,
        autoescape=False,
        keep_trailing_newline=False,
        auto_reload=False,
    )
    builtin_filters = env.filters
    env.filters = {name: builtin_filters[name] for name in _SAFE_FILTERS}
    env.filters.update(
        {
            "money": money,
            "date": format_date,
            "phone_mask": phone_mask,
            "join": _join,
            _CONCAT_FILTER: _concat,
            _LOOP_FILTER: _bounded_loop,
        }
    )
    env.globals = {"range": _range, "dict": dict}
    return env


# --- compiling and rendering ---------------------------------------------------------------------


class CompiledTemplate:
    """A template loaded and compiled once; `render` turns a context into the message body."""

    __slots__ = ("_fast", "_template", "name", "variables")

    def __init__(
        self,
        name: str,
        template: jinja2.Template,
        variables: frozenset[str],
        fast: FastRender | None = None,
    ) -> None:
        self.name = name
        self._template = template
        # Top-level names the template reads (for lint: e.g. a variable no record provides).
        self.variables = variables
        # The same template as one Python function (engine.fastrender), when it is plain enough.
        self._fast = fast

    @property
    def has_fast_path(self) -> bool:
        return self._fast is not None

    def render(self, context: Mapping[str, Any]) -> str:
        """The body with trailing newlines removed; TemplateError ML203 / ML204 with the template line."""
        fast = self._fast
        if fast is not None:
            text: str | None
            try:
                text = fast(context)
            except Exception:  # Jinja below renders it again and reports the real error
                text = None
            if text is not None and len(text) <= MAX_OUTPUT:
                return text.rstrip("\r\n")
        return self._render_jinja(context)

    def _render_jinja(self, context: Mapping[str, Any]) -> str:
        chunks: list[str] = []
        size = 0
        try:
            for chunk in self._template.generate(context):
                size += len(chunk)
                if size > MAX_OUTPUT:
                    raise TemplateError(
                        "ML204",
                        f"output is longer than {MAX_OUTPUT:,} characters",
                        template=self.name,
                        line=None,
                    )
                chunks.append(chunk)
        except TemplateError:
            raise
        except SecurityError as exc:
            raise TemplateError("ML204", str(exc), template=self.name, line=self._line(exc)) from None
        except jinja2.UndefinedError as exc:
            raise TemplateError("ML203", str(exc), template=self.name, line=self._line(exc)) from None
        except RecursionError as exc:
            raise TemplateError(
                "ML204", "recursion is not allowed", template=self.name, line=self._line(exc)
            ) from None
        except EngineError as exc:
            message = getattr(exc, "message", str(exc))
            raise TemplateError("ML203", message, template=self.name, line=self._line(exc)) from None
        except Exception as exc:  # a filter given bad data, a type error in an expression...
            raise TemplateError(
                "ML203", f"{type(exc).__name__}: {exc}", template=self.name, line=self._line(exc)
            ) from None
        return "".join(chunks).rstrip("\r\n")

    def _line(self, exc: BaseException) -> int | None:
        # Jinja rewrites tracebacks so template frames carry the template's file name and line.
        filename = self._template.filename or "<template>"
        line: int | None = None
        tb: TracebackType | None = exc.__traceback__
        while tb is not None:
            if tb.tb_frame.f_code.co_filename == filename:
                line = tb.tb_lineno
            tb = tb.tb_next
        return line


def compile_template(env: ImmutableSandboxedEnvironment, name: str) -> CompiledTemplate:
    """Load and compile a template by name; TemplateError ML201 (syntax), ML202 (missing), ML204."""
    try:
        template = env.get_template(name)
    except jinja2.TemplateNotFound as exc:
        known = env.list_templates() if env.loader is not None and _can_list(env) else []
        hint = difflib.get_close_matches(name, known, n=1)
        suggestion = f" (did you mean {hint[0]!r}?)" if hint else ""
        missing = exc.name if isinstance(exc.name, str) else name
        raise TemplateError("ML202", f"template {missing!r} not found{suggestion}", template=name) from None
    except jinja2.TemplateSyntaxError as exc:
        raise TemplateError("ML201", _syntax_message(env, exc), template=name, line=exc.lineno) from None
    assert env.loader is not None
    source, _, _ = env.loader.get_source(env, name)
    tree = env.parse(source)
    fast = compile_fast(env, tree)
    variables = jinja2.meta.find_undeclared_variables(tree)
    return CompiledTemplate(name, template, frozenset(variables), fast)


def _can_list(env: ImmutableSandboxedEnvironment) -> bool:
    try:
        env.list_templates()
    except (TypeError, OSError):
        return False
    return True


_NO_FILTER = re.compile(r"No filter named '([^']+)'")


def _syntax_message(env: ImmutableSandboxedEnvironment, exc: jinja2.TemplateSyntaxError) -> str:
    message = exc.message or "syntax error"
    match = _NO_FILTER.search(message)
    if match:
        public = [f for f in env.filters if not f.startswith("mlc_")]
        hint = difflib.get_close_matches(match.group(1), public, n=1)
        if hint:
            message += f" (did you mean {hint[0]!r}?)"
    return message


# --- SMS segments --------------------------------------------------------------------------------

# GSM 03.38 default alphabet (ESC excluded: it only introduces the extension table).
_GSM_BASIC = frozenset(
    "@£$¥èéùìòÇ\nØø\rÅåΔ_ΦΓΛΩΠΨΣΘΞÆæßÉ !\"#¤%&'()*+,-./0123456789:;<=>?"
    "¡ABCDEFGHIJKLMNOPQRSTUVWXYZÄÖÑÜ§¿abcdefghijklmnopqrstuvwxyzäöñüà"
)
# Extension table: each costs two septets (ESC + the character).
_GSM_EXTENSION = frozenset("^{}\\[~]|€\f")


@dataclass(frozen=True)
class SegmentInfo:
    """How a body is sent: encoding, its length in septets (GSM-7) or UTF-16 units (UCS-2), segments."""

    encoding: Literal["GSM-7", "UCS-2"]
    characters: int
    segments: int


def _pack(costs: list[int], single: int, multi: int) -> int:
    total = sum(costs)
    if total == 0:
        return 0
    if total <= single:
        return 1
    # A two-unit character (escape pair, surrogate pair) is never split across segments.
    segments, used = 1, 0
    for cost in costs:
        if used + cost > multi:
            segments += 1
            used = 0
        used += cost
    return segments


_GSM_ALL = _GSM_BASIC | _GSM_EXTENSION
# Finds the first character outside the basic table: none means plain GSM-7, one unit each.
_OUTSIDE_GSM_BASIC = re.compile("[^" + "".join(sorted(re.escape(ch) for ch in _GSM_BASIC)) + "]")


def _even(units: int, single: int, multi: int) -> int:
    """_pack when every character costs one unit: no pair to keep together."""
    if units == 0:
        return 0
    return 1 if units <= single else -(-units // multi)


# The ASCII characters of the basic table, as bytes: deleting them from an ASCII body leaves nothing
# exactly when the body is plain GSM-7 (a table lookup per byte, several times cheaper than the regex).
_GSM_BASIC_ASCII = bytes(sorted(ord(ch) for ch in _GSM_BASIC if ch.isascii()))


def is_gsm_basic(body: str) -> bool:
    """Every character of `body` is in the GSM 03.38 basic table (one septet each)."""
    if body.isascii():
        return not body.encode("ascii").translate(None, _GSM_BASIC_ASCII)
    return _OUTSIDE_GSM_BASIC.search(body) is None


def segment_count(body: str) -> int:
    """sms_segments(body).segments."""
    if is_gsm_basic(body):
        return _even(len(body), 160, 153)
    return sms_segments(body).segments


def sms_segments(body: str) -> SegmentInfo:
    """GSM-7 when every character is in the GSM alphabet (160 / 153 per part), else UCS-2 (70 / 67)."""
    # Counted once per planned message: the commonest body (basic GSM only) is one regex scan; the
    # per-character packing is only needed when a two-unit character is present.
    if is_gsm_basic(body):
        return SegmentInfo("GSM-7", len(body), _even(len(body), 160, 153))
    chars = set(body)
    if chars <= _GSM_ALL:
        if chars.isdisjoint(_GSM_EXTENSION):
            return SegmentInfo("GSM-7", len(body), _even(len(body), 160, 153))
        costs = [2 if ch in _GSM_EXTENSION else 1 for ch in body]
        return SegmentInfo("GSM-7", sum(costs), _pack(costs, 160, 153))
    if max(chars) <= "\uffff":
        return SegmentInfo("UCS-2", len(body), _even(len(body), 70, 67))
    costs = [2 if ord(ch) > 0xFFFF else 1 for ch in body]
    return SegmentInfo("UCS-2", sum(costs), _pack(costs, 70, 67))


__all__ = [
    "MAX_LOOP",
    "MAX_OUTPUT",
    "MAX_TEXT",
    "CompiledTemplate",
    "MessageEnvironment",
    "SegmentInfo",
    "compile_template",
    "format_date",
    "make_environment",
    "money",
    "phone_mask",
    "segment_count",
    "sms_segments",
]
