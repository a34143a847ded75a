"""Reading a deployment file (what ``promptship export`` writes) as the desired state.

The shape: ``{prompt: {environment: {prompt_version, model, temperature, updated_by,
promoted_at | updated_at}}}``, with ``max_tokens`` and ``content_hash`` besides. Only
``prompt_version`` is required; ``model``, ``temperature``, ``max_tokens`` and
``content_hash``, when given, must be the version's own (they are part of it, so changing
them here changes nothing: push a new version). ``updated_by`` and the times are what the
export recorded, and are not read. Every problem is named with its line.
"""

from __future__ import annotations

import difflib
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from promptship.domain.promptfile import NAME_RE, version_problem
from promptship.domain.safe_load import Lines, load_yaml_located
from promptship.errors import BadInput

#: settings a version carries; given in the file, they must match it
PINNED = ("model", "temperature", "max_tokens", "content_hash")
#: what the export records about a move; read back, never acted on
RECORDED = ("updated_by", "promoted_at", "updated_at")
KEYS = ("prompt_version", *PINNED, *RECORDED)


@dataclass(frozen=True)
class Desired:
    """One environment of one prompt, as the file wants it."""

    prompt: str
    environment: str
    version: str
    line: int  # of the environment's key
    prompt_line: int
    version_line: int
    #: the pinned settings the entry gives: key → (value, line)
    pinned: dict[str, tuple[Any, int]] = field(default_factory=dict)


@dataclass
class _Problems:
    source: str
    lines: Lines
    found: list[str] = field(default_factory=list)

    def add(self, path: tuple[str, ...], message: str) -> None:
        line = self.lines.get(path)
        where = f"line {line}: " if line else ""
        self.found.append(f"{self.source}: {where}{'.'.join(path)}: {message}")


def line_of(lines: Lines, *path: str) -> int:
    return lines.get(path, 0)


#: prompts one deployment file may name
MAX_PROMPTS = 1000
#: problems a refused file reports (then "and N more")
PROBLEMS_SHOWN = 50


def parse_deployment_file(
    text: str | bytes, source: str, environments: Sequence[str]
) -> list[Desired]:
    """The entries of a deployment file, in file order; BadInput naming every problem with
    its line (an unknown environment or key, a missing or malformed ``prompt_version``)."""
    data, lines = load_yaml_located(text, source)
    if data is None:
        return []
    if not isinstance(data, dict):
        raise BadInput(
            f"{source}: expected a mapping of prompts to environments",
            hint="e.g. customer-support: {production: {prompt_version: 2.1.0}}",
        )
    if len(data) > MAX_PROMPTS:
        raise BadInput(
            f"{source}: {len(data):,} prompts; a deployment file holds at most {MAX_PROMPTS:,}",
            hint="split it into several files and apply each",
        )
    problems = _Problems(source, lines)
    entries: list[Desired] = []
    for name, envs in data.items():
        prompt = str(name)
        if not isinstance(name, str) or not NAME_RE.fullmatch(name):
            problems.add((prompt,), "not a prompt name")
            continue
        if not isinstance(envs, dict):
            problems.add((prompt,), "expected a mapping of environments to versions")
            continue
        for env, entry in envs.items():
            where = (prompt, str(env))
            if env not in environments:
                problems.add(where, f"unknown environment (use one of: {', '.join(environments)})")
                continue
            if not isinstance(entry, dict):
                problems.add(where, "expected a mapping with prompt_version")
                continue
            found = _entry(problems, where, entry, lines)
            if found is not None:
                entries.append(found)
    if problems.found:
        raise BadInput(problem_list(problems.found))
    return entries


def problem_list(problems: Sequence[str]) -> str:
    """The first :data:`PROBLEMS_SHOWN` problems, one a line, then how many more."""
    shown = "\n".join(problems[:PROBLEMS_SHOWN])
    more = len(problems) - PROBLEMS_SHOWN
    return f"{shown}\n… and {more:,} more" if more > 0 else shown


def _entry(
    problems: _Problems, where: tuple[str, str], entry: dict[Any, Any], lines: Lines
) -> Desired | None:
    ok = True
    for key in entry:
        if key not in KEYS:
            close = difflib.get_close_matches(str(key), KEYS, n=1)
            also = f" (did you mean {close[0]}?)" if close else f" (expected: {', '.join(KEYS)})"
            problems.add((*where, str(key)), f"unknown key{also}")
            ok = False
    version = entry.get("prompt_version")
    if "prompt_version" not in entry:
        problems.add(where, "prompt_version is missing")
        return None
    if not isinstance(version, str):
        hint = "write the version as text in quotes" if isinstance(version, int | float) else ""
        problems.add((*where, "prompt_version"), f"{hint or 'not a version'} (got {version!r})")
        return None
    problem = version_problem(version)
    if problem is not None:
        problems.add((*where, "prompt_version"), f"{problem} (got {version[:40]!r})")
        return None
    if not ok:
        return None
    pinned = {key: (entry[key], line_of(lines, *where, key)) for key in PINNED if key in entry}
    return Desired(
        where[0],
        where[1],
        version,
        line_of(lines, *where),
        line_of(lines, where[0]),
        line_of(lines, *where, "prompt_version"),
        pinned,
    )
