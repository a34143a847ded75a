"""Any ``/v1/chat/completions`` endpoint (vLLM, Ollama, llama.cpp server) through the
official ``openai`` SDK, whose retries honour ``retry-after``; bounded by our own timeout."""

from __future__ import annotations

import asyncio
import os
import time

import openai

from promptship.validation.providers.base import Completion, ProviderError


class OpenAICompatibleProvider:
    name = "openai-compatible"

    def __init__(self, *, timeout: float, max_retries: int) -> None:
        self.timeout = timeout
        self._client = openai.AsyncOpenAI(
            api_key=os.environ.get("OPENAI_API_KEY") or "not-needed",
            max_retries=max_retries,
            timeout=timeout,
        )

    async def complete(
        self,
        *,
        model: str,
        system: str,
        messages: list[dict[str, str]],
        temperature: float,
        max_tokens: int,
    ) -> Completion:
        started = time.perf_counter()
        try:
            async with asyncio.timeout(self.timeout):
                response = await self._client.chat.completions.create(
                    model=model,
                    messages=[{"role": "system", "content": system}, *messages],  # type: ignore[list-item]
                    temperature=temperature,
                    max_tokens=max_tokens,
                )
        except (TimeoutError, openai.APITimeoutError):
            raise ProviderError(f"timed out after {self.timeout:g}s") from None
        except openai.APIConnectionError:
            raise ProviderError(
                f"cannot reach the provider at {self._client.base_url}: connection failed"
            ) from None
        except openai.RateLimitError:
            raise ProviderError("rate limited by the provider (429) after retries") from None
        except openai.APIStatusError as exc:
            raise ProviderError(
                f"the provider answered {exc.status_code}: {str(exc.message)[:300]}"
            ) from None
        choice = response.choices[0] if response.choices else None
        usage = response.usage
        return Completion(
            text=(choice.message.content or "") if choice else "",
            input_tokens=usage.prompt_tokens if usage else None,
            output_tokens=usage.completion_tokens if usage else None,
            latency_ms=(time.perf_counter() - started) * 1000,
        )

    async def aclose(self) -> None:
        await self._client.close()
