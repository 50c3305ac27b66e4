"""Safe YAML reading that keeps positions: compose a node tree, check it, then construct data.

Why not `yaml.safe_load`: it forgets where things are (diagnostics need line:col for every pydantic
error loc), silently keeps the last of two duplicate keys, reads `NO`/`on`/`yes` as booleans and
`21:00` as the base-60 number 1260 (YAML 1.1), and expands aliases without bound (billion laughs).
Here the document is composed first (aliases stay shared nodes), bounded in size, depth and
alias expansion, scanned for those traps, and only then constructed with the safe constructor.
Dates stay strings, as in BC's JSON.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import yaml
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

MAX_BYTES = 256 * 1024
MAX_DEPTH = 40
MAX_NODES = 20_000  # after alias expansion

_STANDARD_TAGS = frozenset(
    "tag:yaml.org,2002:" + name for name in ("str", "int", "float", "bool", "null", "map", "seq")
)
_BASE60 = re.compile(r"^[-+]?[0-9][0-9_]*(:[0-5]?[0-9])+(\.[0-9_]*)?$")


@dataclass(frozen=True)
class Position:
    line: int  # 1-based
    col: int  # 1-based


@dataclass(frozen=True)
class YamlIssue:
    code: str
    message: str
    position: Position


class YamlError(Exception):
    """The document could not be read at all; `issue` says where and why."""

    def __init__(self, issue: YamlIssue) -> None:
        super().__init__(issue.message)
        self.issue = issue


class _Loader(yaml.SafeLoader):
    """SafeLoader without the timestamp resolver (dates stay text) and with a depth bound."""

    yaml_implicit_resolvers = {  # noqa: RUF012 - PyYAML reads this class attribute
        first: [(tag, regexp) for tag, regexp in resolvers if tag != "tag:yaml.org,2002:timestamp"]
        for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
    }

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self._depth = 0

    def compose_node(self, parent: Node | None, index: Any) -> Node | None:
        self._depth += 1
        try:
            if self._depth > MAX_DEPTH:
                mark = self.peek_event().start_mark  # type: ignore[no-untyped-call]
                raise YamlError(
                    YamlIssue(
                        "ML006",
                        f"nesting deeper than {MAX_DEPTH} levels",
                        Position(mark.line + 1, mark.column + 1),
                    )
                )
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1


def node_position(node: Node) -> Position:
    return Position(node.start_mark.line + 1, node.start_mark.column + 1)


def _expanded_size(root: Node) -> int:
    """Count nodes as construction would see them (aliases expanded), stopping at MAX_NODES."""
    sizes: dict[int, int] = {}
    active: set[int] = set()

    def size(node: Node) -> int:
        key = id(node)
        if key in sizes:
            return sizes[key]
        if key in active:
            raise YamlError(
                YamlIssue("ML006", "an alias refers to itself (recursive anchor)", node_position(node))
            )
        active.add(key)
        total = 1
        if isinstance(node, SequenceNode):
            for child in node.value:
                total += size(child)
                if total > MAX_NODES:
                    break
        elif isinstance(node, MappingNode):
            for k, v in node.value:
                total += size(k) + size(v)
                if total > MAX_NODES:
                    break
        active.discard(key)
        total = min(total, MAX_NODES + 1)
        sizes[key] = total
        return total

    return size(root)


def _scan(node: Node, issues: list[YamlIssue], seen: set[int]) -> None:
    """Report forbidden tags, duplicate keys and YAML 1.1 implicit-type traps."""
    if id(node) in seen:  # an alias: already scanned where the anchor was defined
        return
    seen.add(id(node))
    if node.tag not in _STANDARD_TAGS:
        issues.append(
            YamlIssue(
                "ML005",
                f"tag {node.tag.replace('tag:yaml.org,2002:', '!!')!r} is not allowed in rule files; remove it",
                node_position(node),
            )
        )
        return
    if isinstance(node, ScalarNode):
        if (
            node.style is None
            and node.tag == "tag:yaml.org,2002:bool"
            and node.value.lower() not in {"true", "false"}
        ):
            meaning = "true" if node.value.lower() in {"yes", "on", "y"} else "false"
            issues.append(
                YamlIssue(
                    "ML004",
                    f"{node.value!r} is read as the boolean {meaning} by YAML 1.1; "
                    f'quote it ("{node.value}") if you mean text, or write {meaning}',
                    node_position(node),
                )
            )
        elif (
            node.style is None
            and node.tag in {"tag:yaml.org,2002:int", "tag:yaml.org,2002:float"}
            and _BASE60.match(node.value)
        ):
            issues.append(
                YamlIssue(
                    "ML004",
                    f'{node.value!r} is read as a base-60 number by YAML 1.1; quote it ("{node.value}")',
                    node_position(node),
                )
            )
    elif isinstance(node, SequenceNode):
        for child in node.value:
            _scan(child, issues, seen)
    elif isinstance(node, MappingNode):
        keys: dict[object, Node] = {}
        for key_node, value_node in node.value:
            _scan(key_node, issues, seen)
            _scan(value_node, issues, seen)
            if isinstance(key_node, ScalarNode):
                key = (key_node.tag, key_node.value)
                if key in keys:
                    first = node_position(keys[key])
                    issues.append(
                        YamlIssue(
                            "ML003",
                            f"duplicate key {key_node.value!r} (first at line {first.line}); "
                            "YAML keeps only the last one - remove one of them",
                            node_position(key_node),
                        )
                    )
                else:
                    keys[key] = key_node


@dataclass(frozen=True)
class YamlDocument:
    """A composed YAML document and its constructed data."""

    root: Node
    data: Any

    def locate(self, loc: Sequence[str | int], *, key: bool = False) -> Position:
        """Position of the node along a pydantic error `loc`.

        Loc items that do not match the current node (union tags such as `function-after[...]`)
        are skipped. With `key=True` the final mapping key is returned instead of its value.
        """
        node = self.root
        for index, item in enumerate(loc):
            last = index == len(loc) - 1
            if isinstance(node, MappingNode):
                for key_node, value_node in node.value:
                    if isinstance(key_node, ScalarNode) and key_node.value == str(item):
                        if last and key:
                            return node_position(key_node)
                        node = value_node
                        break
            elif isinstance(node, SequenceNode) and isinstance(item, int) and 0 <= item < len(node.value):
                node = node.value[item]
        return node_position(node)

    def node(self, loc: Sequence[str | int]) -> Node | None:
        """The node at exactly `loc` (mapping keys and list indexes only), or None."""
        node = self.root
        for item in loc:
            if isinstance(node, MappingNode):
                for key_node, value_node in node.value:
                    if isinstance(key_node, ScalarNode) and key_node.value == str(item):
                        node = value_node
                        break
                else:
                    return None
            elif isinstance(node, SequenceNode) and isinstance(item, int) and 0 <= item < len(node.value):
                node = node.value[item]
            else:
                return None
        return node

    def top_keys(self) -> list[tuple[str, Position]]:
        if not isinstance(self.root, MappingNode):
            return []
        return [(str(k.value), node_position(k)) for k, _ in self.root.value if isinstance(k, ScalarNode)]


def parse_yaml(text: str) -> tuple[YamlDocument | None, list[YamlIssue]]:
    """Compose, check and construct one YAML document.

    Returns (document, issues). The document is None when it cannot be trusted (syntax error,
    forbidden tag, too large/deep, alias bomb); issues may be non-empty either way.
    """
    if len(text.encode("utf-8")) > MAX_BYTES:
        return None, [YamlIssue("ML006", f"file larger than {MAX_BYTES // 1024} KiB", Position(1, 1))]
    try:
        # The reader checks the characters as it is built: a NUL or other control character raises here.
        loader = _Loader(text)
    except yaml.reader.ReaderError as exc:
        at = max(0, min(exc.position, len(text)))
        line, column = text.count("\n", 0, at) + 1, at - text.rfind("\n", 0, at)
        return None, [YamlIssue("ML002", f"{exc.reason} (remove it)", Position(line, column))]
    try:
        root = loader.get_single_node()
    except YamlError as exc:
        return None, [exc.issue]
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        where = Position(mark.line + 1, mark.column + 1) if mark else Position(1, 1)
        problem = exc.problem or "invalid YAML"
        if "but found another document" in str(exc):
            problem = "a rule file holds one YAML document; remove the '---' separator"
        return None, [YamlIssue("ML002", problem, where)]
    except yaml.YAMLError as exc:
        return None, [YamlIssue("ML002", str(exc), Position(1, 1))]
    finally:
        loader.dispose()
    if root is None:
        return None, [YamlIssue("ML007", "the file is empty; a rule file holds one mapping", Position(1, 1))]
    try:
        if _expanded_size(root) > MAX_NODES:
            return None, [
                YamlIssue(
                    "ML006", f"more than {MAX_NODES} values after expanding aliases", node_position(root)
                )
            ]
    except YamlError as exc:
        return None, [exc.issue]
    issues: list[YamlIssue] = []
    _scan(root, issues, set())
    if any(issue.code == "ML005" for issue in issues):
        return None, issues
    constructor = _Loader("")
    try:
        data = constructor.construct_document(root)
    except yaml.YAMLError as exc:
        issues.append(YamlIssue("ML002", str(exc).splitlines()[0], node_position(root)))
        return None, issues
    except ValueError as exc:
        # PyYAML converts scalars itself: an integer of more than 4,300 digits raises ValueError
        # (Python's int-string limit) instead of a YAMLError.
        issues.append(YamlIssue("ML002", f"a value cannot be read: {exc}", node_position(root)))
        return None, issues
    finally:
        constructor.dispose()
    return YamlDocument(root=root, data=data), issues
