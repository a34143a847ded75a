"""The files a promptfoo config refers to with ``file://``: tests (CSV, YAML, JSON, JSONL,
globs and folders of them), vars, assert values, prompts, the defaultTest and providers.

Every path is resolved against the config's folder (absolute paths and ``..`` work, as in
promptfoo) and named in every error; each file is at most ``MAX_FILE_BYTES`` and an import
reads at most ``MAX_FILES``. CSV files are read as promptfoo reads them: every column is a
var but the special ones (``__expected``, ``__expected1``..., ``__description``,
``__threshold``, ``__metric``, ``__prefix``, ``__suffix``, ``__metadata:KEY``,
``__config:__expectedN:threshold``), and an ``__expected`` cell is an assertion written as
``contains: Paris``, ``similar(0.7): ...``, ``llm-rubric: ...``, ``is-json`` or, without a
known type before a colon, the exact text expected.
"""

from __future__ import annotations

import csv
import glob
import io
import itertools
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from promptship.domain.safe_load import load_json, load_yaml12
from promptship.errors import BadInput
from promptship.importers.promptfoo_asserts import Malformed, Unsupported, kind_of, split_commas

MAX_FILE_BYTES = 10 * 2**20
MAX_FILES = 1_000
TEST_SUFFIXES = (".csv", ".yaml", ".yml", ".json", ".jsonl")
_SCRIPT = re.compile(r"\.(?:[cm]?js|[cm]?ts|py|rb)(?::[\w.]*)?$", re.IGNORECASE)
_BINARY = frozenset(
    ".pdf .png .jpg .jpeg .gif .bmp .webp .svg .mp4 .webm .ogg .mov .avi .wmv .mkv .m4v "
    ".wav .mp3 .xlsx .xls".split()
)
_GLOB = re.compile(r"[*?\[]")
#: promptfoo's assertion types, in its schema's order (a CSV cell names one before a colon)
PROMPTFOO_TYPES = (
    "answer-relevance bleu classifier contains contains-all contains-any contains-html "
    "contains-json contains-sql contains-xml context-faithfulness context-recall "
    "context-relevance conversation-relevance cost equals factuality finish-reason g-eval "
    "gleu guardrails icontains icontains-all icontains-any is-html is-json is-refusal is-sql "
    "is-valid-function-call is-valid-openai-function-call is-valid-openai-tools-call is-xml "
    "javascript latency levenshtein llm-rubric pi meteor model-graded-closedqa "
    "model-graded-factuality moderation perplexity perplexity-score python regex rouge-n ruby "
    "similar similar:cosine similar:dot similar:euclidean starts-with tool-call-f1 "
    "trace-error-spans trace-span-count trace-span-duration webhook word-count"
).split()
_CELL = re.compile(
    r"^(not-)?(" + "|".join(map(re.escape, PROMPTFOO_TYPES)) + r")"
    r"(?:\((\d+(?:\.\d+)?)\))?(?::([\s\S]*))?$"
)
_LIST_CELLS = frozenset({"contains-all", "contains-any", "icontains-all", "icontains-any"})


@dataclass
class RawTest:
    """A test as promptfoo reads it, and where it came from (for messages)."""

    label: str
    test: Any


@dataclass
class Prompt:
    """One prompt of the config: a text, or a chat (a list of {role, content})."""

    label: str
    text: str | None = None
    chat: list[Any] | None = None


def file_ref(value: Any) -> bool:
    return isinstance(value, str) and value.startswith("file://")


class Files:
    """Reads what a config refers to, relative to its folder, within the bounds."""

    def __init__(self, base: Path) -> None:
        self.base = base
        self.read: list[Path] = []

    def show(self, path: Path) -> str:
        try:
            return str(path.relative_to(self.base))
        except ValueError:
            return str(path)

    def matches(self, ref: str, where: str) -> list[Path]:
        """The files ``ref`` (``file://`` optional) names: itself, or a glob's matches."""
        raw = ref.removeprefix("file://")
        if not raw:
            raise Malformed(f"{where}: {ref!r} names no file")
        full = Path(raw) if Path(raw).is_absolute() else self.base / raw
        if not _GLOB.search(raw):
            return [full]
        found = list(itertools.islice(glob.iglob(str(full), recursive=True), MAX_FILES + 1))
        if len(found) > MAX_FILES:
            raise BadInput(f"{where}: {raw} matches more than {MAX_FILES:,} files")
        paths = sorted(Path(p) for p in found)
        if not paths:
            raise BadInput(f"{where}: no file matches {raw} (relative to {self.base})")
        return paths

    def read_text(self, path: Path, where: str) -> str:
        shown = self.show(path)
        if len(self.read) >= MAX_FILES:
            raise BadInput(f"{where}: {shown}: an import reads at most {MAX_FILES:,} files")
        try:
            if not path.is_file():
                problem = "is not a file" if path.exists() else "no such file"
                raise BadInput(f"{where}: {shown}: {problem} (relative to {self.base})")
            with path.open("rb") as handle:
                data = handle.read(MAX_FILE_BYTES + 1)
        except OSError as exc:
            raise BadInput(f"{where}: {shown}: cannot read: {exc.strerror or exc}") from None
        if len(data) > MAX_FILE_BYTES:
            raise BadInput(f"{where}: {shown} is over the {MAX_FILE_BYTES:,}-byte limit")
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError:
            raise BadInput(f"{where}: {shown}: not UTF-8 text") from None
        self.read.append(path)
        return text.removeprefix("\ufeff")

    def load_data(self, path: Path, where: str) -> Any:
        """A JSON or YAML file's document (YAML 1.2, as promptfoo reads it)."""
        text = self.read_text(path, where)
        if path.suffix.lower() == ".json":
            return load_json(text, self.show(path))
        return load_yaml12(text, self.show(path), MAX_FILE_BYTES)

    # -- tests -------------------------------------------------------------------------

    def tests_from(self, ref: str, where: str) -> list[RawTest]:
        """The tests a ``tests:`` path names: a file, a glob, or a folder of test files."""
        raw = ref.removeprefix("file://")
        scheme = re.match(r"^([a-z][a-z0-9+.-]*)://", raw)
        if scheme:
            raise Unsupported(
                f"tests from {scheme.group(1)}://",
                f"{where}: {ref}: promptship reads tests from local files only",
            )
        if _SCRIPT.search(raw):
            raise Unsupported(
                "tests from a script", f"{where}: {ref}: tests made by a script cannot be imported"
            )
        tests: list[RawTest] = []
        for path in self.matches(ref, where):
            if path.is_dir():
                inside = sorted(p for p in path.iterdir() if p.suffix.lower() in TEST_SUFFIXES)
                for child in inside:
                    tests += self._tests_file(child, where)
            else:
                tests += self._tests_file(path, where)
        return tests

    def _tests_file(self, path: Path, where: str) -> list[RawTest]:
        suffix, shown = path.suffix.lower(), self.show(path)
        if suffix in _BINARY:
            raise Unsupported(
                "tests from a spreadsheet", f"{where}: {shown}: export the sheet as CSV"
            )
        if suffix == ".csv":
            return csv_tests(self.read_text(path, where), shown)
        if suffix == ".jsonl":
            text = self.read_text(path, where)
            return [
                RawTest(f"{shown} line {number}", load_json(line, f"{shown} line {number}"))
                for number, line in enumerate(text.splitlines(), 1)
                if line.strip()
            ]
        if suffix in (".yaml", ".yml", ".json"):
            data = self.load_data(path, where)
            if isinstance(data, dict):
                data = [data]
            if not isinstance(data, list):
                raise Malformed(f"{shown}: a tests file is a list of tests, not {kind_of(data)}")
            return [RawTest(f"{shown}[{index}]", test) for index, test in enumerate(data)]
        raise Malformed(
            f"{where}: {shown}: tests are read from .csv, .yaml, .yml, .json or .jsonl files"
        )

    # -- vars, assert values ------------------------------------------------------------

    def vars_from(self, spec: Any, where: str) -> dict[str, Any]:
        """``vars: file://vars*.yaml`` (or a list of such): the files' mappings, merged."""
        refs = [spec] if isinstance(spec, str) else spec
        if not isinstance(refs, list) or not all(isinstance(ref, str) for ref in refs):
            raise Malformed(f"{where}: vars: is a mapping (or file:// paths), not {kind_of(spec)}")
        merged: dict[str, Any] = {}
        for ref in refs:
            for path in self.matches(ref, where):
                data = self.load_data(path, where)
                if not isinstance(data, dict):
                    raise Malformed(f"{self.show(path)}: a vars file is a mapping of vars")
                merged.update(data)
        return merged

    def var_value(self, path: Path, where: str) -> str:
        """A ``file://`` var as promptfoo renders it: a YAML file as its JSON text, any
        other text file trimmed."""
        suffix, shown = path.suffix.lower(), self.show(path)
        if _SCRIPT.search(path.name):
            raise Unsupported("vars from a script", f"{where}: {shown}: a script var cannot run")
        if suffix in _BINARY:
            raise Unsupported(
                "vars from a binary file", f"{where}: {shown}: promptship vars are text"
            )
        text = self.read_text(path, where)
        if suffix in (".yaml", ".yml"):
            value = load_yaml12(text, shown, MAX_FILE_BYTES)
            return json.dumps(value, ensure_ascii=False, separators=(",", ":"))
        return text.strip()

    def assert_value(self, ref: str, where: str) -> Any:
        """An assert's ``file://`` value: a JSON or YAML file parsed, a text file trimmed."""
        raw = ref.removeprefix("file://")
        if _SCRIPT.search(raw):
            raise Unsupported("assert from a script", f"{where}: {ref}: a script cannot run")
        path = Path(raw) if Path(raw).is_absolute() else self.base / raw
        suffix = path.suffix.lower()
        if suffix in (".json", ".yaml", ".yml"):
            return self.load_data(path, where)
        if suffix in (".txt", ".md"):
            return self.read_text(path, where).strip()
        raise Malformed(f"{ref}: an assert value file is .json, .yaml, .yml or .txt")

    # -- prompts ------------------------------------------------------------------------

    def prompts_from(self, ref: str, where: str) -> list[Prompt]:
        raw = ref.removeprefix("file://")
        if _SCRIPT.search(raw):
            raise Unsupported(
                "prompt from a script", f"{where}: {ref}: a prompt made by a script cannot run"
            )
        prompts: list[Prompt] = []
        for path in self.matches(ref, where):
            shown, suffix = self.show(path), path.suffix.lower()
            if suffix in (".json", ".yaml", ".yml"):
                text = self.read_text(path, where)
                prompts.append(prompt_from_text(text, shown, structured=True))
            elif suffix == ".jsonl":
                for number, line in enumerate(self.read_text(path, where).splitlines(), 1):
                    if line.strip():
                        prompts.append(prompt_from_text(line, f"{shown} line {number}", True))
            elif suffix in _BINARY or suffix == ".csv":
                raise Unsupported(
                    f"prompts from {suffix} files", f"{where}: {shown}: write the prompt as text"
                )
            else:
                parts = re.split(r"^---$", self.read_text(path, where), flags=re.MULTILINE)
                for number, part in enumerate(parts, 1):
                    label = shown if len(parts) == 1 else f"{shown} part {number}"
                    prompts.append(Prompt(label, text=part.strip("\n")))
        return prompts


def prompt_from_text(text: str, label: str, structured: bool = False) -> Prompt:
    """A prompt's text, or its chat when it is a JSON (or, from a file, YAML) list of
    {role, content} messages."""
    data: Any = None
    stripped = text.strip()
    if stripped.startswith("[") or structured:
        try:
            data = load_yaml12(text, label, MAX_FILE_BYTES) if structured else json.loads(text)
        except (BadInput, ValueError, RecursionError):
            data = None
    if isinstance(data, list) and data and all(isinstance(m, dict) and "role" in m for m in data):
        return Prompt(label, chat=data)
    return Prompt(label, text=text)


# -- CSV ---------------------------------------------------------------------------------


def csv_tests(text: str, shown: str) -> list[RawTest]:
    """The tests of a promptfoo CSV file: one per row, its header naming the columns."""
    csv.field_size_limit(max(csv.field_size_limit(), MAX_FILE_BYTES))
    reader = csv.reader(io.StringIO(text))
    try:
        header = [name.strip() for name in next(reader, [])]
        if not header:
            raise Malformed(f"{shown}: empty; the first row names the columns (vars, __expected)")
        repeated = sorted({name for name in header if header.count(name) > 1})
        if repeated:
            raise Malformed(f"{shown}: the header names {', '.join(repeated)} more than once")
        tests: list[RawTest] = []
        for row in reader:
            where = f"{shown} line {reader.line_num}"
            if not row:
                continue
            if len(row) != len(header):
                raise Malformed(f"{where}: {len(row)} cells; the header has {len(header)}")
            try:
                test = test_from_csv_row(dict(zip(header, row, strict=True)))
            except Malformed as exc:
                raise Malformed(f"{where}: {exc.message}") from None
            tests.append(RawTest(where, test))
    except csv.Error as exc:
        raise Malformed(f"{shown} line {reader.line_num}: not valid CSV: {exc}") from None
    return tests


def test_from_csv_row(row: dict[str, str]) -> dict[str, Any]:
    """A CSV row as promptfoo's test: its vars, asserts and special columns."""
    variables: dict[str, Any] = {}
    asserts: list[dict[str, Any]] = []
    options: dict[str, Any] = {}
    metadata: dict[str, Any] = {}
    thresholds: dict[int, float] = {}
    test: dict[str, Any] = {}
    for key, value in row.items():
        if key.startswith("__expected"):
            if value.strip():
                asserts.append(assertion_from_string(value.strip()))
        elif key in ("__prefix", "__suffix"):
            options[key[2:]] = value
        elif key in ("__description", "__providerOutput", "__metric"):
            if value:
                test[key[2:]] = value
        elif key == "__threshold":
            number = _number(value)
            if number:
                test["threshold"] = number
        elif key == "__metadata":
            continue  # promptfoo ignores it too (it needs a key: __metadata:KEY)
        elif key.startswith("__metadata:"):
            if value.strip():
                metadata[key.removeprefix("__metadata:").removesuffix("[]")] = value
        elif key.startswith("__config:"):
            if value.strip():  # an empty cell sets nothing
                _config_column(key, value, thresholds)
        else:
            variables[key] = value
    metric = test.pop("metric", None)
    for index, assertion in enumerate(asserts):
        if metric:
            assertion["metric"] = metric
        if index in thresholds:
            assertion["threshold"] = thresholds[index]
    test.update({"vars": variables, "assert": asserts})
    if options:
        test["options"] = options
    if metadata:
        test["metadata"] = metadata
    return test


def _number(text: str) -> float | None:
    try:
        return float(text.strip()) if text.strip() else None
    except ValueError:
        return None


def _config_column(key: str, value: str, thresholds: dict[int, float]) -> None:
    parts = key.removeprefix("__config:").split(":")
    if len(parts) != 2:
        return  # promptfoo warns and ignores a column of another form
    target, setting = parts
    match = re.fullmatch(r"__expected(\d*)", target)
    if not match or match.group(1) == "0":
        raise Malformed(f"{key}: name __expected or __expected<N> (N from 1)")
    if setting != "threshold":
        raise Malformed(f"{key}: the only setting a __config column takes is threshold")
    number = _number(value)
    if number is None:
        raise Malformed(f"{key}: {value!r} is not a number")
    thresholds[int(match.group(1) or 1) - 1] = number


def assertion_from_string(expected: str) -> dict[str, Any]:
    """An ``__expected`` cell as promptfoo's assert (its ``assertionFromString``)."""
    for prefix in ("javascript:", "fn:", "eval:"):
        if expected.startswith(prefix):
            return {"type": "javascript", "value": expected.removeprefix(prefix).strip()}
    if expected.startswith("file://") and _SCRIPT.search(expected):
        kind = "python" if ".py" in expected.lower() else "javascript"
        return {"type": kind, "value": expected}
    for prefix in ("grade:", "llm-rubric:"):
        if expected.startswith(prefix):
            return {"type": "llm-rubric", "value": expected.removeprefix(prefix).strip()}
    if expected.startswith("python:"):
        return {"type": "python", "value": expected.removeprefix("python:").strip()}
    match = _CELL.match(expected)
    if not match:
        return {"type": "equals", "value": expected}
    negated, kind, threshold, value = match.groups()
    out: dict[str, Any] = {"type": f"not-{kind}" if negated else kind}
    if kind in _LIST_CELLS:
        out["value"] = split_commas(value) if value else value
    elif kind in ("is-json", "contains-json"):
        out["value"] = value
    else:
        out["value"] = value.strip() if value is not None else None
    if out["value"] is None:
        del out["value"]
    if threshold is not None:
        out["threshold"] = float(threshold)
    elif kind == "similar":
        out["threshold"] = 0.8
    return out
