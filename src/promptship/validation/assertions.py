"""Assertions: does an answer satisfy a test case?"""

from __future__ import annotations

import functools
import json
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import jsonschema
import regex
from jsonschema_specifications import REGISTRY as SPECIFICATIONS
from referencing.exceptions import Unresolvable

from promptship.domain.promptfile import LIST_TYPES, AssertionType, TestCase
from promptship.validation.scoring import Scorer

#: the longest a case's pattern may search one answer: a pattern that backtracks without
#: end fails its case instead of holding the event loop for minutes
REGEX_SECONDS = 1.0

_FENCED = re.compile(r"```(?:json)?\s*(.*?)```", re.DOTALL | re.IGNORECASE)


@dataclass(frozen=True)
class AssertionResult:
    passed: bool
    score: float | None = None
    detail: str = ""  # why it failed; empty when it passed


def _short(text: str, limit: int = 80) -> str:
    return repr(text if len(text) <= limit else text[: limit - 1] + "…")


def _parse_json(got: str) -> Any:
    try:
        return json.loads(got)
    except json.JSONDecodeError as first:
        fenced = _FENCED.search(got)
        if fenced:
            return json.loads(fenced.group(1))
        raise first


def check_text(case: TestCase, got: str) -> AssertionResult:
    """Every assertion type but ``score``."""
    kind, expected = case.type, case.expected
    if kind in (AssertionType.JSON_SCHEMA, AssertionType.IS_JSON):
        try:
            document = _parse_json(got)
        except json.JSONDecodeError as exc:
            return AssertionResult(False, detail=f"not valid JSON: {exc.msg} at position {exc.pos}")
        except RecursionError:  # a model can answer with anything, 100,000 brackets included
            return AssertionResult(False, detail="not valid JSON: nested too deep to read")
        if expected is None:  # is-json without a schema: any valid JSON
            return AssertionResult(True)
        assert isinstance(expected, dict)
        # references resolve within the schema and the JSON Schema specifications only:
        # a check never fetches a URL a schema names
        validator = jsonschema.validators.validator_for(expected)(expected, registry=SPECIFICATIONS)
        try:
            error = jsonschema.exceptions.best_match(validator.iter_errors(document))
        except Unresolvable as exc:
            ref = str(getattr(exc, "ref", None) or exc)
            ref = f"#{ref}" if ref.startswith("/") else ref  # a pointer into the schema
            return AssertionResult(
                False, detail=f"the schema's reference {_short(ref)} cannot be resolved"
            )
        if error is not None:
            return AssertionResult(False, detail=f"JSON does not match the schema: {error.message}")
        return AssertionResult(True)
    if kind in LIST_TYPES:
        assert isinstance(expected, list)
        return _check_list(kind, expected, got)
    assert isinstance(expected, str)
    if kind is AssertionType.STARTS_WITH:
        ok = got.lstrip().startswith(expected)
        return AssertionResult(
            ok, detail="" if ok else f"expected the answer to start with {_short(expected)}"
        )
    if kind is AssertionType.CONTAINS:
        ok = expected in got
        return AssertionResult(
            ok, detail="" if ok else f"expected the answer to contain {_short(expected)}"
        )
    if kind is AssertionType.ICONTAINS:
        ok = expected.casefold() in got.casefold()
        why = f"expected the answer to contain {_short(expected)} (any case)"
        return AssertionResult(ok, detail="" if ok else why)
    if kind is AssertionType.NOT_CONTAINS:
        ok = expected not in got
        return AssertionResult(
            ok, detail="" if ok else f"the answer contains the forbidden {_short(expected)}"
        )
    if kind is AssertionType.EXACT:
        ok = got.strip() == expected.strip()
        return AssertionResult(
            ok, detail="" if ok else f"expected exactly {_short(expected.strip())}"
        )
    if kind is AssertionType.REGEX:
        try:
            ok = _search(expected, got)
        except TimeoutError:
            return AssertionResult(
                False,
                detail=f"the pattern {_short(expected)} is too slow: no result after "
                f"{REGEX_SECONDS:g}s on this answer (nested repeats such as (a|aa)+ backtrack "
                "without end)",
            )
        return AssertionResult(
            ok, detail="" if ok else f"no match for the pattern {_short(expected)}"
        )
    raise ValueError(f"{kind} needs a scorer or a judge")


@functools.lru_cache(maxsize=256)
def _compiled(pattern: str) -> regex.Pattern[str] | None:
    """``pattern`` for the ``regex`` package, read as ``re`` reads it (its VERSION0), or
    None when only ``re`` reads it."""
    try:
        return regex.compile(pattern)
    except regex.error:
        return None


def _search(pattern: str, text: str) -> bool:
    """Whether ``pattern`` matches in ``text``; TimeoutError after ``REGEX_SECONDS``."""
    compiled = _compiled(pattern)
    if compiled is None:
        return re.search(pattern, text) is not None
    return compiled.search(text, timeout=REGEX_SECONDS) is not None


def _check_list(kind: AssertionType, expected: list[str], got: str) -> AssertionResult:
    folded = kind in (AssertionType.ICONTAINS_ANY, AssertionType.ICONTAINS_ALL)
    text = got.casefold() if folded else got
    found = [item for item in expected if (item.casefold() if folded else item) in text]
    case_note = " (any case)" if folded else ""
    if kind in (AssertionType.CONTAINS_ANY, AssertionType.ICONTAINS_ANY):
        ok = bool(found)
        listed = ", ".join(_short(item, 40) for item in expected[:10])
        more = f" and {len(expected) - 10} more" if len(expected) > 10 else ""
        why = f"expected the answer to contain one of {listed}{more}{case_note}"
        return AssertionResult(ok, detail="" if ok else why)
    missing = [item for item in expected if item not in found]
    listed = ", ".join(_short(item, 40) for item in missing[:10])
    more = f" and {len(missing) - 10} more" if len(missing) > 10 else ""
    why = f"the answer lacks {listed}{more}{case_note}"
    return AssertionResult(not missing, detail="" if not missing else why)


async def check(case: TestCase, got: str, scorer: Scorer | None = None) -> AssertionResult:
    return (await check_many([(case, got)], scorer))[0]


async def check_many(
    cases_and_answers: Sequence[tuple[TestCase, str]], scorer: Scorer | None
) -> list[AssertionResult]:
    """Check a batch; every ``score`` case of the batch is scored in one model pass."""
    results: list[AssertionResult | None] = [None] * len(cases_and_answers)
    scored: list[int] = []
    for i, (case, got) in enumerate(cases_and_answers):
        if case.type is AssertionType.SCORE:
            scored.append(i)
        else:
            results[i] = check_text(case, got)
    if scored:
        if scorer is None:
            raise ValueError("score assertions need a scorer")
        pairs = [(cases_and_answers[i][1], str(cases_and_answers[i][0].expected)) for i in scored]
        for i, similarity in zip(scored, await scorer.similarity(pairs), strict=True):
            case = cases_and_answers[i][0]
            threshold = case.effective_threshold
            score = round(similarity, 4)
            ok = score >= threshold
            why = "" if ok else f"similarity {score:.2f} is below the threshold {threshold:.2f}"
            results[i] = AssertionResult(ok, score, why)
    return [r for r in results if r is not None]
