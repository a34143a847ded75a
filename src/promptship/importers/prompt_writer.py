"""Writing imported test cases: a new prompt file, or cases added to an existing one.

A new file is refused when one is at the path already. Cases added to a file are appended
as text after its last key, ``tests:``, so every byte before them (comments included) stays
as it was; a file whose ``tests:`` is not its last key is refused with how to make it so.
Either way the result must read back (``parse_prompt``) to exactly the cases meant before
it is written, and it is written whole or not at all (a temporary file, then a rename).
"""

from __future__ import annotations

import contextlib
import os
import re
import stat
import tempfile
from pathlib import Path
from typing import Any

import yaml

from promptship.domain.promptfile import PromptSpec, TestCase, parse_prompt
from promptship.domain.safe_load import load_yaml_located
from promptship.errors import BadInput
from promptship.importers.promptfoo import Imported


class _Dumper(yaml.SafeDumper):
    """Block style, lists indented under their key, text with line breaks as ``|`` blocks."""

    def increase_indent(self, flow: bool = False, indentless: bool = False) -> None:
        super().increase_indent(flow, False)


def _text(dumper: yaml.SafeDumper, value: str) -> yaml.ScalarNode:
    style = "|" if "\n" in value else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


_Dumper.add_representer(str, _text)


def dump(data: Any) -> str:
    return yaml.dump(
        data, Dumper=_Dumper, sort_keys=False, allow_unicode=True, width=1_000_000, indent=2
    )


def case_document(case: TestCase) -> dict[str, Any]:
    """A case as a prompt file writes it: its description first, then input, vars, type,
    expected and threshold (what is unset left out)."""
    fields = case.model_dump(mode="json", exclude_none=True)
    order = ("description", "input", "vars", "type", "expected", "threshold")
    return {key: fields[key] for key in order if key in fields}


def _dropped(imported: Imported) -> list[str]:
    if not imported.skipped:
        return []
    counts = ", ".join(f"{kind} {n}" for kind, n in sorted(imported.skipped.items()))
    return [f"dropped (--skip-unsupported): {counts}"]


def _header(imported: Imported) -> str:
    lines = [f"# Imported from promptfoo ({imported.source}) by `promptship import promptfoo`."]
    lines += [f"# {line}" for line in _dropped(imported)]
    lines += [f"# review: {' '.join(note.split())}" for note in imported.notes]
    return "\n".join(lines) + "\n"


def new_file_text(
    imported: Imported, name: str, version: str, model: str, provider: str, where: str
) -> str:
    """The prompt file for ``imported``; BadInput when it would not be a valid one."""
    parts = imported.parts
    if not parts.system_prompt:
        raise BadInput(
            f"{imported.source}: no prompt to take the system prompt from",
            hint="pass --system-prompt TEXT (or --into FILE to add the cases to a prompt file)",
        )
    document: dict[str, Any] = {"name": name, "version": version, "model": model}
    document["provider"] = provider
    if parts.temperature is not None:
        document["temperature"] = parts.temperature
    if parts.max_tokens is not None:
        document["max_tokens"] = parts.max_tokens
    document["system_prompt"] = parts.system_prompt
    if imported.variables:
        document["variables"] = imported.variables
    if parts.messages:
        document["messages"] = parts.messages
    document["tests"] = [case_document(case) for case in imported.cases]
    text = _header(imported) + dump(document)
    spec = _read_back(text, where)
    _same(spec.tests, imported.cases, where)
    return text


def _read_back(text: str, where: str) -> PromptSpec:
    try:
        return parse_prompt(text, where)
    except BadInput as exc:
        raise BadInput(
            f"the prompt file would not be valid:\n{exc.message}", hint=exc.hint
        ) from None


def _same(got: list[TestCase], meant: list[TestCase], where: str) -> None:
    if got != meant:  # the writer's own fault: never write what does not read back
        raise BadInput(f"{where}: the written cases would not read back the same; nothing written")


#: the line breaks YAML counts lines by
_BREAK = re.compile("\r\n|[\r\n\x85\u2028\u2029]")


def _line(text: str, number: int) -> tuple[int, str]:
    """Where 1-based line ``number`` of ``text`` starts, and its text."""
    starts = [0, *(match.end() for match in _BREAK.finditer(text))]
    start = starts[number - 1]
    end = _BREAK.search(text, start)
    return start, text[start : end.start() if end else len(text)]


def appended_text(existing: str, spec: PromptSpec, imported: Imported, where: str) -> str:
    """``existing`` with ``cases`` appended to its ``tests:`` (its last top-level key, or
    added at the end when it has none)."""
    raw, lines = load_yaml_located(existing, where)
    newline = "\r\n" if "\r\n" in existing else "\n"
    top = sorted((line, str(path[0])) for path, line in lines.items() if len(path) == 1)
    head = existing
    if "tests" not in raw:
        indent, opening = "  ", f"tests:{newline}"
    else:
        last_line, last_key = top[-1]
        if last_key != "tests":
            tests_line = lines[("tests",)]
            raise BadInput(
                f"{where}: tests: (line {tests_line}) is not the file's last key ({last_key} "
                f"follows at line {last_line}); cases are added at the end of the file",
                hint="move tests: and its cases to the end of the file, then import again",
            )
        opening = ""
        tests_line = lines[("tests",)]
        if raw["tests"]:
            _, item = _line(existing, lines[("tests", 0)])
            dash = re.match(r"^(\s*)- ", item)
            if dash is None:
                raise BadInput(
                    f"{where}: line {lines[('tests', 0)]}: tests: is not a block list",
                    hint="write each case as a '- ' item on its own line under tests:",
                )
            indent = dash.group(1)
        else:
            start, key_text = _line(existing, tests_line)
            empty = re.fullmatch(r"(tests:\s*)(\[\s*\]|~|null)?(\s*(?:#.*)?)", key_text)
            if empty is None:
                raise BadInput(
                    f"{where}: line {tests_line}: write tests: as a block list to add cases to it"
                )
            indent = "  "
            if empty.group(2):  # `tests: []`: the brackets go, the rest of the line stays
                at = start + empty.start(2)
                head = existing[:at] + existing[at + len(empty.group(2)) :]
    if head and not head.endswith(("\n", "\r")):
        head += newline
    cases = imported.cases
    body = [f"{indent}# imported from promptfoo ({imported.source})"]
    body += [f"{indent}# {line}" for line in _dropped(imported)]
    for line in dump([case_document(case) for case in cases]).splitlines():
        body.append(f"{indent}{line}" if line.strip() else line)
    text = head + opening + newline.join(body) + newline
    merged = _read_back(text, where)
    _same(merged.tests, [*spec.tests, *cases], where)
    if merged.model_dump(exclude={"tests"}) != spec.model_dump(exclude={"tests"}):
        raise BadInput(f"{where}: adding the cases would change more than tests:; nothing written")
    return text


def write_new(path: Path, text: str) -> None:
    """Write a file that must not exist yet, whole or not at all."""
    if path.exists():
        raise BadInput(
            f"{path} exists: an import never overwrites",
            hint=f"pass --out NEW.yaml, or --into {path} to add the cases to it",
        )
    temporary = _temporary(path, text)
    try:
        os.link(temporary, path)
    except FileExistsError:
        raise BadInput(f"{path} exists: an import never overwrites") from None
    except OSError as exc:
        raise BadInput(f"{path}: cannot write: {exc.strerror or exc}") from None
    finally:
        with contextlib.suppress(OSError):
            os.unlink(temporary)


def replace(path: Path, text: str) -> None:
    """Replace a file's content atomically, keeping its permissions."""
    temporary = _temporary(path, text)
    try:
        os.chmod(temporary, stat.S_IMODE(path.stat().st_mode))
        os.replace(temporary, path)
    except OSError as exc:
        with contextlib.suppress(OSError):
            os.unlink(temporary)
        raise BadInput(f"{path}: cannot write: {exc.strerror or exc}") from None


def _temporary(path: Path, text: str) -> str:
    if not path.parent.is_dir():
        raise BadInput(f"{path.parent}: no such folder")
    try:
        handle, name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        with os.fdopen(handle, "wb") as out:
            out.write(text.encode("utf-8"))
            out.flush()
            os.fsync(out.fileno())
    except OSError as exc:
        raise BadInput(f"{path}: cannot write: {exc.strerror or exc}") from None
    return name
