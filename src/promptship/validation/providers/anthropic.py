"""The Anthropic Messages API through the official SDK (``AsyncAnthropic``).

Retries (429 with ``retry-after``, 5xx, 529 overloaded) are the SDK's own; each call is
bounded by our own timeout as well, because the SDK honours whatever ``retry-after`` the
server sends. The prompt's ``temperature`` is not sent: Messages API version 2026-10-21 (the
SDK's default) refuses sampling parameters, and SDK 2.x removed them.
"""

from __future__ import annotations

import asyncio
import time

import anthropic

from promptship.validation.providers.base import Completion, ProviderError


class AnthropicProvider:
    name = "anthropic"

    def __init__(self, *, timeout: float, max_retries: int) -> None:
        self.timeout = timeout
        self._client = anthropic.AsyncAnthropic(max_retries=max_retries, timeout=timeout)

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
                message = await self._client.messages.create(
                    model=model,
                    system=system,
                    messages=messages,  # type: ignore[arg-type]
                    max_tokens=max_tokens,
                )
        except TimeoutError:
            raise ProviderError(f"timed out after {self.timeout:g}s") from None
        except anthropic.APITimeoutError:
            raise ProviderError(f"timed out after {self.timeout:g}s") from None
        except anthropic.APIConnectionError:
            raise ProviderError(
                f"cannot reach the provider at {self._client.base_url}: connection failed"
            ) from None
        except anthropic.RateLimitError:
            raise ProviderError("rate limited by the provider (429) after retries") from None
        except anthropic.APIStatusError as exc:
            if exc.status_code == 529:
                raise ProviderError("the provider is overloaded (529) after retries") from None
            raise ProviderError(
                f"the provider answered {exc.status_code}: {_message(exc)}"
            ) from None
        text = "".join(block.text for block in message.content if block.type == "text")
        return Completion(
            text=text,
            input_tokens=message.usage.input_tokens,
            output_tokens=message.usage.output_tokens,
            latency_ms=(time.perf_counter() - started) * 1000,
        )

    async def aclose(self) -> None:
        await self._client.close()


def _message(exc: anthropic.APIStatusError) -> str:
    body = exc.body
    if isinstance(body, dict):
        error = body.get("error")
        if isinstance(error, dict) and error.get("message"):
            return str(error["message"])[:300]
    return str(exc.message)[:300]
