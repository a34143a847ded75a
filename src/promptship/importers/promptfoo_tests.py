"""A promptfoo config's tests, read as promptfoo runs them: each test with its
``defaultTest`` merged in, its array vars expanded to one test per combination, its
``file://`` vars loaded and its vars that name other vars filled in; and what of it
promptship cannot keep, collected for one refusal (or, skipped, for the report)."""

from __future__ import annotations

import itertools
import re
from collections import Counter
from dataclasses import dataclass
from typing import Any

from promptship.domain.promptfile import MAX_VARS_CHARS
from promptship.errors import BadInput
from promptship.importers.promptfoo_asserts import Malformed, Unsupported, js_text, kind_of, short
from promptship.importers.promptfoo_files import Files, RawTest, file_ref

#: a prompt file holds at most this many cases
MAX_CASES = 10_000
_TEST_KEYS = frozenset({"vars", "assert", "description", "options"})
_HANDLED_OPTIONS = frozenset({"disableDefaultAsserts", "disableVarExpansion"})
_VAR_REF = re.compile(r"\{\{\s*(\w+)\s*\}\}")
_MAX_REF_NODES = 1_000_000
_LISTED = 30


@dataclass
class Row:
    """One test (one combination of its array vars), ready to become cases."""

    label: str
    description: str | None
    values: dict[str, Any]
    asserts: list[tuple[str, Any]]
    #: what of the test promptship cannot keep: (kind, message)
    issues: list[tuple[str, str]]


class Problems:
    def __init__(self) -> None:
        self.errors: dict[str, None] = {}
        self.unsupported: dict[Any, tuple[str, str]] = {}
        self.notes: dict[str, None] = {}

    def error(self, message: str) -> None:
        self.errors[message] = None

    def drop(self, kind: str, message: str, key: Any = None) -> None:
        self.unsupported.setdefault(key if key is not None else message, (kind, message))

    def check(self, skip: bool) -> Counter[str]:
        if self.errors:
            errors = list(self.errors)
            raise BadInput(
                errors[0] if len(errors) == 1 else f"{len(errors)} problems:\n" + listed(errors)
            )
        if self.unsupported and not skip:
            lines = [message for _, message in self.unsupported.values()]
            raise BadInput(
                "promptship cannot keep these:\n" + listed(lines),
                hint="pass --skip-unsupported to import the rest (the report counts what is "
                "dropped)",
            )
        return Counter(kind for kind, _ in self.unsupported.values())


def listed(lines: list[str]) -> str:
    shown = [f"  {line}" for line in lines[:_LISTED]]
    if len(lines) > _LISTED:
        shown.append(f"  and {len(lines) - _LISTED} more")
    return "\n".join(shown)


def dereference(root: dict[str, Any]) -> dict[str, Any]:
    """The config with its ``$ref: '#/...'`` pointers replaced by what they point to, as
    promptfoo does (a pointer that does not resolve in the config is left as it is: a JSON
    schema's own reference)."""
    budget = [_MAX_REF_NODES]

    def target(pointer: str) -> tuple[bool, Any]:
        node: Any = root
        for part in pointer.removeprefix("#").split("/")[1:]:
            part = part.replace("~1", "/").replace("~0", "~")
            if isinstance(node, dict) and part in node:
                node = node[part]
            elif isinstance(node, list) and part.isdigit() and int(part) < len(node):
                node = node[int(part)]
            else:
                return False, None
        return True, node

    def walk(node: Any, chain: tuple[str, ...]) -> Any:
        budget[0] -= 1
        if budget[0] < 0:
            raise Malformed(f"$ref references expand the config beyond {_MAX_REF_NODES:,} values")
        if isinstance(node, dict):
            ref = node.get("$ref")
            if isinstance(ref, str) and ref.startswith("#"):
                if ref in chain:
                    raise Malformed(f"$ref {ref!r} refers to itself")
                found, value = target(ref)
                if found:
                    return walk(value, (*chain, ref))
            return {key: walk(value, chain) for key, value in node.items()}
        if isinstance(node, list):
            return [walk(item, chain) for item in node]
        return node

    result: dict[str, Any] = walk(root, ())
    return result


def default_test(raw: Any, files: Files, problems: Problems) -> dict[str, Any]:
    if file_ref(raw):
        raw = files.load_data(files.matches(raw, "defaultTest")[0], "defaultTest")
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise BadInput(f"defaultTest: is a mapping (vars:, assert:), not {kind_of(raw)}")
    for key in raw:
        if key not in _TEST_KEYS:
            problems.drop(f"test key {key}", f"defaultTest: {key}: promptship keeps no {key}")
    options = raw.get("options") or {}
    if not isinstance(options, dict):
        raise Malformed(f"defaultTest: options: is a mapping, not {kind_of(options)}")
    for key in options:
        if key not in _HANDLED_OPTIONS:
            problems.drop(
                f"test key options.{key}", f"defaultTest: options.{key}: promptship keeps none"
            )
    if isinstance(raw.get("vars"), str | list):
        raw = {**raw, "vars": files.vars_from(raw["vars"], "defaultTest")}
    if not isinstance(raw.get("vars") or {}, dict) or not isinstance(raw.get("assert") or [], list):
        raise BadInput("defaultTest: vars: is a mapping and assert: a list of asserts")
    result: dict[str, Any] = raw
    return result


def collect_tests(raw: Any, files: Files, problems: Problems) -> list[RawTest]:
    if raw is None:
        return []
    entries = raw if isinstance(raw, list) else [raw]
    tests: list[RawTest] = []
    for index, entry in enumerate(entries):
        where = f"tests[{index}]" if isinstance(raw, list) else "tests"
        try:
            if isinstance(entry, str):
                tests += files.tests_from(entry, where)
            elif isinstance(entry, dict) and "path" in entry and "vars" not in entry:
                raise Unsupported(
                    "tests from a script", f"{where}: tests made by a generator cannot be imported"
                )
            else:
                tests.append(RawTest(where, entry))
        except Unsupported as exc:
            problems.drop(exc.kind, exc.message)
        except Malformed as exc:
            problems.error(exc.message)
        if len(tests) > MAX_CASES:
            raise BadInput(f"more than {MAX_CASES:,} tests; a prompt file holds at most that")
    return tests


def expand(
    raw: RawTest, default: dict[str, Any], files: Files, problems: Problems, room: int
) -> list[Row]:
    test = raw.test
    if not isinstance(test, dict):
        raise Malformed(f"a test is a mapping with vars: and assert:, not {kind_of(test)}")
    description = test.get("description")
    if description is not None and not isinstance(description, str):
        raise Malformed(f"description: must be text, not {kind_of(description)}")
    label = raw.label + (f" ({short(description, 40)})" if description else "")
    issues = [
        (f"test key {key}", f"{label}: {key}: promptship keeps no {key}")
        for key in test
        if key not in _TEST_KEYS
    ]
    options = test.get("options") or {}
    if not isinstance(options, dict):
        raise Malformed(f"options: is a mapping, not {kind_of(options)}")
    issues += [
        (f"test key options.{key}", f"{label}: options.{key}: promptship keeps none")
        for key in options
        if key not in _HANDLED_OPTIONS
    ]
    given = test.get("vars")
    if isinstance(given, str | list):
        given = files.vars_from(given, label)
    if given is not None and not isinstance(given, dict):
        raise Malformed(f"vars: is a mapping of names to values, not {kind_of(given)}")
    merged = {**(default.get("vars") or {}), **(given or {})}
    asserts = test.get("assert")
    if asserts is not None and not isinstance(asserts, list):
        raise Malformed(f"assert: is a list of asserts, not {kind_of(asserts)}")
    inherited = [] if options.get("disableDefaultAsserts") else default.get("assert") or []
    listed = [(f"defaultTest.assert[{i}]", a) for i, a in enumerate(inherited)]
    listed += [(f"assert[{i}]", a) for i, a in enumerate(asserts or [])]
    expand = not options.get(
        "disableVarExpansion", (default.get("options") or {}).get("disableVarExpansion")
    )
    return [
        Row(label, description, _load_vars(combo, files, label, problems), listed, issues)
        for combo in _combinations(merged, files, label, expand, room)
    ]


def _combinations(
    merged: dict[str, Any], files: Files, label: str, expand: bool, room: int
) -> list[dict[str, Any]]:
    """promptfoo's combinations: an array of texts (or a ``file://`` glob) gives one test
    per value; other arrays are one value."""
    choices: list[list[Any]] = []
    for name, value in merged.items():
        if value is None:
            raise Malformed(f"vars.{name} is null: give it a value")
        if file_ref(value) and expand:
            choices.append([f"file://{path}" for path in files.matches(value, label)])
        elif expand and isinstance(value, list) and value and isinstance(value[0], str):
            choices.append(value)
        else:
            choices.append([value])
    count = 1
    for values in choices:
        count *= len(values)
    if count > room:
        raise BadInput(f"{label}: its array vars make {count:,} tests; at most {MAX_CASES:,} fit")
    return [dict(zip(merged, combo, strict=True)) for combo in itertools.product(*choices)]


def _load_vars(
    combo: dict[str, Any], files: Files, label: str, problems: Problems
) -> dict[str, Any]:
    values: dict[str, Any] = {}
    for name, value in combo.items():
        if file_ref(value):
            paths = files.matches(value, label)
            if len(paths) != 1:  # promptfoo expands a glob only as a var's whole value
                raise Malformed(f"vars.{name}: {value} names {len(paths)} files; a var holds one")
            value = files.var_value(paths[0], f"{label}: vars.{name}")
        if isinstance(value, str):
            value = value.removesuffix("\n")  # promptfoo drops one trailing newline
        values[name] = value
    for _ in range(5):  # promptfoo fills in vars that name other vars, five rounds at most
        changed = False
        for name, value in values.items():
            match = _VAR_REF.search(value) if isinstance(value, str) else None
            if match and match.group(1) in values:
                text = js_text(values[match.group(1)])
                if text is not None and match.group(1) != name:
                    if len(value) + len(text) > MAX_VARS_CHARS:
                        raise Malformed(
                            f"vars.{name}: over {MAX_VARS_CHARS:,} characters once "
                            f"{match.group(0)} is filled in"
                        )
                    values[name] = value.replace(match.group(0), text, 1)
                    changed = True
                    problems.notes[f"{label}: vars.{name}: filled in {match.group(0)}"] = None
        if not changed:
            break
    return values
