"""The model double's answer book: the example suites pass against it through the real
validation runner, a regressing edit of the support prompt fails its own suite, and a
divergent edit passes its suite but diverges under the real soak scoring (MiniLM)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import yaml

from promptship.demo.scenario import DIVERGENT, GOOD, NAME, QUESTIONS, REGRESSING, prompt_file
from promptship.domain.promptfile import parse_prompt
from promptship.services import Promptship
from promptship.services.soak_spec import CycleSpec, Sample, Side
from promptship.soak.cycle import run_cycle
from promptship.testing.answers import answer
from promptship.testing.model_double import ModelDouble
from promptship.testing.serve import DoubleProcess
from promptship.validation.runner import RunnerSettings, SuiteRunner
from promptship.validation.scoring import Scorer
from tests.helpers import REQUESTER, slack

EXAMPLES = Path(__file__).parent.parent / "examples" / "prompts"


@pytest.fixture
def double(monkeypatch: pytest.MonkeyPatch) -> Iterator[ModelDouble]:
    with ModelDouble(responder=answer) as server:
        monkeypatch.setenv("ANTHROPIC_API_KEY", "offline")
        monkeypatch.setenv("ANTHROPIC_BASE_URL", server.url)
        yield server


async def run_suite(core: Promptship, path: Path) -> tuple[str, list[dict[str, object]]]:
    prompt = parse_prompt(path.read_text(), source=str(path))  # noqa: ASYNC240 (a small file)
    await core.push(prompt, slack("U09"))
    async with SuiteRunner(core, settings=RunnerSettings(timeout=10, max_retries=1)) as work:
        run = await work.execute(await work.start(prompt.name, prompt.version, slack(REQUESTER)))
    detail = await core.validation_run(run.id)
    return run.state, [r for r in detail.results if not r["passed"]]


@pytest.mark.parametrize("file", ["customer-support.yaml", "sql-assistant.yaml"])
async def test_the_example_suites_pass(core: Promptship, double: ModelDouble, file: str) -> None:
    state, failures = await run_suite(core, EXAMPLES / file)
    assert (state, failures) == ("passed", [])


async def test_a_regressing_edit_fails_its_own_suite(core: Promptship, double: ModelDouble) -> None:
    state, failures = await run_suite(core, prompt_file(REGRESSING))
    assert state == "failed"
    assert {r["expected"] for r in failures} == {"25 projects", "2 business days"}


async def test_a_divergent_edit_passes_its_suite(core: Promptship, double: ModelDouble) -> None:
    state, failures = await run_suite(core, prompt_file(DIVERGENT))
    assert (state, failures) == ("passed", [])


def side(version: str) -> Side:
    system = yaml.safe_load(prompt_file(version).read_text())["system_prompt"]
    return Side(version, "anthropic", "claude-sonnet-4-5", 0.0, 500, system)


def cycle(candidate: str) -> CycleSpec:
    return CycleSpec(
        soak_id=1,
        cycle=1,
        kind="staging-shadow",
        prompt=NAME,
        candidate=side(candidate),
        baseline=side(GOOD),
        samples=[Sample(q) for q in QUESTIONS],
        min_samples=5,
        similarity=0.85,
        max_divergence=0.1,
    )


async def test_the_divergent_edit_diverges_on_everyday_questions(
    double: ModelDouble, scorer: Scorer
) -> None:
    same = await run_cycle(cycle(GOOD), scorer)
    assert (same.errored, same.divergent) == (0, 0)
    diverged = await run_cycle(cycle(DIVERGENT), scorer)
    assert diverged.errored == 0
    assert diverged.divergent / diverged.sample_size > 0.3


def test_the_double_in_its_own_process_answers_from_the_book() -> None:
    def ask(url: str) -> str:
        reply = httpx.post(
            f"{url}/v1/messages",
            headers={"x-api-key": "offline"},
            json={
                "model": "claude-sonnet-4-5",
                "max_tokens": 100,
                "system": "Plans: Starter (3 projects, $0), Team (25 projects, $49/month).",
                "messages": [{"role": "user", "content": "How many projects on Team?"}],
            },
        )
        return str(reply.json()["content"][0]["text"])

    with DoubleProcess("promptship.testing.model_double") as book:
        assert "25 projects" in ask(book.url)
    with DoubleProcess("promptship.testing.model_double", "--echo") as echo:
        assert ask(echo.url) == "Answer: How many projects on Team?"
