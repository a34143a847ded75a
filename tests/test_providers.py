"""The real SDK clients against the model double over loopback HTTP: answers, retries,
and what real servers do (tool calls, reasoning blocks, refused parameters)."""

from __future__ import annotations

import ssl
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest

from promptship.clock import ManualClock
from promptship.domain.promptfile import parse_prompt
from promptship.services import Promptship
from promptship.store.db import Database
from promptship.testing.model_double import ModelDouble, ToolCall
from promptship.validation.providers import ProviderError, ProviderNotConfigured, make_provider
from promptship.validation.providers.anthropic import REFUSES_TEMPERATURE
from promptship.validation.providers.base import Completion, Provider, tls_context
from promptship.validation.providers.openai_compatible import WANTS_MAX_COMPLETION_TOKENS
from promptship.validation.runner import RunnerSettings, SuiteRunner
from tests.conftest import make_policy, prompt_yaml
from tests.helpers import AUTHOR, REQUESTER, answering, slack


@pytest.fixture
def double(monkeypatch: pytest.MonkeyPatch) -> Iterator[ModelDouble]:
    # what providers learned is process-wide, per base URL: a port used again must not
    # inherit an earlier test's lessons
    REFUSES_TEMPERATURE.forget()
    WANTS_MAX_COMPLETION_TOKENS.forget()
    with ModelDouble(responder=lambda system, user, model: f"[{model}] {user.upper()}") as server:
        monkeypatch.setenv("ANTHROPIC_API_KEY", "test-key")
        monkeypatch.setenv("ANTHROPIC_BASE_URL", server.url)
        monkeypatch.setenv("OPENAI_BASE_URL", server.url + "/v1")
        yield server


@pytest.fixture
async def anthropic(double: ModelDouble) -> AsyncIterator[Provider]:
    provider = make_provider("anthropic", timeout=5, max_retries=3)
    yield provider
    await provider.aclose()


async def ask(provider: Provider, user: str = "hello") -> str:
    completion = await provider.complete(
        model="claude-sonnet-4-5",
        system="Be brief.",
        messages=[{"role": "user", "content": user}],
        temperature=0.3,
        max_tokens=50,
    )
    return completion.text


async def test_anthropic_answer_and_usage(anthropic: Provider, double: ModelDouble) -> None:
    completion = await anthropic.complete(
        model="claude-sonnet-4-5",
        system="Be brief.",
        messages=[{"role": "user", "content": "hello"}],
        temperature=0.3,
        max_tokens=50,
    )
    assert completion.text == "[claude-sonnet-4-5] HELLO"
    assert completion.input_tokens and completion.output_tokens and completion.latency_ms > 0
    assert double.requests[0]["system"] == "Be brief."


async def test_rate_limits_are_retried(anthropic: Provider, double: ModelDouble) -> None:
    double.fail_next(3, status=429, retry_after=0)
    assert await ask(anthropic) == "[claude-sonnet-4-5] HELLO"
    assert double.request_count == 4


async def test_persistent_overload_is_an_error_that_says_so(
    anthropic: Provider, double: ModelDouble
) -> None:
    double.fail_next(10, status=529, retry_after=0)
    with pytest.raises(ProviderError, match="overloaded"):
        await ask(anthropic)
    assert double.request_count == 4  # the first try and three retries


async def test_provider_down(anthropic: Provider, double: ModelDouble) -> None:
    double.stop()
    with pytest.raises(ProviderError, match="cannot reach the provider"):
        await ask(anthropic)


@pytest.mark.parametrize("kind", ["anthropic", "openai-compatible"])
async def test_a_proxy_password_in_the_base_url_stays_out_of_the_error(
    double: ModelDouble, monkeypatch: pytest.MonkeyPatch, kind: str
) -> None:
    host = double.url.removeprefix("http://")
    monkeypatch.setenv("ANTHROPIC_BASE_URL", f"http://svc:S3cretProxyPass@{host}?key=K3y")
    monkeypatch.setenv("OPENAI_BASE_URL", f"http://svc:S3cretProxyPass@{host}/v1?key=K3y")
    double.stop()
    provider = make_provider(kind, timeout=5, max_retries=0)
    try:
        with pytest.raises(ProviderError) as refused:
            await ask(provider)
    finally:
        await provider.aclose()
    message = str(refused.value)
    assert f"cannot reach the provider at http://{host}" in message
    assert "S3cretProxyPass" not in message and "svc" not in message and "K3y" not in message


@pytest.mark.parametrize(
    ("kind", "body", "content_type", "api"),
    [
        ("anthropic", "<html>Sign in</html>", "text/html", "Messages API"),
        (
            "anthropic",
            '{"type": "error", "error": {"message": "x"}}',
            "application/json",
            "Messages API",
        ),
        ("anthropic", '{"content": "hi", "usage": 3}', "application/json", "Messages API"),
        ("openai-compatible", "<html>Sign in</html>", "text/html", "chat completions"),
        (
            "openai-compatible",
            '{"choices": [{"message": 3}]}',
            "application/json",
            "chat completions",
        ),
    ],
)
async def test_a_200_that_is_not_the_apis_answer_is_a_provider_error_saying_so(
    monkeypatch: pytest.MonkeyPatch, kind: str, body: str, content_type: str, api: str
) -> None:
    with answering(body, content_type) as page:
        monkeypatch.setenv("ANTHROPIC_API_KEY", "test-key")
        monkeypatch.setenv("ANTHROPIC_BASE_URL", page.url)
        monkeypatch.setenv("OPENAI_BASE_URL", page.url + "/v1")
        provider = make_provider(kind, timeout=5, max_retries=2)
        try:
            with pytest.raises(ProviderError) as refused:
                await ask(provider)
        finally:
            await provider.aclose()
    assert f"the provider at {page.url}" in str(refused.value)
    assert f"answered something that is not a {api} response" in str(refused.value)


async def test_our_timeout_bounds_each_call(double: ModelDouble) -> None:
    double.latency = 2.0
    provider = make_provider("anthropic", timeout=0.3, max_retries=0)
    try:
        with pytest.raises(ProviderError, match="timed out after 0.3s"):
            await ask(provider)
    finally:
        await provider.aclose()


async def test_missing_settings_fail_before_any_call(
    double: ModelDouble, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("ANTHROPIC_API_KEY")
    with pytest.raises(ProviderNotConfigured, match="ANTHROPIC_API_KEY is not set"):
        make_provider("anthropic")
    monkeypatch.delenv("OPENAI_BASE_URL")
    with pytest.raises(ProviderNotConfigured, match="OPENAI_BASE_URL is not set"):
        make_provider("openai-compatible")
    assert double.request_count == 0


async def test_openai_compatible_endpoint(double: ModelDouble) -> None:
    provider = make_provider("openai-compatible", timeout=5, max_retries=2)
    try:
        double.fail_next(1, status=429, retry_after=0)
        completion = await provider.complete(
            model="llama3",
            system="Be brief.",
            messages=[{"role": "user", "content": "hi"}],
            temperature=0.2,
            max_tokens=20,
        )
        assert completion.text == "[llama3] HI" and completion.output_tokens
        assert double.requests[-1]["path"] == "/v1/chat/completions"
    finally:
        await provider.aclose()


async def test_providers_load_the_certificate_store_once_per_process(
    double: ModelDouble, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Loading the CA certificates is some 20 ms of CPU on the event loop: a run, its judge
    and every soak cycle make providers, and none of them pays it again."""
    loads: list[str] = []
    for method in ("load_verify_locations", "load_default_certs", "set_default_verify_paths"):
        real = getattr(ssl.SSLContext, method)

        def counted(self: ssl.SSLContext, *args: Any, _real: Any = real, **kwargs: Any) -> Any:
            loads.append(_real.__name__)
            return _real(self, *args, **kwargs)

        monkeypatch.setattr(ssl.SSLContext, method, counted)
    tls_context.cache_clear()
    providers: list[Provider] = []
    try:
        for kind in ("anthropic", "openai-compatible", "anthropic", "openai-compatible"):
            providers.append(make_provider(kind, timeout=5, max_retries=0))
        assert len(loads) == 1, loads
        assert await ask(providers[2]) == "[claude-sonnet-4-5] HELLO"
        assert (await call(providers[3], "llama3")).text == "[llama3] HELLO"
    finally:
        for provider in providers:
            await provider.aclose()
        tls_context.cache_clear()


@pytest.fixture
async def openai(double: ModelDouble) -> AsyncIterator[Provider]:
    provider = make_provider("openai-compatible", timeout=5, max_retries=2)
    yield provider
    await provider.aclose()


async def call(
    provider: Provider, model: str, user: str = "hello", temperature: float = 0.3
) -> Completion:
    return await provider.complete(
        model=model,
        system="Be brief.",
        messages=[{"role": "user", "content": user}],
        temperature=temperature,
        max_tokens=50,
    )


# -- openai-compatible: tool calls -------------------------------------------------------


async def test_a_tool_call_instead_of_an_answer_is_an_error_naming_the_tool(
    openai: Provider, double: ModelDouble
) -> None:
    double.responder = lambda system, user, model: ToolCall("lookup_order", {"order": 7})
    with pytest.raises(ProviderError, match="^the model called the tool lookup_order instead"):
        await call(openai, "llama3")
    double.responder = lambda system, user, model: [ToolCall("lookup_order"), ToolCall("refund")]
    with pytest.raises(ProviderError, match="called the tools lookup_order, refund instead"):
        await call(openai, "llama3")
    assert double.request_count == 2  # an answer, not a failure: nothing to retry


async def test_no_choices_is_an_error_not_an_empty_answer(
    openai: Provider, double: ModelDouble
) -> None:
    double.responder = lambda system, user, model: None
    with pytest.raises(ProviderError, match="no choices"):
        await call(openai, "llama3")


async def test_anthropic_tool_use_without_text_is_an_error_naming_the_tool(
    anthropic: Provider, double: ModelDouble
) -> None:
    double.responder = lambda system, user, model: ToolCall("search_docs", {"q": "refunds"})
    with pytest.raises(ProviderError, match="called the tool search_docs instead of answering"):
        await ask(anthropic)


# -- openai-compatible: reasoning models ---------------------------------------------------


@pytest.mark.parametrize(
    ("answer", "stripped"),
    [
        ("<think>They ask about plans.</think>\n\n25 projects", "25 projects"),
        ("\n  <think>One.</think>\n<think>Two.</think> 25 projects", "25 projects"),
        ("<think>The Team plan has 25 projects, I think, so", ""),  # out of tokens mid-thought
    ],
)
async def test_a_reasoning_block_is_removed_from_the_answer(
    openai: Provider, double: ModelDouble, answer: str, stripped: str
) -> None:
    double.responder = lambda system, user, model: answer
    completion = await call(openai, "qwen3")
    assert completion.text == stripped
    assert len(completion.notes) == 1
    assert ("all reasoning" in completion.notes[0]) == (stripped == "")


async def test_reasoning_is_kept_with_the_switch_off(double: ModelDouble) -> None:
    answer = "<think>They ask about plans.</think>\n\n25 projects"
    double.responder = lambda system, user, model: answer
    provider = make_provider("openai-compatible", timeout=5, max_retries=0, strip_reasoning=False)
    try:
        completion = await call(provider, "qwen3")
    finally:
        await provider.aclose()
    assert completion.text == answer and completion.notes == ()


@pytest.mark.parametrize(
    "answer",
    ["25 projects", "Wrap it in <think>…</think> tags.", "Close it with </think>.", "<thinking>"],
)
async def test_an_answer_without_a_leading_reasoning_block_is_untouched(
    openai: Provider, double: ModelDouble, answer: str
) -> None:
    double.responder = lambda system, user, model: answer
    completion = await call(openai, "qwen3")
    assert completion.text == answer and completion.notes == ()


# -- openai-compatible: max_completion_tokens -----------------------------------------------


async def test_a_model_refusing_max_tokens_gets_max_completion_tokens_and_is_remembered(
    openai: Provider, double: ModelDouble
) -> None:
    double.refuses_max_tokens = {"gpt-5"}
    first = await call(openai, "gpt-5")
    assert first.text == "[gpt-5] HELLO"
    refused, retried = double.requests
    assert (refused["status"], refused["params"]["max_tokens"]) == (400, 50)
    assert retried["status"] == 200
    assert retried["params"] == {"temperature": 0.3, "max_completion_tokens": 50}
    note = "max_tokens 50 sent as max_completion_tokens: gpt-5 refuses max_tokens"
    assert first.notes == (note,)

    again = await call(openai, "gpt-5")  # straight to max_completion_tokens, noted every time
    assert double.request_count == 3 and again.notes == (note,)
    assert double.requests[-1]["params"] == {"temperature": 0.3, "max_completion_tokens": 50}

    other = make_provider("openai-compatible", timeout=5, max_retries=0)  # process-wide
    try:
        await call(other, "gpt-5")
        assert double.request_count == 4
        await call(other, "llama3")  # per model: another one still gets max_tokens
        assert double.requests[-1]["params"] == {"temperature": 0.3, "max_tokens": 50}
    finally:
        await other.aclose()


async def test_another_400_from_an_openai_compatible_server_is_an_error_not_retried(
    openai: Provider, double: ModelDouble
) -> None:
    double.fail_next(1, status=400, message="'messages' must contain the word 'json'")
    with pytest.raises(ProviderError, match="answered 400: 'messages' must contain"):
        await call(openai, "gpt-5")
    assert double.request_count == 1
    await call(openai, "gpt-5")
    assert double.requests[-1]["params"]["max_tokens"] == 50  # nothing was learned


# -- anthropic: temperature -----------------------------------------------------------------


async def test_the_temperature_and_the_few_shot_turns_go_out(
    anthropic: Provider, openai: Provider, double: ModelDouble
) -> None:
    turns = [
        {"role": "user", "content": "How many projects on Team?"},
        {"role": "assistant", "content": "25 projects."},
        {"role": "user", "content": "And on Business?"},
    ]
    for provider, model in ((anthropic, "claude-sonnet-4-5"), (openai, "llama3")):
        completion = await provider.complete(
            model=model, system="Be brief.", messages=turns, temperature=0.3, max_tokens=50
        )
        assert completion.text == f"[{model}] AND ON BUSINESS?" and completion.notes == ()
    to_anthropic, to_openai = double.requests
    assert to_anthropic["messages"] == turns
    assert to_anthropic["params"] == {"temperature": 0.3, "max_tokens": 50}
    assert to_openai["messages"] == [{"role": "system", "content": "Be brief."}, *turns]
    assert to_openai["params"] == {"temperature": 0.3, "max_tokens": 50}


async def test_a_model_refusing_sampling_is_retried_without_temperature_and_remembered(
    anthropic: Provider, double: ModelDouble
) -> None:
    double.refuses_sampling = {"claude-fable-5"}
    note = "temperature 0.3 not sent: claude-fable-5 refuses sampling parameters"
    first = await call(anthropic, "claude-fable-5")
    assert first.text == "[claude-fable-5] HELLO" and first.notes == (note,)
    refused, retried = double.requests
    assert (refused["status"], refused["params"]["temperature"]) == (400, 0.3)
    assert retried["status"] == 200 and "temperature" not in retried["params"]

    again = await call(anthropic, "claude-fable-5")  # one request, and the note again
    assert double.request_count == 3 and again.notes == (note,)
    assert "temperature" not in double.requests[-1]["params"]

    await call(anthropic, "claude-sonnet-4-5")  # per model
    assert double.requests[-1]["params"]["temperature"] == 0.3


async def test_the_real_apis_wording_of_the_refusal_is_recognised(
    anthropic: Provider, double: ModelDouble
) -> None:
    double.fail_next(1, status=400, message="`temperature` is deprecated for this model.")
    completion = await call(anthropic, "claude-opus-5")
    assert completion.notes == (
        "temperature 0.3 not sent: claude-opus-5 refuses sampling parameters",
    )
    assert double.request_count == 2 and "temperature" not in double.requests[-1]["params"]


@pytest.mark.parametrize(
    ("temperature", "message", "error"),
    [
        (1.5, None, "answered 400: temperature: Input should be less than or equal to 1"),
        (0.3, "max_tokens: 9000 > 8192, the maximum", "answered 400: max_tokens: 9000 > 8192"),
        (0.3, "top_p: Extra inputs are not permitted", "answered 400: top_p: Extra inputs"),
    ],
)
async def test_another_400_from_anthropic_is_an_error_not_retried(
    anthropic: Provider,
    double: ModelDouble,
    temperature: float,
    message: str | None,
    error: str,
) -> None:
    if message:
        double.fail_next(1, status=400, message=message)
    with pytest.raises(ProviderError, match=error):
        await call(anthropic, "claude-sonnet-4-5", temperature=temperature)
    assert double.request_count == 1
    await call(anthropic, "claude-sonnet-4-5")
    assert double.requests[-1]["params"]["temperature"] == 0.3  # nothing was learned


# -- through the runner ---------------------------------------------------------------------

SUITE = [
    {"input": "How many projects on Team?", "expected": "25 projects", "type": "contains"},
    {"input": "Where is order 7?", "expected": "shipped", "type": "contains"},
]


def reasoning_model(system: str, user: str, model: str) -> str | ToolCall:
    if user == "Where is order 7?":
        return ToolCall("lookup_order", {"order": 7})
    return "<think>The Team plan: 25 projects.</think>\nThe Team plan includes 25 projects."


async def run_suite(core: Promptship, tests: list[dict[str, object]]) -> int:
    yaml = prompt_yaml("support-bot", "1.0.0", tests=tests, provider="openai-compatible")
    await core.push(parse_prompt(yaml.replace("claude-sonnet-4-5", "qwen3")), slack(AUTHOR))
    async with SuiteRunner(core, settings=RunnerSettings(timeout=5, max_retries=0)) as work:
        run = await work.execute(await work.start("support-bot", "1.0.0", slack(REQUESTER)))
    return run.id


async def test_a_tool_calling_answer_errors_its_case_naming_the_tool(
    core: Promptship, double: ModelDouble
) -> None:
    double.responder = reasoning_model
    run = await core.validation_run(await run_suite(core, SUITE))
    assert (run.state, run.passed, run.failed, run.errored) == ("failed", 1, 0, 1)
    errored = next(r for r in run.results if r["error"])
    assert errored["input"] == "Where is order 7?" and errored["got"] is None
    assert errored["error"] == "the model called the tool lookup_order instead of answering"


@pytest.mark.parametrize("strip", [True, False])
async def test_the_policy_switch_decides_whether_reasoning_is_checked(
    db: Database, clock: ManualClock, double: ModelDouble, strip: bool
) -> None:
    core = Promptship(db, make_policy(f"strip_reasoning: {str(strip).lower()}"), clock)
    double.responder = reasoning_model
    starts = {"input": "How many projects on Team?", "expected": "^The Team", "type": "regex"}
    run = await core.validation_run(await run_suite(core, [starts]))
    assert run.passed == (1 if strip else 0)
    assert run.results[0]["got"].startswith("<think>") is not strip


async def test_a_temperature_the_model_refuses_is_recorded_on_the_run(
    core: Promptship, double: ModelDouble, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ANTHROPIC_API_KEY", "test-key")
    monkeypatch.setenv("ANTHROPIC_BASE_URL", double.url)
    double.refuses_sampling = {"claude-sonnet-4-5"}
    double.responder = lambda system, user, model: "The Team plan includes 25 projects."
    await core.push(
        parse_prompt(prompt_yaml("support-bot", "1.0.0", tests=SUITE[:1])), slack(AUTHOR)
    )
    async with SuiteRunner(core, settings=RunnerSettings(timeout=5, max_retries=0)) as work:
        run = await work.execute(await work.start("support-bot", "1.0.0", slack(REQUESTER)))
    assert (run.state, run.passed) == ("passed", 1)
    assert run.notes == ["temperature 0.7 not sent: claude-sonnet-4-5 refuses sampling parameters"]
    assert "temperature" not in double.requests[-1]["params"]
