"""The Anthropic Messages API through the official SDK (``AsyncAnthropic``).

Retries (429 with ``retry-after``, 5xx, 529 overloaded, a failed connection) are made here,
not by the SDK (``max_retries=0``), as many as the SDK would make and on the same statuses:
each attempt goes through the caller's concurrency limiter
(:mod:`promptship.validation.concurrency`), which hears of every 429 and 529 and reads the
``anthropic-ratelimit-*`` headers of every response (``with_raw_response``), so a run
slows down when the API asks it to. Each call, retries included, is bounded by our own
timeout. The prompt's ``temperature`` is sent, so the suite runs as production does;
SDK 2.x has no parameter for it, so it goes in the request body. A model whose API refuses
sampling parameters answers 400 to it: that refusal is recognised, the model remembered (per
base URL, for the process) and the call made again without it, and every completion of that
model carries a note saying the temperature was not sent. An answer that only calls tools
(``tool_use`` blocks, no text) is a ProviderError naming them: its case is errored.
"""

from __future__ import annotations

import asyncio
import functools
import re
import time
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

import anthropic
from anthropic.types import Message

from promptship.validation.concurrency import (
    Budget,
    Lease,
    Refused,
    WaitTooLong,
    current_lease,
    retrying,
)
from promptship.validation.providers.base import (
    Completion,
    Learned,
    ProviderError,
    called_tools,
    not_an_answer,
    shown_url,
    tls_context,
)

#: (base URL, model) pairs whose API refuses ``temperature``
REFUSES_TEMPERATURE = Learned()

#: the API's words when a model takes no sampling parameters: the current wording
#: ("`temperature` is deprecated for this model.") and the schema's ("temperature: Extra
#: inputs are not permitted"); nothing looser, so any other 400 stays an error
_REFUSAL = re.compile(
    r"`?temperature`?(?: is deprecated for this model|: extra inputs are not permitted)\.?",
    re.IGNORECASE,
)


class AnthropicProvider:
    name = "anthropic"

    def __init__(self, *, timeout: float, max_retries: int) -> None:
        self.timeout = timeout
        self.max_retries = max_retries
        self._client = anthropic.AsyncAnthropic(
            max_retries=0,
            timeout=timeout,
            http_client=anthropic.DefaultAsyncHttpxClient(verify=tls_context(), timeout=timeout),
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
        key = (str(self._client.base_url), model)
        send_temperature = key not in REFUSES_TEMPERATURE
        lease = current_lease()
        try:
            async with asyncio.timeout(self.timeout) as scope:
                create = functools.partial(
                    self._create,
                    lease,
                    scope.when(),
                    model,
                    system,
                    messages,
                    max_tokens,
                    temperature,
                )
                try:
                    message = await create(send_temperature)
                except anthropic.BadRequestError as exc:
                    if not (send_temperature and _refuses_temperature(exc)):
                        raise
                    REFUSES_TEMPERATURE.add(key)
                    send_temperature = False
                    message = await create(send_temperature)
        except WaitTooLong as exc:
            raise ProviderError(str(exc)) from None
        except TimeoutError:
            raise ProviderError(f"timed out after {self.timeout:g}s") from None
        except anthropic.APITimeoutError:
            raise ProviderError(f"timed out after {self.timeout:g}s") from None
        except anthropic.APIConnectionError:
            raise ProviderError(
                f"cannot reach the provider at {shown_url(self._client.base_url)}: connection failed"
            ) from None
        except anthropic.RateLimitError:
            raise ProviderError("rate limited by the provider (429) after retries") from None
        except anthropic.APIStatusError as exc:
            if exc.status_code == 529:
                raise ProviderError("the provider is overloaded (529) after retries") from None
            raise ProviderError(
                f"the provider answered {exc.status_code}: {_message(exc)}"
            ) from None
        try:
            text = "".join(block.text for block in message.content if block.type == "text")
            tools = [block.name for block in message.content if block.type == "tool_use"]
            input_tokens, output_tokens = message.usage.input_tokens, message.usage.output_tokens
        except Exception:  # a body of the wrong shape: what a proxy made of the answer
            raise self._not_an_answer() from None
        if not text.strip() and tools:
            raise called_tools(tools)
        notes: tuple[str, ...] = ()
        if not send_temperature:
            notes = (f"temperature {temperature:g} not sent: {model} refuses sampling parameters",)
        return Completion(
            text=text,
            input_tokens=input_tokens,
            output_tokens=output_tokens,
            latency_ms=(time.perf_counter() - started) * 1000,
            notes=notes,
        )

    async def _create(
        self,
        lease: Lease,
        deadline: float | None,
        model: str,
        system: str,
        messages: list[dict[str, str]],
        max_tokens: int,
        temperature: float,
        send_temperature: bool,
    ) -> Message:
        """The message, after up to ``max_retries`` retries made through the lease, which
        hears what each attempt was told."""

        async def attempt() -> Message:
            raw = await self._client.messages.with_raw_response.create(
                model=model,
                system=system,
                messages=messages,  # type: ignore[arg-type]
                max_tokens=max_tokens,
                extra_body={"temperature": temperature} if send_temperature else None,
            )
            try:
                message = await raw.parse()
                usage = message.usage
                tokens = usage.input_tokens + usage.output_tokens
            except Exception:  # an HTML page from a proxy, an error body answered 200
                raise self._not_an_answer(raw.headers.get("content-type")) from None
            lease.succeeded(budgets(raw.headers), tokens)
            return message

        return await retrying(attempt, lease, self.max_retries, _refused, deadline)

    def _not_an_answer(self, content_type: str | None = None) -> ProviderError:
        return not_an_answer(
            self._client.base_url,
            content_type,
            "a Messages API response",
            "is ANTHROPIC_BASE_URL the API, or a page in front of it?",
        )

    async def aclose(self) -> None:
        await self._client.close()


def _error(exc: anthropic.APIStatusError) -> dict[str, Any]:
    """The error object of an error response (the SDK hands over ``body["error"]``, or the
    whole body when it has no ``error`` key)."""
    body = exc.body
    if isinstance(body, dict):
        inner = body.get("error")
        return inner if isinstance(inner, dict) else body
    return {}


def _refused(exc: Exception) -> Refused | None:
    if isinstance(exc, anthropic.APIStatusError):
        headers = exc.response.headers
        return Refused(exc.status_code, headers, budgets(headers))
    if isinstance(exc, anthropic.APIConnectionError):  # timeouts too
        return Refused(None)
    return None


def _refuses_temperature(exc: anthropic.BadRequestError) -> bool:
    error = _error(exc)
    message = str(error.get("message") or "")
    return error.get("type") == "invalid_request_error" and bool(_REFUSAL.fullmatch(message))


def _message(exc: anthropic.APIStatusError) -> str:
    message = _error(exc).get("message")
    return str(message or exc.message)[:300]


def budgets(headers: Mapping[str, str], now: datetime | None = None) -> list[Budget]:
    """The limits a response's ``anthropic-ratelimit-{requests,tokens}-{limit,remaining,
    reset}`` headers report (``reset`` is an RFC 3339 time); a limit missing any of the
    three, or unreadable, is left out."""
    now = now or datetime.now(UTC)
    found = []
    for kind in ("requests", "tokens"):
        prefix = f"anthropic-ratelimit-{kind}-"
        try:
            limit = float(headers[prefix + "limit"])
            remaining = float(headers[prefix + "remaining"])
            reset = datetime.fromisoformat(headers[prefix + "reset"])
        except (KeyError, ValueError):
            continue
        if reset.tzinfo is None:
            continue
        found.append(Budget(kind, limit, remaining, (reset - now).total_seconds()))
    return found
