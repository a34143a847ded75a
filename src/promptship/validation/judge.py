"""``llm-rubric``: a judge model grades an answer against a rubric and answers a strict JSON
verdict, ``{"pass": true, "score": 0.9, "reason": "…"}``.

The judge is the policy's (``judge: {provider, model}``). Its calls go through the same
provider code as the suite's, so they share the runner's concurrency limit, the provider's
retries and the token accounting. A verdict that is not exactly that object (prose, a
missing key, a score outside 0–1) is a :class:`JudgeError`: the case is ``errored``, never
``passed``.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any

from promptship.domain.promptfile import TestCase
from promptship.domain.template import render
from promptship.errors import BadInput
from promptship.validation.assertions import AssertionResult
from promptship.validation.providers.base import Provider, ProviderError

#: the judge's instructions; the model double recognises a judge's request by this line
JUDGE_SYSTEM = """You are promptship's grader. You judge whether an AI assistant's answer \
meets a rubric.

Read the rubric, the user's message and the answer. Grade only against the rubric.
Reply with one JSON object and nothing else, in exactly this shape:
{"pass": true or false, "score": a number from 0 to 1, "reason": "one sentence"}"""

_FENCE = re.compile(r"\A```(?:json)?\s*(.*?)\s*```\Z", re.DOTALL | re.IGNORECASE)
MAX_REASON_CHARS = 500


class JudgeError(Exception):
    """The judge's answer is not a verdict; the message says what it was, for people."""


@dataclass(frozen=True)
class Verdict:
    passed: bool
    score: float
    reason: str


def judge_request(case: TestCase, answer: str, values: Mapping[str, Any] | None = None) -> str:
    """The judge's user message: the rubric (a template, rendered with the case's vars), the
    user's message and the answer, each fenced in tags so an answer cannot pose as the
    rubric. Raises BadInput when the rubric does not render."""
    rubric = render(str(case.expected), values or {}, "the rubric")
    return (
        f"<rubric>\n{rubric}\n</rubric>\n\n"
        f"<user_message>\n{case.input}\n</user_message>\n\n"
        f"<answer>\n{answer}\n</answer>"
    )


def parse_verdict(text: str) -> Verdict:
    """The verdict in the judge's answer: one JSON object (a ```json fence around it is
    allowed) with a boolean ``pass``, a ``score`` from 0 to 1 and a text ``reason``."""
    body = text.strip()
    fenced = _FENCE.match(body)
    if fenced:
        body = fenced.group(1)
    try:
        document: Any = json.loads(body)
    except (json.JSONDecodeError, RecursionError):
        raise JudgeError(f"the judge did not answer a JSON verdict: {_short(text)}") from None
    if not isinstance(document, dict):
        raise JudgeError(f"the judge's verdict is not a JSON object: {_short(text)}")
    passed, score, reason = document.get("pass"), document.get("score"), document.get("reason")
    if not isinstance(passed, bool):
        raise JudgeError(f'the judge\'s verdict has no true/false "pass": {_short(text)}')
    if isinstance(score, bool) or not isinstance(score, int | float) or not 0 <= score <= 1:
        raise JudgeError(f'the judge\'s verdict has no "score" from 0 to 1: {_short(text)}')
    if not isinstance(reason, str):
        raise JudgeError(f'the judge\'s verdict has no text "reason": {_short(text)}')
    return Verdict(passed, round(float(score), 4), reason.strip()[:MAX_REASON_CHARS])


def _short(text: str, limit: int = 120) -> str:
    text = text.strip()
    return repr(text if len(text) <= limit else text[: limit - 1] + "…") if text else "(empty)"


@dataclass(frozen=True)
class Graded:
    """One answer graded: the assertion's verdict, or why there is none (``error``)."""

    verdict: AssertionResult | None
    error: str | None
    reason: str | None = None
    score: float | None = None
    input_tokens: int | None = None
    output_tokens: int | None = None
    notes: tuple[str, ...] = ()

    def record(self) -> dict[str, Any]:
        """What a run's result keeps of the judge: its reason, score and cost."""
        return {
            "reason": self.reason,
            "score": self.score,
            "input_tokens": self.input_tokens,
            "output_tokens": self.output_tokens,
        }


class Judge:
    """The policy's judge model, called through a provider like the suite's model."""

    def __init__(self, provider: Provider, model: str, max_tokens: int = 512) -> None:
        self.provider = provider
        self.model = model
        self.max_tokens = max_tokens

    async def grade(
        self, case: TestCase, answer: str, values: Mapping[str, Any] | None = None
    ) -> Graded:
        try:
            request = judge_request(case, answer, values)
        except BadInput as exc:
            return Graded(None, exc.message)
        try:
            completion = await self.provider.complete(
                model=self.model,
                system=JUDGE_SYSTEM,
                messages=[{"role": "user", "content": request}],
                temperature=0.0,
                max_tokens=self.max_tokens,
            )
        except ProviderError as exc:
            return Graded(None, f"the judge ({self.model}) gave no verdict: {exc}")
        cost = Graded(
            None,
            None,
            input_tokens=completion.input_tokens,
            output_tokens=completion.output_tokens,
            notes=completion.notes,
        )
        try:
            verdict = parse_verdict(completion.text)
        except JudgeError as exc:
            return replace(cost, error=str(exc))
        threshold = case.threshold
        ok = verdict.passed and (threshold is None or verdict.score >= threshold)
        if ok:
            why = ""
        elif verdict.passed:
            why = (
                f"the judge's score {verdict.score:.2f} is below the threshold "
                f"{threshold:.2f}: {verdict.reason}"
            )
        else:
            why = f"the judge: {verdict.reason}"
        return replace(
            cost,
            verdict=AssertionResult(ok, verdict.score, why),
            reason=verdict.reason,
            score=verdict.score,
        )
