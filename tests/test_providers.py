"""The real SDK clients against the model double over loopback HTTP."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import pytest

from promptship.testing.model_double import ModelDouble
from promptship.validation.providers import ProviderError, ProviderNotConfigured, make_provider
from promptship.validation.providers.base import Provider


@pytest.fixture
def double(monkeypatch: pytest.MonkeyPatch) -> Iterator[ModelDouble]:
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


async def test_rate_limits_are_retried_by_the_sdk(anthropic: Provider, double: ModelDouble) -> None:
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
