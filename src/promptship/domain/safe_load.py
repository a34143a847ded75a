"""Loading YAML and JSON that users send: prompt files, the policy, the deployment file,
API bodies. Every document is bounded before it can cost memory or stack.

YAML is read by a ``yaml.SafeLoader`` that refuses anchors and aliases (a few hundred bytes
of aliases expand to gigabytes: "billion laughs"), nesting deeper than ``MAX_DEPTH`` and
numbers longer than ``MAX_NUMBER_CHARS`` and a key written twice in one mapping (YAML
would keep the last silently), after the text was checked against a size cap.
JSON is refused when nested deeper than ``MAX_DEPTH`` or when a number is absurdly long.
Every refusal is a BadInput naming the source (and, for YAML, the line).
"""

from __future__ import annotations

import json
from typing import Any

import yaml
from yaml.composer import Composer
from yaml.constructor import SafeConstructor
from yaml.resolver import Resolver

from promptship.errors import BadInput

MAX_YAML_BYTES = 2**20
MAX_DEPTH = 64
#: digits (and signs, underscores) of one integer; Python refuses to print ints over 4300
#: digits, and no promptship setting needs more than a few
MAX_NUMBER_CHARS = 64


class _Refused(yaml.YAMLError):
    def __init__(self, message: str, mark: Any) -> None:
        super().__init__(message)
        self.message = message
        self.mark = mark


class _Bounded:
    """The checks, as a composer step: refuse anchors and aliases before they are resolved,
    nesting beyond ``MAX_DEPTH`` before it costs stack, and over-long integers."""

    _depth = 0

    def compose_node(self, parent: yaml.Node | None, index: Any) -> yaml.Node:
        event = self.peek_event()  # type: ignore[attr-defined]
        if isinstance(event, yaml.AliasEvent):
            raise _Refused(
                f"YAML aliases are not allowed (*{event.anchor}); write the value out",
                event.start_mark,
            )
        anchor = getattr(event, "anchor", None)
        if anchor is not None:
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

_Loader: Any = BoundedLoader
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


def load_yaml(text: str | bytes, source: str, max_bytes: int = MAX_YAML_BYTES) -> Any:
    """The one YAML document in ``text``; BadInput naming ``source`` when it is too large,
    malformed, uses anchors or aliases, nests deeper than ``MAX_DEPTH`` or holds an
    out-of-range value."""
    return _load(text, source, max_bytes)[0]


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


def _load(text: str | bytes, source: str, max_bytes: int) -> tuple[Any, yaml.Node | None]:
    size = len(text.encode("utf-8", "surrogatepass")) if isinstance(text, str) else len(text)
    if size > max_bytes:
        raise BadInput(f"{source}: {size:,} bytes of YAML; the limit is {max_bytes:,} bytes")
    loader = _Loader(text)
    try:
        node = loader.get_single_node()
        if node is not None:
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


def _refuse_duplicate_keys(root: yaml.Node) -> None:
    """Refuse a mapping that holds one key twice, naming its path and both lines."""
    stack: list[tuple[yaml.Node, str]] = [(root, "")]
    while stack:
        node, path = stack.pop()
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
