"""Model providers, chosen per prompt (``provider:``; default anthropic)."""

from __future__ import annotations

import os

from promptship.errors import BadInput
from promptship.validation.providers.base import Completion, Provider, ProviderError

__all__ = ["Completion", "Provider", "ProviderError", "ProviderNotConfigured", "make_provider"]


class ProviderNotConfigured(BadInput):
    """The provider's settings are missing: the run fails before any case runs."""


def make_provider(
    kind: str, *, timeout: float = 60.0, max_retries: int = 4, strip_reasoning: bool = True
) -> Provider:
    """The provider ``kind`` names. ``strip_reasoning`` (the policy's switch) removes a
    reasoning block from the front of an openai-compatible answer; Anthropic's API returns
    its thinking apart from the text already."""
    if kind == "anthropic":
        if not os.environ.get("ANTHROPIC_API_KEY"):
            raise ProviderNotConfigured(
                "ANTHROPIC_API_KEY is not set: the anthropic provider needs it "
                "(and ANTHROPIC_BASE_URL for a proxy)"
            )
        from promptship.validation.providers.anthropic import AnthropicProvider

        return AnthropicProvider(timeout=timeout, max_retries=max_retries)
    if kind == "openai-compatible":
        if not os.environ.get("OPENAI_BASE_URL"):
            raise ProviderNotConfigured(
                "OPENAI_BASE_URL is not set: point it at your /v1 endpoint "
                "(vLLM, Ollama, llama.cpp server)"
            )
        from promptship.validation.providers.openai_compatible import OpenAICompatibleProvider

        return OpenAICompatibleProvider(
            timeout=timeout, max_retries=max_retries, strip_reasoning=strip_reasoning
        )
    raise ProviderNotConfigured(
        f"unknown provider {kind!r}", hint="use anthropic or openai-compatible"
    )
