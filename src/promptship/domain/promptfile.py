"""Prompt files: the YAML a team writes and ``promptship push`` registers.

A version's content (everything but its name and version) is hashed canonically, so pushing
the same file twice is a no-op and pushing other content under a released version is caught.
"""

from __future__ import annotations

import hashlib
import json
import re
from enum import StrEnum
from pathlib import Path
from typing import Any, Literal

import jsonschema
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from promptship.domain import template
from promptship.domain.safe_load import load_json, load_yaml_located
from promptship.domain.template import MAX_VARIABLES, VARIABLE_RE
from promptship.errors import BadInput

NAME_PATTERN = r"[a-z0-9][a-z0-9._-]{0,63}"
NAME_RE = re.compile(NAME_PATTERN)
# semver.org's own pattern (2.0.0), without the leading "v".
SEMVER_RE = re.compile(
    r"(0|[1-9]\d*)\.(0|[1-9]\d*)\.(0|[1-9]\d*)"
    r"(?:-((?:0|[1-9]\d*|\d*[a-zA-Z-][0-9a-zA-Z-]*)(?:\.(?:0|[1-9]\d*|\d*[a-zA-Z-][0-9a-zA-Z-]*))*))?"
    r"(?:\+([0-9a-zA-Z-]+(?:\.[0-9a-zA-Z-]+)*))?",
    re.ASCII,
)
#: bounds of a version: its length (the store's column) and each number in it
MAX_VERSION_CHARS = 128
MAX_VERSION_NUMBER = 2**31 - 1
DEFAULT_SCORE_THRESHOLD = 0.8
PROMPT_FILE_SUFFIXES = (".yaml", ".yml")


class AssertionType(StrEnum):
    CONTAINS = "contains"
    ICONTAINS = "icontains"
    NOT_CONTAINS = "not-contains"
    EXACT = "exact"
    REGEX = "regex"
    JSON_SCHEMA = "json-schema"
    IS_JSON = "is-json"
    SCORE = "score"
    STARTS_WITH = "starts-with"
    CONTAINS_ANY = "contains-any"
    CONTAINS_ALL = "contains-all"
    ICONTAINS_ANY = "icontains-any"
    ICONTAINS_ALL = "icontains-all"
    LLM_RUBRIC = "llm-rubric"


#: types whose expected is a list of texts (a comma-separated text is split)
LIST_TYPES = frozenset(
    {
        AssertionType.CONTAINS_ANY,
        AssertionType.CONTAINS_ALL,
        AssertionType.ICONTAINS_ANY,
        AssertionType.ICONTAINS_ALL,
    }
)
#: types that take a threshold: a similarity, or the judge's score
THRESHOLD_TYPES = frozenset({AssertionType.SCORE, AssertionType.LLM_RUBRIC})
#: template vars (a case's, a traffic sample's, declared defaults): at most this many characters as JSON
MAX_VARS_CHARS = 100_000


class Provider(StrEnum):
    ANTHROPIC = "anthropic"
    OPENAI_COMPATIBLE = "openai-compatible"


def check_name(name: str) -> str:
    if not isinstance(name, str) or not NAME_RE.fullmatch(name):
        raise BadInput(
            f"invalid prompt name {name!r}",
            hint="use 1-64 lowercase letters, digits, '.', '_' or '-', starting with a letter or digit",
        )
    return name


def version_problem(version: str) -> str | None:
    """What is wrong with ``version`` as a promptship version, or None if it is one: a
    semantic version of at most 128 characters whose numbers are below 2**31."""
    if len(version) > MAX_VERSION_CHARS:
        return f"a version is at most {MAX_VERSION_CHARS} characters"
    match = SEMVER_RE.fullmatch(version)
    if not match:
        return "must be a semantic version such as 2.1.0"
    major, minor, patch, pre, _build = match.groups()
    numbers = [major, minor, patch, *(p for p in (pre or "").split(".") if p.isdigit())]
    if any(len(n) > 10 or int(n) > MAX_VERSION_NUMBER for n in numbers):
        return f"each number of a version is at most {MAX_VERSION_NUMBER:,}"
    return None


def check_version(version: str) -> str:
    problem = version_problem(version) if isinstance(version, str) else "not text"
    if problem is not None:
        shown = (
            version if not isinstance(version, str) or len(version) <= 40 else version[:40] + "…"
        )
        raise BadInput(f"invalid version {shown!r}: {problem}", hint="e.g. 2.1.0")
    return version


def semver_key(version: str) -> tuple[Any, ...]:
    """Sort key ordering versions by semver precedence (build metadata ignored)."""
    match = SEMVER_RE.fullmatch(version)
    if not match or version_problem(version) is not None:
        return (-1, -1, -1, 0, ())
    major, minor, patch, pre, _build = match.groups()
    if pre is None:
        pre_key: tuple[Any, ...] = ()
        release = 1
    else:
        release = 0
        pre_key = tuple((0, int(p), "") if p.isdigit() else (1, 0, p) for p in pre.split("."))
    return (int(major), int(minor), int(patch), release, pre_key)


class TestCase(BaseModel):
    """One case of a version's suite: an input (the user's turn), the template's vars, what
    the answer must satisfy, and how."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    __test__ = False  # not a pytest class

    input: str = Field(min_length=1)
    type: AssertionType
    expected: str | list[str] | dict[str, Any] | None = None
    threshold: float | None = Field(None, ge=0.0, le=1.0)
    description: str | None = None
    vars: dict[str, Any] | None = None

    @model_validator(mode="after")
    def _check_expected(self) -> TestCase:
        if self.threshold is not None and self.type not in THRESHOLD_TYPES:
            raise ValueError("threshold applies only to type: score and type: llm-rubric")
        if self.vars is not None:
            _check_values(self.vars, "vars")
        if self.type in (AssertionType.JSON_SCHEMA, AssertionType.IS_JSON):
            schema = self.expected
            if schema is None and self.type is AssertionType.IS_JSON:
                return self  # any valid JSON
            if isinstance(schema, str):
                try:
                    schema = load_json(schema, "expected")
                except BadInput as exc:
                    raise ValueError(f"expected must be a JSON schema: {exc}") from None
            if not isinstance(schema, dict):
                raise ValueError("expected must be a JSON schema object")
            if not isinstance(schema.get("$schema", ""), str):
                raise ValueError("expected: $schema must be a text (the schema's URI)")
            try:
                jsonschema.validators.validator_for(schema).check_schema(schema)
            except jsonschema.SchemaError as exc:
                raise ValueError(f"expected is not a valid JSON schema: {exc.message}") from None
            object.__setattr__(self, "expected", schema)
            return self
        if self.type in LIST_TYPES:
            items = self.expected
            if (
                not isinstance(items, list)
                or not items
                or not all(isinstance(item, str) and item for item in items)
            ):
                raise ValueError(
                    f"expected must be a list of non-empty texts for type: {self.type.value}, "
                    "e.g. [refund, credit]"
                )
            return self
        if not isinstance(self.expected, str):
            raise ValueError(f"expected must be text for type: {self.type.value}")
        if self.type is AssertionType.REGEX:
            try:
                re.compile(self.expected)
            except re.error as exc:
                raise ValueError(f"expected is not a valid regular expression: {exc}") from None
        if self.type is not AssertionType.NOT_CONTAINS and not self.expected:
            what = "the rubric" if self.type is AssertionType.LLM_RUBRIC else "expected"
            raise ValueError(f"{what} must not be empty for type: {self.type.value}")
        return self

    @property
    def effective_threshold(self) -> float:
        return DEFAULT_SCORE_THRESHOLD if self.threshold is None else self.threshold


def vars_problem(values: Any) -> str | None:
    """What is wrong with ``values`` as template vars, or None: a mapping of at most
    ``MAX_VARIABLES`` variable names to JSON values of at most ``MAX_VARS_CHARS`` characters.
    Checks a version's variables, a case's vars and a traffic sample's vars alike."""
    if not isinstance(values, dict):
        return "must be a mapping of variable names to values, e.g. {customer_name: Ada}"
    if len(values) > MAX_VARIABLES:
        return f"at most {MAX_VARIABLES} variables"
    bad = [name for name in values if not isinstance(name, str) or not VARIABLE_RE.fullmatch(name)]
    if bad:
        shown = bad[0] if not isinstance(bad[0], str) or len(bad[0]) <= 70 else bad[0][:70] + "…"
        return (
            f"{shown!r} is not a variable name (up to 64 letters, digits and _, "
            "not starting with a digit)"
        )
    try:
        size = len(json.dumps(values, ensure_ascii=False, allow_nan=False))
    except (TypeError, ValueError, RecursionError):
        return "values must be text, finite numbers, true/false, null, lists or mappings"
    if size > MAX_VARS_CHARS:
        return f"{size:,} characters of values; the limit is {MAX_VARS_CHARS:,}"
    return None


def case_identity(case: dict[str, Any]) -> str:
    """What makes two cases the same — input, vars, type, expected and threshold, not the
    description — for a case as stored or a run's result of it."""
    key = {k: case.get(k) for k in ("input", "vars", "type", "expected", "threshold")}
    return json.dumps(key, sort_keys=True, ensure_ascii=False, default=str)


def _check_values(values: dict[str, Any], key: str) -> None:
    problem = vars_problem(values)
    if problem is not None:
        raise ValueError(f"{key}: {problem}")


#: a problem :meth:`PromptSpec.problems` finds: key path, line in that key's text (0: the
#: key itself), message, and the variables it reads or sets that are not declared
Problem = tuple[tuple[str | int, ...], int, str, tuple[str, ...]]


class Message(BaseModel):
    """A turn before the user's: few-shot examples (a template, like the system prompt)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    role: Literal["user", "assistant"]
    content: str = Field(min_length=1, max_length=200_000)


class PromptSpec(BaseModel):
    """A prompt file: one immutable version of a prompt.

    New optional fields must default to ``None`` so that the content hash of versions
    registered before they existed does not change.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str
    version: str
    model: str = Field(min_length=1, max_length=200)
    temperature: float = Field(1.0, ge=0.0, le=2.0)
    max_tokens: int = Field(1024, ge=1, le=1_000_000)
    provider: Provider = Provider.ANTHROPIC
    system_prompt: str = Field(min_length=1, max_length=200_000)
    tests: list[TestCase] = Field(default_factory=list, max_length=10_000)
    description: str | None = Field(None, max_length=2000)
    #: the template's variables and their defaults (null: the caller must give it)
    variables: dict[str, Any] | None = None
    #: turns sent before the user's (few-shot examples), rendered like the system prompt
    messages: list[Message] | None = Field(None, max_length=100)

    @model_validator(mode="after")
    def _temperature_for_provider(self) -> PromptSpec:
        if self.provider is Provider.ANTHROPIC and self.temperature > 1.0:
            raise ValueError(
                f"temperature {self.temperature:g} is over 1: the anthropic provider takes 0 to 1"
            )
        return self

    @field_validator("variables")
    @classmethod
    def _variables(cls, value: dict[str, Any] | None) -> dict[str, Any] | None:
        if value is not None:
            _check_values(value, "variables")
        return value

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        if not NAME_RE.fullmatch(value):
            raise ValueError(
                "must be 1-64 lowercase letters, digits, '.', '_' or '-', "
                "starting with a letter or digit"
            )
        return value

    @field_validator("version", mode="before")
    @classmethod
    def _version(cls, value: Any) -> Any:
        if isinstance(value, int | float) and not isinstance(value, bool):
            raise ValueError(f'write the version as text in quotes, e.g. "{value}.0"')
        problem = version_problem(value) if isinstance(value, str) else None
        if problem is not None:
            raise ValueError(problem)
        return value

    def content(self) -> dict[str, Any]:
        """The hashed content: every field but name and version, defaults included."""
        return self.model_dump(mode="json", exclude={"name", "version"}, exclude_none=True)

    @property
    def content_hash(self) -> str:
        return content_hash(self.content())

    def render(self, vars: dict[str, Any] | None = None) -> template.Rendered:
        """The system text and few-shot turns for ``vars`` (defaults fill the rest)."""
        return template.render_prompt(
            self.system_prompt,
            [m.model_dump() for m in self.messages or ()],
            self.variables,
            vars,
        )

    def problems(self) -> list[Problem]:
        """What stops the templates and the tests' vars from working together: each as
        (key path, 1-based line within that key's text or 0, message, undeclared names)."""
        declared = list(self.variables or {})
        found: list[Problem] = []
        texts: list[tuple[tuple[str | int, ...], str]] = [(("system_prompt",), self.system_prompt)]
        texts += [
            (("messages", i, "content"), m.content) for i, m in enumerate(self.messages or ())
        ]
        texts += [
            (("tests", i, "expected"), str(case.expected))
            for i, case in enumerate(self.tests)
            if case.type is AssertionType.LLM_RUBRIC  # the judge gets it rendered
        ]
        for path, text in texts:
            for problem in template.template_problems(text, declared):
                names = (problem.variable,) if problem.variable else ()
                found.append((path, problem.line, problem.message, names))
        required = [name for name, default in (self.variables or {}).items() if default is None]
        for index, case in enumerate(self.tests):
            given = case.vars or {}
            unknown = [name for name in given if name not in (self.variables or {})]
            if unknown:
                found.append(
                    (
                        ("tests", index, "vars"),
                        0,
                        f"sets {', '.join(map(repr, unknown))}, which variables: does not declare",
                        tuple(unknown),
                    )
                )
            lacking = [name for name in required if given.get(name) is None]
            if lacking:
                found.append(
                    (
                        ("tests", index),
                        0,
                        f"does not set {', '.join(map(repr, lacking))} in vars, and "
                        "variables: gives no default",
                        (),
                    )
                )
        return found


def content_hash(content: dict[str, Any]) -> str:
    canonical = json.dumps(content, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


def _format_errors(source: str, exc: ValidationError) -> str:
    lines = []
    for error in exc.errors():
        loc = ""
        for part in error["loc"]:
            loc += f"[{part}]" if isinstance(part, int) else (f".{part}" if loc else str(part))
        message = error["msg"].removeprefix("Value error, ")
        if error["type"] == "extra_forbidden":
            message = "unknown key (check its spelling)"
        elif error["type"] == "enum":
            message = f"unknown value {error['input']!r} (expected {error['ctx']['expected']})"
        lines.append(f"{source}: {loc or '(top level)'}: {message}")
    return "\n".join(lines)


def parse_prompt(text: str, source: str = "<prompt>") -> PromptSpec:
    """Parse one prompt document (YAML, bounded: see ``promptship.domain.safe_load``).
    Raises BadInput naming the file, the key, the line and the problem."""
    raw, lines = load_yaml_located(text, source)
    return prompt_from_document(raw, source, _Located(text, lines))


class _Located:
    """Where keys are in a YAML file, to turn a line of a key's text into a file line."""

    def __init__(self, text: str, lines: dict[tuple[str | int, ...], int]) -> None:
        self.file_lines = text.splitlines()
        self.lines = lines

    def file_line(self, path: tuple[str | int, ...], line: int) -> int | None:
        key_line = self.lines.get(path)
        if key_line is None:
            return None
        if line == 0:
            return key_line
        own = self.file_lines[key_line - 1] if key_line <= len(self.file_lines) else ""
        block = re.search(r":\s*[|>][-+0-9]*\s*(#.*)?$", own) is not None
        return key_line + line if block else key_line + line - 1


def _key_path(path: tuple[str | int, ...]) -> str:
    out = ""
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def prompt_from_document(
    raw: Any, source: str = "<prompt>", located: _Located | None = None
) -> PromptSpec:
    """Validate an already-parsed prompt document (a mapping), as ``parse_prompt`` does:
    its keys, then its templates against the variables it declares."""
    if not isinstance(raw, dict):
        raise BadInput(f"{source}: a prompt file is a mapping with name, version, model, ...")
    try:
        spec = PromptSpec.model_validate(raw)
    except ValidationError as exc:
        raise BadInput(_format_errors(source, exc)) from None
    problems = spec.problems()
    if problems:
        out = []
        for path, line, message, _ in problems[:50]:
            where = _key_path(path)
            at = located.file_line(path, line) if located else None
            if line:
                where += f", line {line}" + (f" (file line {at})" if at else "")
            elif at:
                where += f" (line {at})"
            out.append(f"{source}: {where}: {message}")
        if len(problems) > 50:
            out.append(f"{source}: and {len(problems) - 50} more")
        raise BadInput("\n".join(out), hint=_declare_hint(problems, spec.variables is None))
    return spec


def _declare_hint(problems: list[Problem], no_variables: bool) -> str | None:
    names = sorted({name for *_, undeclared in problems for name in undeclared})
    raw = (
        "if the braces are meant as written (e.g. an example in another template language), "
        "wrap that text in {% raw %}…{% endraw %}"
    )
    if not names:
        return raw if no_variables else None
    declare = "declare them, e.g. variables: {" + ", ".join(f"{n}: null" for n in names) + "}"
    return f"{declare}; {raw}" if no_variables else declare


def load_prompt_file(path: Path) -> PromptSpec:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise BadInput(f"{path}: cannot read: {exc.strerror}") from None
    except UnicodeDecodeError:
        raise BadInput(f"{path}: not UTF-8 text") from None
    return parse_prompt(text, str(path))


def find_prompt_files(paths: list[Path]) -> list[Path]:
    """Expand directories to the prompt files below them, in a stable order."""
    found: list[Path] = []
    for path in paths:
        if path.is_dir():
            found.extend(
                sorted(
                    p for p in path.rglob("*") if p.suffix in PROMPT_FILE_SUFFIXES and p.is_file()
                )
            )
        elif path.exists():
            found.append(path)
        else:
            raise BadInput(f"{path}: no such file or directory")
    return found
