"""``promptship import promptfoo``: a promptfoo config's tests as promptship test cases,
with nothing lost silently.

promptfoo runs each test's prompt with its vars and checks the answer with each of its
asserts; a promptship case is one user's turn (``input``), the template's ``vars`` and ONE
assertion. So every promptfoo test becomes one case per assert: its ``defaultTest`` vars and
asserts merged in first (the test's vars win), array vars expanded to one test per
combination, ``file://`` vars loaded, vars that name other vars (``{{ topic }}``) filled in
and assert values rendered with the vars, as promptfoo does before it runs them.

One var is the user's turn (``--input-var``, else the only var, else the one named input,
query, question, prompt or message); every other var goes into the case's ``vars``, and the
input var too when the prompt template reads it. Whatever promptship cannot keep (a
JavaScript assert, an assert's ``weight``, a test's ``metadata``, a test without an assert)
is refused in one message naming each test and what, or with ``skip_unsupported`` dropped
and counted; malformed input is refused naming the test and the assert.
"""

from __future__ import annotations

import functools
import itertools
import json
import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from promptship.domain import template
from promptship.domain.promptfile import PromptSpec, Provider, TestCase
from promptship.errors import BadInput
from promptship.importers.promptfoo_asserts import (
    CONTAINS_JSON_NOTE,
    Malformed,
    Unsupported,
    js_text,
    kind_of,
    map_assert,
    short,
)
from promptship.importers.promptfoo_files import Files, RawTest, file_ref
from promptship.importers.promptfoo_prompt import (
    PromptParts,
    choose_prompt,
    load_prompts,
    prompt_parts,
    provider_defaults,
)

#: a prompt file holds at most this many cases
MAX_CASES = 10_000
INPUT_NAMES = ("input", "query", "question", "prompt", "message")
_TEST_KEYS = frozenset({"vars", "assert", "description", "options"})
_HANDLED_OPTIONS = frozenset({"disableDefaultAsserts", "disableVarExpansion"})
_VAR_REF = re.compile(r"\{\{\s*(\w+)\s*\}\}")
_MAX_REF_NODES = 1_000_000
_LISTED = 30


@dataclass(frozen=True)
class Options:
    input_var: str | None = None
    prompt: int | None = None
    skip_unsupported: bool = False
    system_prompt: str | None = None
    model: str | None = None
    provider: Provider | None = None
    #: the prompt file the cases are added to (``--into``), and its name for messages
    into: PromptSpec | None = None
    into_name: str = ""


@dataclass
class Imported:
    """What an import made, and the report of it."""

    source: str
    tests_read: int
    input_var: str
    cases: list[TestCase]
    duplicates: int = 0
    skipped: Counter[str] = field(default_factory=Counter)
    notes: list[str] = field(default_factory=list)
    #: for a new prompt file: its variables, and what it takes from the config
    variables: dict[str, Any] = field(default_factory=dict)
    parts: PromptParts = field(default_factory=PromptParts)

    @property
    def vars_kept(self) -> list[str]:
        return sorted({name for case in self.cases for name in case.vars or {}})

    @property
    def types(self) -> dict[str, int]:
        return dict(sorted(Counter(case.type.value for case in self.cases).items()))


@dataclass
class _Row:
    """One test (one combination of its array vars), ready to become cases."""

    label: str
    description: str | None
    values: dict[str, Any]
    asserts: list[tuple[str, Any]]


class _Problems:
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
                errors[0] if len(errors) == 1 else f"{len(errors)} problems:\n" + _listed(errors)
            )
        if self.unsupported and not skip:
            lines = [message for _, message in self.unsupported.values()]
            raise BadInput(
                "promptship cannot keep these:\n" + _listed(lines),
                hint="pass --skip-unsupported to import the rest (the report counts what is "
                "dropped)",
            )
        return Counter(kind for kind, _ in self.unsupported.values())


def _listed(lines: list[str]) -> str:
    shown = [f"  {line}" for line in lines[:_LISTED]]
    if len(lines) > _LISTED:
        shown.append(f"  and {len(lines) - _LISTED} more")
    return "\n".join(shown)


def read_config(path: Path) -> tuple[dict[str, Any], Files]:
    """A promptfoo config (YAML or JSON), or a tests file (a list of tests, CSV, JSONL)
    standing for one with those tests."""
    if not path.is_file():
        raise BadInput(
            f"{path}: no such file", hint="name a promptfoo config, e.g. promptfooconfig.yaml"
        )
    files = Files(path.resolve().parent)
    if path.suffix.lower() in (".csv", ".jsonl"):
        return {"tests": f"file://{path.name}"}, files
    data = files.load_data(path.resolve(), str(path))
    if isinstance(data, list):
        data = {"tests": data}
    if not isinstance(data, dict):
        raise BadInput(
            f"{path}: a promptfoo config is a mapping with prompts:, providers: and tests: "
            f"(or a list of tests), not {kind_of(data)}"
        )
    try:
        return _dereference(data), files
    except Malformed as exc:
        raise BadInput(f"{path}: {exc.message}") from None


def _dereference(root: dict[str, Any]) -> dict[str, Any]:
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


def import_promptfoo(path: Path, options: Options) -> Imported:
    config, files = read_config(path)
    return import_config(config, files, str(path), options)


def import_config(config: dict[str, Any], files: Files, source: str, options: Options) -> Imported:
    """The cases of an already-read config; files it names are read with ``files``."""
    problems = _Problems()
    if config.get("scenarios"):
        problems.drop("scenarios", "scenarios: promptship has no scenarios; write them as tests")
    for key in ("nunjucksFilters", "extensions"):
        if config.get(key):
            problems.notes[f"{key}: promptship does not run them; review the prompt"] = None
    default = _default_test(config.get("defaultTest"), files, problems)
    rows: list[_Row] = []
    raw_tests = _collect_tests(config.get("tests"), files, problems)
    for raw in raw_tests:
        try:
            rows += _expand(raw, default, files, problems, MAX_CASES - len(rows))
        except Malformed as exc:
            problems.error(f"{raw.label}: {exc.message}")
        except Unsupported as exc:
            problems.drop(exc.kind, f"{raw.label}: {exc.message}")
    if problems.errors:  # before guessing the input var from tests that did not load
        problems.check(options.skip_unsupported)
    input_var = _input_var(rows, options.input_var)
    parts = _prompt_parts(config, files, input_var, options)
    if options.into is not None:
        used = _used(options.into.system_prompt, options.into.messages or [])
    else:
        used = _used(parts.system_prompt or "", parts.messages)
    keep_input = input_var in used
    cases, labels = _cases(rows, input_var, keep_input, files, problems)
    skipped = problems.check(options.skip_unsupported)
    result = Imported(source, len(raw_tests), input_var, cases, skipped=skipped, parts=parts)
    result.notes = [*parts.notes, *problems.notes]
    if options.into is not None:
        _check_into(options.into, options.into_name, cases, labels)
    else:
        result.variables = _declarations(cases, used, result.notes)
    _drop_duplicates(result, options.into)
    if not result.cases and (options.into is None or not result.duplicates):
        dropped = ", ".join(f"{n} {kind}" for kind, n in skipped.items()) or "none"
        raise BadInput(
            f"{source}: no test case to import ({len(raw_tests)} test(s) read; dropped: {dropped}; "
            f"duplicates: {result.duplicates})"
        )
    room = MAX_CASES - (len(options.into.tests) if options.into else 0)
    if len(result.cases) > room:
        raise BadInput(
            f"{source}: {len(result.cases):,} cases; a prompt file holds at most {MAX_CASES:,}"
            + (f" and {options.into_name} has {MAX_CASES - room:,}" if options.into else "")
        )
    return result


def _default_test(raw: Any, files: Files, problems: _Problems) -> dict[str, Any]:
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
    for key in options if isinstance(options, dict) else ():
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


def _collect_tests(raw: Any, files: Files, problems: _Problems) -> list[RawTest]:
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


def _expand(
    raw: RawTest, default: dict[str, Any], files: Files, problems: _Problems, room: int
) -> list[_Row]:
    test = raw.test
    if not isinstance(test, dict):
        raise Malformed(f"a test is a mapping with vars: and assert:, not {kind_of(test)}")
    description = test.get("description")
    if description is not None and not isinstance(description, str):
        raise Malformed(f"description: must be text, not {kind_of(description)}")
    label = raw.label + (f" ({short(description, 40)})" if description else "")
    for key in test:
        if key not in _TEST_KEYS:
            problems.drop(f"test key {key}", f"{label}: {key}: promptship keeps no {key}")
    options = test.get("options") or {}
    if not isinstance(options, dict):
        raise Malformed(f"options: is a mapping, not {kind_of(options)}")
    for key in options:
        if key not in _HANDLED_OPTIONS:
            problems.drop(
                f"test key options.{key}", f"{label}: options.{key}: promptship keeps none"
            )
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
        _Row(label, description, _load_vars(combo, files, label, problems), listed)
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
    combo: dict[str, Any], files: Files, label: str, problems: _Problems
) -> dict[str, Any]:
    values: dict[str, Any] = {}
    for name, value in combo.items():
        if file_ref(value):
            value = files.var_value(files.matches(value, label)[0], f"{label}: vars.{name}")
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
                    values[name] = value.replace(match.group(0), text, 1)
                    changed = True
                    problems.notes[f"{label}: vars.{name}: filled in {match.group(0)}"] = None
        if not changed:
            break
    return values


def _input_var(rows: list[_Row], chosen: str | None) -> str:
    names = list(dict.fromkeys(name for row in rows for name in row.values))
    if chosen is not None:
        if not template.VARIABLE_RE.fullmatch(chosen):
            raise BadInput(f"--input-var {chosen!r}: not a variable name")
        if rows and chosen not in names:
            raise BadInput(
                f"--input-var {chosen}: no test sets it; the tests set: {', '.join(names) or 'no vars'}"
            )
        return chosen
    if len(names) == 1:
        return names[0]
    candidates = [name for name in INPUT_NAMES if name in names]
    if len(candidates) == 1:
        return candidates[0]
    raise BadInput(
        "which var is the user's turn? the tests set " + (", ".join(names) if names else "no vars"),
        hint="pass --input-var NAME"
        + ("" if candidates else f" (or name it one of {', '.join(INPUT_NAMES)})"),
    )


def _prompt_parts(
    config: dict[str, Any], files: Files, input_var: str, options: Options
) -> PromptParts:
    if options.into is not None:
        parts = PromptParts()
        if config.get("prompts"):
            parts.notes.append(
                f"the config's prompts are not imported: {options.into_name} keeps its own"
            )
        return parts
    if options.system_prompt is not None:
        parts = PromptParts(system_prompt=options.system_prompt)
    else:
        try:
            prompts = load_prompts(config.get("prompts"), files)
        except (Malformed, Unsupported) as exc:
            raise BadInput(exc.message, hint="or pass --system-prompt TEXT") from None
        try:
            parts = prompt_parts(choose_prompt(prompts, options.prompt), input_var)
        except (Malformed, Unsupported) as exc:
            raise BadInput(exc.message, hint="or pass --system-prompt TEXT") from None
    provider_defaults(config, files, parts)
    return parts


def _used(system_prompt: str, messages: list[Any]) -> set[str]:
    texts = [system_prompt, *(m["content"] if isinstance(m, dict) else m.content for m in messages)]
    return set().union(*(template.variables_used(text) for text in texts))


def _assert_file(files: Files, at: str, ref: str) -> Any:
    return files.assert_value(ref, at)


def _why(exc: Exception) -> str:
    if isinstance(exc, ValidationError):
        return "; ".join(e["msg"].removeprefix("Value error, ") for e in exc.errors())
    return str(exc)


def _cases(
    rows: list[_Row], input_var: str, keep_input: bool, files: Files, problems: _Problems
) -> tuple[list[TestCase], list[str]]:
    cases: list[TestCase] = []
    labels: list[str] = []
    for row in rows:
        if input_var not in row.values:
            problems.drop(
                "tests without the input var",
                f"{row.label}: sets no {input_var!r} (the user's turn)",
            )
            continue
        text = js_text(row.values[input_var])
        if text is None:
            problems.error(
                f"{row.label}: vars.{input_var} is the user's turn: text, not {kind_of(row.values[input_var])}"
            )
            continue
        if not text.strip():
            problems.drop("tests with an empty input", f"{row.label}: vars.{input_var} is empty")
            continue
        if not row.asserts:
            problems.drop(
                "tests without an assert",
                f"{row.label}: has no assert (a promptship case is one assertion)",
            )
            continue
        variables = {k: v for k, v in row.values.items() if k != input_var or keep_input}
        for where, raw in row.asserts:
            at = f"{row.label}: {where}"
            try:
                mapped = map_assert(raw, row.values, functools.partial(_assert_file, files, at))
            except (Malformed, BadInput) as exc:
                problems.error(f"{at}: {exc.message}")
                continue
            except Unsupported as exc:
                problems.drop(exc.kind, f"{at}: {exc.message}", key=(row.label, where))
                continue
            for kind, message in mapped.issues:
                problems.drop(kind, f"{at}: {message}", key=(row.label, where, kind))
            for note in mapped.notes:
                problems.notes[note if note == CONTAINS_JSON_NOTE else f"{at}: {note}"] = None
            try:
                case = TestCase(
                    input=text,
                    type=mapped.type,
                    expected=mapped.expected,
                    threshold=mapped.threshold,
                    description=row.description,
                    vars=variables or None,
                )
            except (ValueError, TypeError) as exc:
                problems.error(f"{at}: {_why(exc)}")
                continue
            cases.append(case)
            labels.append(row.label)
    return cases, labels


def _declarations(cases: list[TestCase], used: set[str], notes: list[str]) -> dict[str, Any]:
    """A new file's ``variables:``: every var the cases set or the prompt reads, null
    (required) when every case sets it, else "" (promptfoo renders a missing var empty)."""
    names = list(dict.fromkeys([n for case in cases for n in case.vars or {}] + sorted(used)))
    declared: dict[str, Any] = {}
    for name in names:
        everywhere = all(name in (case.vars or {}) for case in cases)
        declared[name] = None if everywhere else ""
        if not everywhere:
            notes.append(
                f"{name}: not every test sets it, so it is declared with the default '' "
                "(promptfoo renders a missing var as empty)"
            )
    return declared


def _check_into(spec: PromptSpec, name: str, cases: list[TestCase], labels: list[str]) -> None:
    declared = spec.variables or {}
    unknown = list(
        dict.fromkeys(
            (label, var)
            for case, label in zip(cases, labels, strict=True)
            for var in case.vars or {}
            if var not in declared
        )
    )
    if unknown:
        names = list(dict.fromkeys(var for _, var in unknown))
        raise BadInput(
            f"{name} does not declare vars these tests set:\n"
            + _listed([f"{label}: {var}" for label, var in unknown]),
            hint=f"declare them in {name}, e.g. variables: {{"
            + ", ".join(f"{n}: null" for n in names)
            + "}, or name the user's turn with --input-var",
        )
    required = [var for var, default in declared.items() if default is None]
    lacking = list(
        dict.fromkeys(
            (label, var)
            for case, label in zip(cases, labels, strict=True)
            for var in required
            if (case.vars or {}).get(var) is None
        )
    )
    if lacking:
        raise BadInput(
            f"{name} requires vars these tests do not set:\n"
            + _listed([f"{label}: {var}" for label, var in lacking]),
            hint=f"give them a default in {name}'s variables:, or set them in the tests",
        )


def case_key(case: TestCase) -> str:
    """What makes two cases the same: input, vars, type, expected and threshold."""
    dumped = case.model_dump(mode="json", exclude={"description"})
    return json.dumps(dumped, sort_keys=True, ensure_ascii=False)


def _drop_duplicates(result: Imported, into: PromptSpec | None) -> None:
    seen = {case_key(case) for case in (into.tests if into else [])}
    kept: list[TestCase] = []
    for case in result.cases:
        key = case_key(case)
        if key in seen:
            result.duplicates += 1
        else:
            seen.add(key)
            kept.append(case)
    result.cases = kept
