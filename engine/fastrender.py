"""A fast path for the plain message templates: the parsed Jinja tree compiled to one Python function.

Most message templates only print fields, pipe them through a filter (`money`, `date`) and pick a
word with `{% if %}` or `a if b else c`. Jinja renders those through a fresh `Context`, a generator
and per-name `Undefined` checks, which costs several times what the text itself costs. Here such a
template becomes one function `render(values) -> str` that does exactly what Jinja's own compiled
code does for these nodes (`str()` of each value, `environment.getattr` / `getitem`, the filter
called as Jinja calls it, plain Python comparisons and truth tests) with the cheap parts inlined: a
name is a lookup in the values, and `a.b` on a plain dict whose class has no attribute `b` is
`a["b"]` (what the sandbox's getattr falls back to).

It only answers when everything is present. A missing name or key, any exception, or any node
outside the subset makes `compile_fast` return None (no fast path) or the call raise; the caller
then renders through Jinja, which gives the real result or the real error with its line number.
So the fast path can make rendering faster, never different.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from jinja2 import Environment, nodes
from jinja2.utils import _PassArg

FastRender = Callable[[Mapping[str, Any]], str]

# Names Jinja's code generator treats specially (TemplateReference, loop, macros): never a plain lookup.
_SPECIAL_NAMES = frozenset({"self", "loop", "caller", "varargs", "kwargs", "super"})
_COMPARE_OPS = {"eq": "==", "ne": "!=", "gt": ">", "gteq": ">=", "lt": "<", "lteq": "<="}


class _Unsupported(Exception):
    """A node outside the fast subset: the template keeps the plain Jinja path."""


class _Compiler:
    def __init__(self, env: Environment) -> None:
        self.env = env
        self.namespace: dict[str, Any] = {
            "_getattr": env.getattr,
            "_getitem": env.getitem,
            "_str": str,
            "_join": "".join,
            "_dict": dict,
            "_type": type,
        }
        self.temps = 0

    def constant(self, value: Any) -> str:
        name = f"_k{len(self.namespace)}"
        self.namespace[name] = value
        return name

    def temp(self) -> str:
        self.temps += 1
        return f"_t{self.temps}"

    # --- statements: the whole template is one string expression --------------------------------

    def block(self, body: list[nodes.Node]) -> str:
        pieces: list[str] = []
        for node in body:
            if isinstance(node, nodes.Output):
                for child in node.nodes:
                    if isinstance(child, nodes.TemplateData):
                        pieces.append(self.constant(child.data))
                    else:
                        pieces.append(f"_str({self.expr(child)})")
            elif isinstance(node, nodes.If):
                pieces.append(self.branch(node))
            else:
                raise _Unsupported(type(node).__name__)
        if not pieces:
            return self.constant("")
        if len(pieces) == 1:
            return pieces[0]
        # Pieces are evaluated in order, as Jinja yields them, then joined once.
        return f"_join(({', '.join(pieces)},))"

    def branch(self, node: nodes.If) -> str:
        """`{% if %}...{% elif %}...{% else %}...{% endif %}` as nested `a if test else b`."""
        otherwise = self.block(node.else_)
        for alternative in reversed(node.elif_):
            otherwise = f"({self.block(alternative.body)} if {self.expr(alternative.test)} else {otherwise})"
        return f"({self.block(node.body)} if {self.expr(node.test)} else {otherwise})"

    # --- expressions -----------------------------------------------------------------------------

    def expr(self, node: nodes.Node) -> str:
        if isinstance(node, nodes.Name):
            if node.ctx != "load" or node.name in _SPECIAL_NAMES:
                raise _Unsupported("name")
            return f"_v[{self.constant(node.name)}]"
        if isinstance(node, nodes.Const):
            return self.constant(node.value)
        if isinstance(node, nodes.Getattr):
            target = self.expr(node.node)
            attr = node.attr
            if attr.isidentifier() and not attr.startswith("_") and not hasattr(dict, attr):
                # The sandbox's getattr on a dict without such an attribute reads the key.
                temp = self.temp()
                return (
                    f"({temp}[{self.constant(attr)}] if _type({temp} := {target}) is _dict "
                    f"else _getattr({temp}, {self.constant(attr)}))"
                )
            return f"_getattr({target}, {self.constant(attr)})"
        if isinstance(node, nodes.Getitem):
            if isinstance(node.arg, nodes.Slice):
                raise _Unsupported("slice")
            return f"_getitem({self.expr(node.node)}, {self.expr(node.arg)})"
        if isinstance(node, nodes.Filter):
            return self.filter(node)
        if isinstance(node, nodes.CondExpr):
            if node.expr2 is None:
                raise _Unsupported("if without else")
            return f"({self.expr(node.expr1)} if {self.expr(node.test)} else {self.expr(node.expr2)})"
        if isinstance(node, nodes.Compare):
            parts = [self.expr(node.expr)]
            for operand in node.ops:
                symbol = _COMPARE_OPS.get(operand.op)
                if symbol is None:
                    raise _Unsupported(operand.op)
                parts.append(f"{symbol} {self.expr(operand.expr)}")
            return "(" + " ".join(parts) + ")"
        if isinstance(node, nodes.Not):
            return f"(not {self.expr(node.node)})"
        if isinstance(node, nodes.And | nodes.Or):
            word = "and" if isinstance(node, nodes.And) else "or"
            return f"({self.expr(node.left)} {word} {self.expr(node.right)})"
        raise _Unsupported(type(node).__name__)

    def filter(self, node: nodes.Filter) -> str:
        func = self.env.filters.get(node.name)
        if (
            func is None
            or node.node is None
            or node.dyn_args is not None
            or node.dyn_kwargs is not None
            or _PassArg.from_obj(func) is not None
        ):
            raise _Unsupported(f"filter {node.name}")
        args = [self.expr(node.node), *(self.expr(arg) for arg in node.args)]
        for keyword in node.kwargs:
            key = getattr(keyword, "key", None)
            if not isinstance(key, str) or not key.isidentifier():
                raise _Unsupported("keyword")
            args.append(f"{key}={self.expr(keyword.value)}")
        return f"{self.constant(func)}({', '.join(args)})"


def compile_fast(env: Environment, tree: nodes.Template) -> FastRender | None:
    """The template as one Python function, or None when it uses anything outside the subset."""
    compiler = _Compiler(env)
    try:
        body = compiler.block(tree.body)
    except _Unsupported:
        return None
    source = f"def _render(_v):\n    return {body}\n"
    namespace: dict[str, Any] = {**compiler.namespace, "__builtins__": {}}
    try:
        code = compile(source, "<message template fast path>", "exec")
    except (SyntaxError, RecursionError, MemoryError, ValueError):
        return None
    exec(code, namespace)  # noqa: S102 - generated from a parsed template, only the names put above
    function: FastRender = namespace["_render"]
    return function


__all__ = ["FastRender", "compile_fast"]
