"""Loading YAML and JSON that users send: prompt files, the policy, the deployment file,
API bodies. Every document is bounded before it can cost memory or stack.

YAML is read by a ``yaml.SafeLoader`` that refuses anchors and aliases (a few hundred bytes
of aliases expand to gigabytes: "billion laughs"), nesting deeper than ``MAX_DEPTH`` and
numbers longer than ``MAX_NUMBER_CHARS`` and a key written twice in one mapping (YAML
would keep the last silently), after the text was checked against a size cap.
JSON is refused when nested deeper than ``MAX_DEPTH`` or when a number is absurdly long.
Every refusal is a BadInput naming the source (and, for YAML, the line).

``load_yaml12`` reads YAML as promptfoo (js-yaml 4) does, for importing its configs: the
YAML 1.2 core schema (``Yes``, ``no``, ``on``, ``off`` and ``y`` stay text, ``010`` is the
integer 10, ``0o10`` is 8, dates stay text), with anchors, aliases and ``<<`` merge keys,
which real configs use: the document is refused when its aliases would expand it beyond
``ALIAS_EXPANSION`` times its size limit, nest it deeper than ``MAX_DEPTH`` or make it
recursive.
"""

from __future__ import annotations

import json
import re
from typing import Any

import yaml
from yaml.composer import Composer
from yaml.constructor import SafeConstructor
from yaml.resolver import BaseResolver, Resolver

from promptship.errors import BadInput

MAX_YAML_BYTES = 2**20
MAX_DEPTH = 64
#: digits (and signs, underscores) of one integer; Python refuses to print ints over 4300
#: digits, and no promptship setting needs more than a few
MAX_NUMBER_CHARS = 64
#: what aliases may expand a YAML 1.2 document to: this many times its size limit, counted
#: as one per node plus the characters of each scalar, every alias expanded
ALIAS_EXPANSION = 4


class _Refused(yaml.YAMLError):
    def __init__(self, message: str, mark: Any) -> None:
        super().__init__(message)
        self.message = message
        self.mark = mark


class _Bounded:
    """The checks, as a composer step: refuse anchors and aliases before they are resolved,
    nesting beyond ``MAX_DEPTH`` before it costs stack, and over-long integers."""

    _depth = 0
    #: YAML 1.2 loading takes anchors and aliases, and bounds what they expand to instead
    allows_aliases = False

    def compose_node(self, parent: yaml.Node | None, index: Any) -> yaml.Node:
        event = self.peek_event()  # type: ignore[attr-defined]
        if isinstance(event, yaml.AliasEvent) and not self.allows_aliases:
            raise _Refused(
                f"YAML aliases are not allowed (*{event.anchor}); write the value out",
                event.start_mark,
            )
        anchor = getattr(event, "anchor", None)
        if anchor is not None and not self.allows_aliases:
            raise _Refused(
                f"YAML aliases are not allowed, nor anchors (&{anchor}); write the value out",
                event.start_mark,
            )
        self._depth += 1
        try:
            if self._depth > MAX_DEPTH:
                raise _Refused(f"nested deeper than {MAX_DEPTH} levels", event.start_mark)
            return super().compose_node(parent, index)  # type: ignore[misc,no-any-return]
        finally:
            self._depth -= 1


def _bounded_int_node(loader: Any, node: yaml.ScalarNode) -> int:
    if len(node.value) > MAX_NUMBER_CHARS:
        raise _Refused(
            f"a number of {len(node.value):,} characters (at most {MAX_NUMBER_CHARS})",
            node.start_mark,
        )
    value: int = loader.construct_yaml_int(node)
    return value


class BoundedLoader(_Bounded, yaml.SafeLoader):
    """``yaml.SafeLoader`` without anchors or aliases, with bounded nesting and integers."""


BoundedLoader.add_constructor("tag:yaml.org,2002:int", _bounded_int_node)


class _Core12Resolver(BaseResolver):
    """The YAML 1.2 core schema's plain scalars, as js-yaml 4 resolves them (its binary
    ``0b`` integers included, its timestamps left out: a date stays text)."""


for _tag, _pattern, _first in (
    ("bool", r"(?:true|True|TRUE|false|False|FALSE)", "tTfF"),
    ("null", r"(?:~|null|Null|NULL|)", ["~", "n", "N", ""]),
    ("int", r"[-+]?(?:0b[01]+|0x[0-9a-fA-F]+|0o[0-7]+|[0-9]+)", "-+0123456789"),
    (
        "float",
        r"(?:[-+]?[0-9]+(?:\.[0-9]*)?(?:[eE][-+]?[0-9]+)?|\.[0-9]+(?:[eE][-+]?[0-9]+)?"
        r"|[-+]?\.(?:inf|Inf|INF)|\.(?:nan|NaN|NAN))",
        "-+0123456789.",
    ),
    ("merge", r"<<", "<"),
):
    _Core12Resolver.add_implicit_resolver(
        f"tag:yaml.org,2002:{_tag}", re.compile(f"^{_pattern}$"), list(_first)
    )


def _core12_int_node(loader: Any, node: yaml.ScalarNode) -> int:
    text = str(loader.construct_scalar(node))
    if len(text) > MAX_NUMBER_CHARS:
        raise _Refused(
            f"a number of {len(text):,} characters (at most {MAX_NUMBER_CHARS})", node.start_mark
        )
    sign = -1 if text.startswith("-") else 1
    digits = text.lstrip("+-")
    base = {"0b": 2, "0x": 16, "0o": 8}.get(digits[:2], 10)
    try:
        return sign * int(digits[2:] if base != 10 else digits, base)
    except ValueError:
        raise _Refused(f"not an integer: {text!r}", node.start_mark) from None


def _core12_float_node(loader: Any, node: yaml.ScalarNode) -> float:
    text = str(loader.construct_scalar(node))
    if len(text) > MAX_NUMBER_CHARS:
        raise _Refused(
            f"a number of {len(text):,} characters (at most {MAX_NUMBER_CHARS})", node.start_mark
        )
    lowered = text.lower()
    if lowered.lstrip("+-") == ".inf":
        return float("-inf") if lowered.startswith("-") else float("inf")
    if lowered == ".nan":
        return float("nan")
    try:
        return float(text)
    except ValueError:
        raise _Refused(f"not a number: {text!r}", node.start_mark) from None


class Yaml12Loader(_Bounded, yaml.SafeLoader):
    """The YAML 1.2 core schema with anchors and aliases (bounded by ``_check_expansion``)."""

    allows_aliases = True
    yaml_implicit_resolvers = _Core12Resolver.yaml_implicit_resolvers


Yaml12Loader.add_constructor("tag:yaml.org,2002:int", _core12_int_node)
Yaml12Loader.add_constructor("tag:yaml.org,2002:float", _core12_float_node)

_Loader: Any = BoundedLoader
_Loader12: Any = Yaml12Loader
if yaml.__with_libyaml__:
    from yaml._yaml import CParser

    class BoundedCLoader(_Bounded, Composer, CParser, SafeConstructor, Resolver):
        """The same checks over libyaml's parser, about twice as fast: libyaml scans and
        parses, the composer step above (Python) builds the nodes."""

        def __init__(self, stream: str | bytes) -> None:
            CParser.__init__(self, stream)
            Composer.__init__(self)
            SafeConstructor.__init__(self)
            Resolver.__init__(self)

    BoundedCLoader.add_constructor("tag:yaml.org,2002:int", _bounded_int_node)
    _Loader = BoundedCLoader

    class Yaml12CLoader(BoundedCLoader):
        """:class:`Yaml12Loader` over libyaml's parser."""

        allows_aliases = True
        yaml_implicit_resolvers = _Core12Resolver.yaml_implicit_resolvers

    Yaml12CLoader.add_constructor("tag:yaml.org,2002:int", _core12_int_node)
    Yaml12CLoader.add_constructor("tag:yaml.org,2002:float", _core12_float_node)
    _Loader12 = Yaml12CLoader


def load_yaml(text: str | bytes, source: str, max_bytes: int = MAX_YAML_BYTES) -> Any:
    """The one YAML document in ``text``; BadInput naming ``source`` when it is too large,
    malformed, uses anchors or aliases, nests deeper than ``MAX_DEPTH`` or holds an
    out-of-range value."""
    return _load(text, source, max_bytes)[0]


def load_yaml12(text: str | bytes, source: str, max_bytes: int = MAX_YAML_BYTES) -> Any:
    """The one YAML document in ``text``, read with the YAML 1.2 core schema as promptfoo
    reads its configs, anchors, aliases and merge keys included. BadInput naming ``source``
    when it is too large, malformed, nests deeper than ``MAX_DEPTH`` (aliases expanded),
    holds a recursive alias or expands beyond ``ALIAS_EXPANSION`` times ``max_bytes``."""
    return _load(text, source, max_bytes, _Loader12)[0]


#: where each key of a document is: its path (keys, and indexes of lists) → 1-based line
Lines = dict[tuple[str | int, ...], int]


def load_yaml_located(
    text: str | bytes, source: str, max_bytes: int = MAX_YAML_BYTES
) -> tuple[Any, Lines]:
    """:func:`load_yaml`, and the line of every mapping key and list item by its path
    (mapping keys as text), so a checker can say where a problem is."""
    data, node = _load(text, source, max_bytes)
    lines: Lines = {}
    stack: list[tuple[yaml.Node, tuple[str | int, ...]]] = [(node, ())] if node else []
    while stack:
        current, path = stack.pop()
        if isinstance(current, yaml.MappingNode):
            for key, value in current.value:
                where = (*path, str(key.value))
                lines.setdefault(where, key.start_mark.line + 1)
                stack.append((value, where))
        elif isinstance(current, yaml.SequenceNode):
            for index, item in enumerate(current.value):
                lines[(*path, index)] = item.start_mark.line + 1
                stack.append((item, (*path, index)))
    return data, lines


def _load(
    text: str | bytes, source: str, max_bytes: int, loader_class: Any = None
) -> tuple[Any, yaml.Node | None]:
    size = len(text.encode("utf-8", "surrogatepass")) if isinstance(text, str) else len(text)
    if size > max_bytes:
        raise BadInput(f"{source}: {size:,} bytes of YAML; the limit is {max_bytes:,} bytes")
    loader = (loader_class or _Loader)(text)
    try:
        node = loader.get_single_node()
        if node is not None:
            if loader.allows_aliases:
                _check_expansion(node, ALIAS_EXPANSION * max_bytes)
            _refuse_duplicate_keys(node)
        return (loader.construct_document(node) if node is not None else None), node
    except _Refused as exc:
        where = f"line {exc.mark.line + 1}: " if exc.mark is not None else ""
        raise BadInput(f"{source}: {where}{exc.message}") from None
    except yaml.YAMLError as exc:
        raise BadInput(f"{source}: not valid YAML: {exc}") from None
    except (ValueError, OverflowError) as exc:  # e.g. a date with month 13
        raise BadInput(f"{source}: a value is out of range: {exc}") from None
    finally:
        loader.dispose()


def _children(node: yaml.Node) -> list[yaml.Node]:
    if isinstance(node, yaml.MappingNode):
        return [part for pair in node.value for part in pair]
    if isinstance(node, yaml.SequenceNode):
        return list(node.value)
    return []


def _check_expansion(root: yaml.Node, limit: int) -> None:
    """Refuse a node graph (aliases share nodes) that is recursive, or whose expansion is
    larger than ``limit`` (a node counts one, a scalar its characters too) or deeper than
    ``MAX_DEPTH``. Each node is measured once, so a billion laughs costs its own size."""
    size: dict[int, int] = {}
    depth: dict[int, int] = {}
    open_nodes: set[int] = set()
    stack: list[tuple[yaml.Node, bool]] = [(root, False)]
    while stack:
        node, children_done = stack.pop()
        key = id(node)
        if children_done:
            open_nodes.discard(key)
            kids = _children(node)
            own = 1 + (len(node.value) if isinstance(node, yaml.ScalarNode) else 0)
            size[key] = own + sum(size[id(kid)] for kid in kids)
            depth[key] = 1 + max((depth[id(kid)] for kid in kids), default=0)
            if size[key] > limit:
                raise _Refused(
                    f"aliases expand this document beyond {limit:,} (nodes plus characters); "
                    "write the repeated parts out, or use fewer aliases",
                    node.start_mark,
                )
            if depth[key] > MAX_DEPTH:
                raise _Refused(
                    f"nested deeper than {MAX_DEPTH} levels once aliases are expanded",
                    node.start_mark,
                )
            continue
        if key in size:
            continue
        if key in open_nodes:
            raise _Refused("an alias refers to a node that holds it (recursive)", node.start_mark)
        open_nodes.add(key)
        stack.append((node, True))
        stack.extend((kid, False) for kid in _children(node) if id(kid) not in size)


def _refuse_duplicate_keys(root: yaml.Node) -> None:
    """Refuse a mapping that holds one key twice, naming its path and both lines (a node
    that aliases share is checked once)."""
    stack: list[tuple[yaml.Node, str]] = [(root, "")]
    seen_nodes: set[int] = set()
    while stack:
        node, path = stack.pop()
        if id(node) in seen_nodes:
            continue
        seen_nodes.add(id(node))
        if isinstance(node, yaml.MappingNode):
            seen: dict[tuple[str, Any], yaml.Node] = {}
            for key, value in node.value:
                name = str(key.value) if isinstance(key, yaml.ScalarNode) else "?"
                where = f"{path}.{name}" if path else name
                if isinstance(key, yaml.ScalarNode):
                    first = seen.setdefault((key.tag, key.value), key)
                    if first is not key:
                        raise _Refused(
                            f"{where}: duplicate key (first at line {first.start_mark.line + 1})",
                            key.start_mark,
                        )
                stack.append((value, where))
        elif isinstance(node, yaml.SequenceNode):
            stack.extend((item, f"{path}[{index}]") for index, item in enumerate(node.value))


def _bounded_int(text: str) -> int:
    if len(text) > MAX_NUMBER_CHARS:
        raise ValueError(f"a number of {len(text):,} digits (at most {MAX_NUMBER_CHARS})")
    return int(text)


#: a JSON string, escapes included (unrolled, so it runs in linear time)
_JSON_STRING = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"')


def json_items_exceed(raw: bytes, limit: int) -> bool:
    """Whether the JSON text ``raw`` holds more than ``limit`` lists, mappings and separated
    items (``[``, ``{`` and ``,`` outside strings), counted without parsing it: what parsing
    costs grows with them, so a body over the limit is refused before it is parsed."""

    def items(text: bytes) -> int:
        return text.count(b"[") + text.count(b"{") + text.count(b",")

    return items(raw) > limit and items(_JSON_STRING.sub(b"", raw)) > limit


def nesting_exceeds(value: Any, limit: int = MAX_DEPTH) -> bool:
    """Whether lists and mappings in ``value`` nest deeper than ``limit`` (no recursion)."""
    stack: list[tuple[Any, int]] = [(value, 1)] if isinstance(value, dict | list) else []
    while stack:
        item, depth = stack.pop()
        if depth > limit:
            return True
        children = item.values() if isinstance(item, dict) else item
        stack.extend((child, depth + 1) for child in children if isinstance(child, dict | list))
    return False


def load_json(raw: str | bytes, source: str) -> Any:
    """The JSON document in ``raw``; BadInput naming ``source`` when it is malformed, not
    UTF-8, nests deeper than ``MAX_DEPTH`` or holds a number over ``MAX_NUMBER_CHARS``."""
    try:
        value = json.loads(raw, parse_int=_bounded_int)
    except RecursionError:
        raise BadInput(f"{source}: nested deeper than {MAX_DEPTH} levels") from None
    except UnicodeDecodeError:
        raise BadInput(f"{source}: not UTF-8") from None
    except ValueError as exc:  # JSONDecodeError, or a number refused above
        raise BadInput(f"{source}: not JSON: {exc}") from None
    if nesting_exceeds(value):
        raise BadInput(f"{source}: nested deeper than {MAX_DEPTH} levels")
    return value


def nul_path(value: Any) -> str | None:
    """Where a NUL character (U+0000, which PostgreSQL text cannot hold) is in ``value``, as
    a path (``reason``, ``[3].input``, ``vars.plan``), or None when there is none."""
    stack: list[tuple[Any, str]] = [(value, "")]
    while stack:
        item, path = stack.pop()
        if isinstance(item, str):
            if "\x00" in item:
                return path or "the body"
        elif isinstance(item, dict):
            for key, child in item.items():
                where = f"{path}.{key}" if path else str(key)
                if isinstance(key, str) and "\x00" in key:
                    return where
                stack.append((child, where))
        elif isinstance(item, list):
            stack.extend((child, f"{path}[{i}]") for i, child in enumerate(item))
    return None


def nul_refusal(where: str) -> str:
    """What a user is told about a NUL character in ``where``."""
    return f"{where} contains a NUL character (U+0000), which cannot be stored"
