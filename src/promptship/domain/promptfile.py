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
from typing import Any

import jsonschema
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from promptship.domain.safe_load import load_json, load_yaml
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
    SCORE = "score"


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
    """One case of a version's suite: an input, what the answer must satisfy, and how."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    __test__ = False  # not a pytest class

    input: str = Field(min_length=1)
    type: AssertionType
    expected: str | dict[str, Any]
    threshold: float | None = Field(None, ge=0.0, le=1.0)
    description: str | None = None

    @model_validator(mode="after")
    def _check_expected(self) -> TestCase:
        if self.threshold is not None and self.type is not AssertionType.SCORE:
            raise ValueError("threshold applies only to type: score")
        if self.type is AssertionType.JSON_SCHEMA:
            schema = self.expected
            if isinstance(schema, str):
                try:
                    schema = load_json(schema, "expected")
                except BadInput as exc:
                    raise ValueError(f"expected must be a JSON schema: {exc}") from None
            if not isinstance(schema, dict):
                raise ValueError("expected must be a JSON schema object")
            try:
                jsonschema.validators.validator_for(schema).check_schema(schema)
            except jsonschema.SchemaError as exc:
                raise ValueError(f"expected is not a valid JSON schema: {exc.message}") from None
            object.__setattr__(self, "expected", schema)
            return self
        if not isinstance(self.expected, str):
            raise ValueError(f"expected must be text for type: {self.type.value}")
        if self.type is AssertionType.REGEX:
            try:
                re.compile(self.expected)
            except re.error as exc:
                raise ValueError(f"expected is not a valid regular expression: {exc}") from None
        if self.type is not AssertionType.NOT_CONTAINS and not self.expected:
            raise ValueError(f"expected must not be empty for type: {self.type.value}")
        return self

    @property
    def effective_threshold(self) -> float:
        return DEFAULT_SCORE_THRESHOLD if self.threshold is None else self.threshold


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
    Raises BadInput naming the file, the key and the problem."""
    return prompt_from_document(load_yaml(text, source), source)


def prompt_from_document(raw: Any, source: str = "<prompt>") -> PromptSpec:
    """Validate an already-parsed prompt document (a mapping), as ``parse_prompt`` does."""
    if not isinstance(raw, dict):
        raise BadInput(f"{source}: a prompt file is a mapping with name, version, model, ...")
    try:
        return PromptSpec.model_validate(raw)
    except ValidationError as exc:
        raise BadInput(_format_errors(source, exc)) from None


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
