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
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from promptship.domain import template
from promptship.domain.promptfile import PromptSpec, Provider, TestCase, case_identity
from promptship.errors import BadInput
from promptship.importers.promptfoo_asserts import (
    CONTAINS_JSON_NOTE,
    Malformed,
    Unsupported,
    js_text,
    kind_of,
    map_assert,
)
from promptship.importers.promptfoo_files import Files
from promptship.importers.promptfoo_prompt import (
    PromptParts,
    choose_prompt,
    load_prompts,
    prompt_parts,
    provider_defaults,
)
from promptship.importers.promptfoo_tests import (
    MAX_CASES,
    Problems,
    Row,
    collect_tests,
    default_test,
    dereference,
    expand,
    listed,
)

INPUT_NAMES = ("input", "query", "question", "prompt", "message")


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
        return dereference(data), files
    except Malformed as exc:
        raise BadInput(f"{path}: {exc.message}") from None


def import_promptfoo(path: Path, options: Options) -> Imported:
    config, files = read_config(path)
    return import_config(config, files, str(path), options)


def import_config(config: dict[str, Any], files: Files, source: str, options: Options) -> Imported:
    """The cases of an already-read config; files it names are read with ``files``."""
    try:
        return _import_config(config, files, source, options)
    except (Malformed, Unsupported) as exc:  # where there is no test to name or to skip
        raise BadInput(exc.message) from None


def _import_config(config: dict[str, Any], files: Files, source: str, options: Options) -> Imported:
    problems = Problems()
    if config.get("scenarios"):
        problems.drop("scenarios", "scenarios: promptship has no scenarios; write them as tests")
    for key in ("nunjucksFilters", "extensions"):
        if config.get(key):
            problems.notes[f"{key}: promptship does not run them; review the prompt"] = None
    default = default_test(config.get("defaultTest"), files, problems)
    rows: list[Row] = []
    raw_tests = collect_tests(config.get("tests"), files, problems)
    for raw in raw_tests:
        try:
            rows += expand(raw, default, files, problems, MAX_CASES - len(rows))
        except Malformed as exc:
            problems.error(f"{raw.label}: {exc.message}")
        except Unsupported as exc:
            problems.drop(exc.kind, f"{raw.label}: {exc.message}")
    if problems.errors or not rows:  # before guessing the input var from tests that did not load
        skipped = problems.check(options.skip_unsupported)
        dropped = ", ".join(f"{n} {kind}" for kind, n in skipped.items())
        raise BadInput(
            f"{source}: no tests to import" + (f" (dropped: {dropped})" if dropped else "")
        )
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


def _input_var(rows: list[Row], chosen: str | None) -> str:
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
        if config.get("prompts"):
            parts.notes.append(
                "the config's prompts are not imported: --system-prompt replaces them"
            )
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
    rows: list[Row], input_var: str, keep_input: bool, files: Files, problems: Problems
) -> tuple[list[TestCase], list[str]]:
    cases: list[TestCase] = []
    labels: list[str] = []
    for row in rows:
        for kind, message in row.issues:
            problems.drop(kind, message)
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
            if len(cases) > MAX_CASES:
                raise BadInput(f"more than {MAX_CASES:,} cases; a prompt file holds at most that")
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
            + listed([f"{label}: {var}" for label, var in unknown]),
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
            + listed([f"{label}: {var}" for label, var in lacking]),
            hint=f"give them a default in {name}'s variables:, or set them in the tests",
        )


def case_key(case: TestCase) -> str:
    """What makes two cases the same (:func:`promptship.domain.promptfile.case_identity`)."""
    return case_identity(case.model_dump(mode="json"))


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
