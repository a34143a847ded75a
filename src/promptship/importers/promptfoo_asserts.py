"""One promptfoo assertion, as the fields of a promptship test case (type, expected,
threshold), or the reason it cannot be one.

Malformed input (an assert that is not a mapping, a missing type, a value of the wrong
kind) raises :class:`Malformed`; an assertion promptship has no equivalent for (a script,
a cost, ``not-`` forms but ``not-contains``) raises :class:`Unsupported`; keys promptship
cannot keep (``weight``, ``metric``, ...) come back as issues beside the mapped fields, for
the caller to refuse or, with ``--skip-unsupported``, drop and count.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from promptship.domain import template
from promptship.domain.promptfile import AssertionType
from promptship.domain.safe_load import load_yaml12
from promptship.errors import BadInput

T = AssertionType

#: promptfoo's types that have a promptship equivalent
SUPPORTED: dict[str, AssertionType] = {
    "equals": T.EXACT,
    "contains": T.CONTAINS,
    "icontains": T.ICONTAINS,
    "not-contains": T.NOT_CONTAINS,
    "regex": T.REGEX,
    "starts-with": T.STARTS_WITH,
    "is-json": T.JSON_SCHEMA,
    "contains-json": T.JSON_SCHEMA,
    "similar": T.SCORE,
    "similar:cosine": T.SCORE,
    "contains-any": T.CONTAINS_ANY,
    "contains-all": T.CONTAINS_ALL,
    "icontains-any": T.ICONTAINS_ANY,
    "icontains-all": T.ICONTAINS_ALL,
    "llm-rubric": T.LLM_RUBRIC,
}
#: promptfoo's default similarity threshold (``DEFAULT_SEMANTIC_SIMILARITY_THRESHOLD``)
PROMPTFOO_SIMILAR_THRESHOLD = 0.8
_KEPT_KEYS = frozenset({"type", "value", "threshold"})
_TEXT_TYPES = frozenset({T.CONTAINS, T.ICONTAINS, T.NOT_CONTAINS, T.REGEX, T.STARTS_WITH})
_LIST_TYPES = frozenset({T.CONTAINS_ANY, T.CONTAINS_ALL, T.ICONTAINS_ANY, T.ICONTAINS_ALL})
CONTAINS_JSON_NOTE = (
    "contains-json became json-schema: promptship checks that the whole answer (or a fenced "
    "```json block) is JSON, where promptfoo looks for JSON anywhere in it"
)


class Malformed(Exception):
    """The input is wrong: the message says what, and the right form."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class Unsupported(Exception):
    """Something promptship has no equivalent for. ``kind`` is what the report counts."""

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(message)
        self.kind = kind
        self.message = message


@dataclass
class Mapped:
    """A promptfoo assert as a promptship case's fields."""

    type: AssertionType
    expected: Any
    threshold: float | None
    #: keys promptship cannot keep, each as (kind, message)
    issues: list[tuple[str, str]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


#: loads an assert value's ``file://`` reference (text, or parsed JSON/YAML)
LoadFile = Callable[[str], Any]


def kind_of(value: Any) -> str:
    if value is None:
        return "nothing (null)"
    if isinstance(value, bool):
        return f"the boolean {str(value).lower()}"
    if isinstance(value, int | float):
        return f"the number {value}"
    if isinstance(value, str):
        return f"the text {short(value)}"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, dict):
        return "a mapping"
    return type(value).__name__


def short(text: str, limit: int = 60) -> str:
    return repr(text if len(text) <= limit else text[: limit - 1] + "…")


def js_text(value: Any) -> str | None:
    """A scalar as JavaScript's ``String(value)`` writes it; None for lists and mappings."""
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if math.isnan(value):
            return "NaN"
        if math.isinf(value):
            return "Infinity" if value > 0 else "-Infinity"
        if value.is_integer() and abs(value) < 1e21:
            return str(int(value))
        return repr(value)
    return None


def split_commas(text: str) -> list[str]:
    """promptfoo's comma-separated values: items split at commas outside double quotes,
    trimmed, empty ones dropped; a quoted item keeps its commas (``""`` is a quote)."""
    items: list[str] = []
    i, n = 0, len(text)
    while i <= n:
        while i < n and text[i] in " \t":
            i += 1
        if i < n and text[i] == '"':
            i += 1
            chars: list[str] = []
            while True:
                if i >= n:
                    raise Malformed(f"unterminated quoted item in {short(text)}")
                if text[i] == "\\" and i + 1 < n and text[i + 1] in '"\\':
                    chars.append(text[i + 1])
                    i += 2
                elif text[i] == '"' and i + 1 < n and text[i + 1] == '"':
                    chars.append('"')
                    i += 2
                elif text[i] == '"':
                    i += 1
                    break
                else:
                    chars.append(text[i])
                    i += 1
            while i < n and text[i] in " \t":
                i += 1
            if i < n and text[i] != ",":
                raise Malformed(f"expected a comma after a quoted item in {short(text)}")
            if chars:
                items.append("".join(chars))
            i += 1
        else:
            end = text.find(",", i)
            end = n if end < 0 else end
            if text[i:end].strip():
                items.append(text[i:end].strip())
            i = end + 1
    return items


def _render(value: Any, values: Mapping[str, Any]) -> Any:
    """Render ``{{ var }}`` templates in a text value (or a list's texts) with the test's
    vars, as promptfoo renders assert values."""
    try:
        if isinstance(value, str):
            return template.render(value, values)
        if isinstance(value, list):
            return [template.render(v, values) if isinstance(v, str) else v for v in value]
    except BadInput as exc:
        raise Malformed(f"value: {exc.message}") from None
    return value


def _threshold(raw: Any, kind: str) -> float | None:
    if raw is None:
        return None
    if isinstance(raw, bool) or not isinstance(raw, int | float) or not math.isfinite(raw):
        raise Malformed(f"threshold: must be a number, not {kind_of(raw)}")
    if not 0 <= raw <= 1:
        raise Malformed(f"threshold: {raw} is outside 0 to 1, which {kind} scores use")
    return float(raw)


def map_assert(raw: Any, values: Mapping[str, Any], load_file: LoadFile) -> Mapped:
    """Map one promptfoo assert, its values rendered with the test's ``values``."""
    if isinstance(raw, str):
        raise Malformed(
            f"an assert is a mapping such as {{type: contains, value: ...}}, not {kind_of(raw)}"
        )
    if not isinstance(raw, dict):
        raise Malformed(
            f"an assert is a mapping such as {{type: contains, value: ...}}, not {kind_of(raw)}"
        )
    kind = raw.get("type")
    if kind is None:
        raise Malformed("the assert has no type: (e.g. type: contains)")
    if not isinstance(kind, str) or not kind:
        raise Malformed(f"type: must be an assertion type's name, not {kind_of(kind)}")
    if kind not in SUPPORTED:
        raise Unsupported(kind, f"assertion type {kind!r} has no promptship equivalent")
    target = SUPPORTED[kind]
    issues = [
        (f"assert key {key}", f"{key}: promptship keeps no {key} for an assertion")
        for key in raw
        if key not in _KEPT_KEYS
    ]
    notes: list[str] = []
    value = raw.get("value")
    if isinstance(value, str) and value.startswith("file://"):
        value = load_file(value)
    elif isinstance(value, list):
        value = [
            load_file(v) if isinstance(v, str) and v.startswith("file://") else v for v in value
        ]
    value = _render(value, values)
    threshold = raw.get("threshold")
    if target in (T.SCORE, T.LLM_RUBRIC):
        kept = _threshold(threshold, kind)
        if target is T.SCORE and kept is None:
            kept = PROMPTFOO_SIMILAR_THRESHOLD
    else:
        kept = None
        if threshold is not None:
            notes.append(f"threshold has no effect on {kind} (in promptfoo too); not kept")
    expected = _expected(kind, target, value)
    if kind == "contains-json":
        notes.append(CONTAINS_JSON_NOTE)
    return Mapped(target, expected, kept, issues, notes)


def _expected(kind: str, target: AssertionType, value: Any) -> Any:
    if target is T.JSON_SCHEMA:
        return _schema(kind, value)
    if target in _LIST_TYPES:
        if isinstance(value, str):
            return split_commas(value)
        items = value if isinstance(value, list) else [value]
        texts = [js_text(item) for item in items]
        if value is None or any(text is None for text in texts):
            raise Malformed(
                f"{kind} needs value: a list of texts (or one text of comma-separated items), "
                f"not {kind_of(value)}"
            )
        return texts
    if isinstance(value, list) and target in (T.SCORE, T.EXACT):
        raise Unsupported(
            f"{kind} with several values",
            f"{kind} with a list of values has no promptship equivalent (one expected text)",
        )
    if isinstance(value, dict) and target in (T.EXACT, T.LLM_RUBRIC):
        raise Unsupported(
            f"{kind} with an object value",
            f"{kind} with an object value has no promptship equivalent (it compares text)",
        )
    text = js_text(value)
    if text is None:
        what = "the rubric" if target is T.LLM_RUBRIC else "the expected text"
        raise Malformed(f"{kind} needs value: {what}, not {kind_of(value)}")
    return text


def _schema(kind: str, value: Any) -> dict[str, Any]:
    if isinstance(value, str):
        try:
            value = load_yaml12(value, "the schema") if value.strip() else None
        except BadInput as exc:
            raise Malformed(f"value: not a JSON schema: {exc.message}") from None
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise Malformed(f"{kind}'s value: is a JSON schema (a mapping), not {kind_of(value)}")
    if not isinstance(value.get("$schema", ""), str):
        raise Malformed("value: $schema must be a text (the schema's URI)")
    return value
