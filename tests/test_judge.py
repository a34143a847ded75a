"""llm-rubric: the policy's judge grades answers with a strict JSON verdict; anything else
makes the case errored, never passed. Through the real runner, store and SDK."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest

from promptship.clock import ManualClock
from promptship.config import Policy
from promptship.domain.promptfile import TestCase, parse_prompt
from promptship.errors import BadInput
from promptship.services import Promptship
from promptship.store.db import Database
from promptship.testing.grader import grade, is_judge_request
from promptship.testing.model_double import ModelDouble
from promptship.validation.judge import JUDGE_SYSTEM, JudgeError, parse_verdict
from promptship.validation.runner import RunnerSettings, SuiteRunner
from tests.conftest import make_policy, prompt_yaml
from tests.helpers import AUTHOR, REQUESTER, slack

NAME = "support-bot"
ANSWERS = {
    "Can I get a refund?": "Refunds are possible within 30 days; billing replies in 2 days.",
    "Where is my order?": "I cannot help with that.",
}
SUITE = [
    {
        "input": "Can I get a refund?",
        "type": "llm-rubric",
        "expected": 'Says that refunds are possible and names the "30 days" window',
    },
    {
        "input": "Where is my order?",
        "type": "llm-rubric",
        "expected": 'Gives a "tracking" link',
    },
    {"input": "Can I get a refund?", "type": "contains", "expected": "30 days"},
]


@pytest.fixture
def policy() -> Policy:
    return make_policy("judge: {provider: anthropic, model: judge-1}")


class Judge:
    """The double's judge: its own grader, or a scripted answer when ``says`` is set."""

    def __init__(self) -> None:
        self.says: str | None = None
        self.requests: list[str] = []

    def __call__(self, system: str, user: str, model: str) -> str:
        assert is_judge_request(system) and model == "judge-1"
        self.requests.append(user)
        return self.says if self.says is not None else grade(user)


@pytest.fixture
def judge(monkeypatch: pytest.MonkeyPatch) -> Iterator[Judge]:
    scripted = Judge()
    with ModelDouble(responder=lambda s, user, m: ANSWERS.get(user, "I don't know.")) as server:
        server.judge = scripted
        monkeypatch.setenv("ANTHROPIC_API_KEY", "test-key")
        monkeypatch.setenv("ANTHROPIC_BASE_URL", server.url)
        yield scripted


async def run_suite(core: Promptship, suite: list[dict[str, object]] = SUITE):  # type: ignore[no-untyped-def]
    await core.push(parse_prompt(prompt_yaml(NAME, "1.0.0", tests=suite)), slack(AUTHOR))
    async with SuiteRunner(
        core, settings=RunnerSettings(timeout=5, max_retries=1, concurrency=2)
    ) as work:
        run = await work.execute(await work.start(NAME, "1.0.0", slack(REQUESTER)))
    return run, (await core.validation_run(run.id)).results


async def test_a_good_and_a_bad_answer_are_graded_with_the_judges_reason(
    core: Promptship, judge: Judge
) -> None:
    run, results = await run_suite(core)
    assert (run.passed, run.failed, run.errored) == (2, 1, 0)
    by_input = {(r["input"], r["type"]): r for r in results}
    good = by_input[("Can I get a refund?", "llm-rubric")]
    assert good["passed"] and good["score"] == 1.0
    assert good["judge"]["reason"] == "mentions 30 days"
    assert good["judge"]["input_tokens"] > 0 and good["judge"]["output_tokens"] > 0
    bad = by_input[("Where is my order?", "llm-rubric")]
    assert not bad["passed"] and bad["error"] is None
    assert bad["detail"] == "the judge: does not mention tracking"
    # the judge saw the rubric, the user's message and the answer, each in its own tag
    asked = next(r for r in judge.requests if "tracking" in r)
    assert "<answer>\nI cannot help with that.\n</answer>" in asked
    assert "<user_message>\nWhere is my order?\n</user_message>" in asked


@pytest.mark.parametrize(
    "says",
    [
        "Looks good to me!",
        '{"pass": "yes", "score": 1, "reason": "fine"}',
        '{"pass": true, "score": 7, "reason": "fine"}',
        '{"pass": true, "reason": "no score"}',
        "[1, 2]",
        "",
    ],
)
async def test_an_unparseable_verdict_makes_the_case_errored_never_passed(
    core: Promptship, judge: Judge, says: str
) -> None:
    judge.says = says
    run, results = await run_suite(core, SUITE[:1])
    assert (run.passed, run.failed, run.errored) == (0, 0, 1) and run.state == "failed"
    (result,) = results
    assert not result["passed"] and "the judge" in result["error"]
    assert result["got"] == ANSWERS["Can I get a refund?"]  # the answer is kept for people


async def test_a_threshold_on_the_judges_score(core: Promptship, judge: Judge) -> None:
    judge.says = '{"pass": true, "score": 0.55, "reason": "partly"}'
    suite = [{**SUITE[0], "threshold": 0.7}]
    run, (result,) = await run_suite(core, suite)
    assert run.failed == 1
    assert result["detail"] == "the judge's score 0.55 is below the threshold 0.70: partly"


async def test_a_suite_with_rubrics_and_no_judge_fails_before_any_call(
    db: Database, clock: ManualClock, judge: Judge
) -> None:
    run, results = await run_suite(Promptship(db, make_policy(), clock))
    assert run.state == "failed" and results == [] and judge.requests == []
    assert "names no judge" in (run.error or "")


def test_verdicts_are_read_strictly() -> None:
    verdict = parse_verdict('```json\n{"pass": false, "score": 0.2, "reason": " off "}\n```')
    assert (verdict.passed, verdict.score, verdict.reason) == (False, 0.2, "off")
    for text in ('Verdict: {"pass": true, "score": 1, "reason": "x"}', '{"pass": 1}', "null"):
        with pytest.raises(JudgeError):
            parse_verdict(text)


def test_the_double_recognises_the_judges_instructions() -> None:
    assert is_judge_request(JUDGE_SYSTEM)
    case = TestCase(input="hi", type="llm-rubric", expected='mentions "hello"')  # type: ignore[arg-type]
    from promptship.validation.judge import judge_request

    assert json.loads(grade(judge_request(case, "Hello there")))["pass"] is True
    assert json.loads(grade(judge_request(case, "Bye")))["pass"] is False


async def test_the_rubric_is_rendered_with_the_cases_vars(core: Promptship, judge: Judge) -> None:
    suite = [
        {
            "input": "Can I get a refund?",
            "type": "llm-rubric",
            "expected": 'Names the "{{ window }}" window',
            "vars": {"window": "30 days"},
        }
    ]
    document = prompt_yaml(NAME, "1.0.0", tests=suite, variables={"window": None})
    await core.push(parse_prompt(document), slack(AUTHOR))
    async with SuiteRunner(core, settings=RunnerSettings(timeout=5, max_retries=1)) as work:
        run = await work.execute(await work.start(NAME, "1.0.0", slack(REQUESTER)))
    assert run.passed == 1
    assert '<rubric>\nNames the "30 days" window\n</rubric>' in judge.requests[0]


def test_a_rubric_reading_an_undeclared_variable_is_refused_at_push() -> None:
    suite = [{"input": "hi", "type": "llm-rubric", "expected": "In {{ language }}"}]
    with pytest.raises(BadInput, match=r"tests\[0\]\.expected, line 1 .*'language'"):
        parse_prompt(prompt_yaml(NAME, "1.0.0", tests=suite), "p.yaml")
