"""Any ``/v1/chat/completions`` endpoint (vLLM, Ollama, llama.cpp server, OpenAI) through the
official ``openai`` SDK. Retries honour ``retry-after`` and are made here, as many as the SDK
would make, through the caller's concurrency limiter (which hears of each 429 and 503:
:mod:`promptship.validation.concurrency`); each call, retries included, is bounded by our
own timeout.

What real servers do that a plain answer does not:

- a model that calls a tool instead of answering (``content: null`` with ``tool_calls``) is
  a ProviderError naming the tool, so its case is errored, not failed on an empty answer;
- reasoning models served by Ollama or vLLM put their reasoning in front of the answer
  (``<think>…</think>``); unless the policy turns it off (``strip_reasoning: false``) it is
  removed before the answer is checked;
- OpenAI's newer models refuse ``max_tokens`` (400, "Use 'max_completion_tokens'
  instead"): the call is made again with ``max_completion_tokens``, and the model remembered
  (per base URL, for the process) so later calls send that straight away.
"""

from __future__ import annotations

import asyncio
import os
import time
from typing import Any

import openai
from openai.types.chat import ChatCompletion

from promptship.validation.concurrency import Refused, WaitTooLong, current_lease, retrying
from promptship.validation.providers.base import (
    Completion,
    Learned,
    ProviderError,
    called_tools,
    not_an_answer,
    shown_url,
    tls_context,
)

#: (base URL, model) pairs that take ``max_completion_tokens`` instead of ``max_tokens``
WANTS_MAX_COMPLETION_TOKENS = Learned()

_OPEN, _CLOSE = "<think>", "</think>"


class OpenAICompatibleProvider:
    name = "openai-compatible"

    def __init__(self, *, timeout: float, max_retries: int, strip_reasoning: bool = True) -> None:
        self.timeout = timeout
        self.max_retries = max_retries
        self.strip_reasoning = strip_reasoning
        self._client = openai.AsyncOpenAI(
            api_key=os.environ.get("OPENAI_API_KEY") or "not-needed",
            max_retries=0,
            timeout=timeout,
            http_client=openai.DefaultAsyncHttpxClient(verify=tls_context(), timeout=timeout),
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
        notes: list[str] = []
        key = (str(self._client.base_url), model)
        completion_tokens = key in WANTS_MAX_COMPLETION_TOKENS
        conversation = [{"role": "system", "content": system}, *messages]
        try:
            async with asyncio.timeout(self.timeout) as scope:
                try:
                    response = await self._create(
                        scope.when(),
                        model,
                        conversation,
                        temperature,
                        max_tokens,
                        completion_tokens,
                    )
                except openai.BadRequestError as exc:
                    if completion_tokens or not _refuses_max_tokens(exc):
                        raise
                    WANTS_MAX_COMPLETION_TOKENS.add(key)
                    completion_tokens = True
                    response = await self._create(
                        scope.when(), model, conversation, temperature, max_tokens, True
                    )
        except WaitTooLong as exc:
            raise ProviderError(str(exc)) from None
        except (TimeoutError, openai.APITimeoutError):
            raise ProviderError(f"timed out after {self.timeout:g}s") from None
        except openai.APIConnectionError:
            raise ProviderError(
                f"cannot reach the provider at {shown_url(self._client.base_url)}: connection failed"
            ) from None
        except openai.RateLimitError:
            raise ProviderError("rate limited by the provider (429) after retries") from None
        except openai.APIStatusError as exc:
            raise ProviderError(
                f"the provider answered {exc.status_code}: {_message(exc)}"
            ) from None
        if completion_tokens:  # every call of the model says so, as every run should
            notes.append(
                f"max_tokens {max_tokens} sent as max_completion_tokens: {model} refuses max_tokens"
            )
        try:
            if not response.choices:
                raise ProviderError("the provider answered with no choices (no answer to check)")
            message = response.choices[0].message
            text = message.content or ""
            if not isinstance(text, str):
                raise TypeError("the message's content is not text")
            tools = [_tool_name(call) for call in message.tool_calls or ()]
            usage = response.usage
            input_tokens = usage.prompt_tokens if usage else None
            output_tokens = usage.completion_tokens if usage else None
        except ProviderError:
            raise
        except Exception:  # a body of the wrong shape: what a proxy made of the answer
            raise self._not_an_answer() from None
        if self.strip_reasoning:
            text, note = strip_reasoning(text)
            if note:
                notes.append(note)
        if not text.strip() and tools:
            raise called_tools(tools)
        return Completion(
            text=text,
            input_tokens=input_tokens,
            output_tokens=output_tokens,
            latency_ms=(time.perf_counter() - started) * 1000,
            notes=tuple(notes),
        )

    async def _create(
        self,
        deadline: float | None,
        model: str,
        conversation: list[dict[str, str]],
        temperature: float,
        max_tokens: int,
        completion_tokens: bool,
    ) -> ChatCompletion:
        limit: dict[str, Any] = (
            {"max_completion_tokens": max_tokens}
            if completion_tokens
            else {"max_tokens": max_tokens}
        )
        lease = current_lease()

        async def attempt() -> ChatCompletion:
            raw = await self._client.chat.completions.with_raw_response.create(
                model=model,
                messages=conversation,  # type: ignore[arg-type]
                temperature=temperature,
                **limit,
            )
            try:
                response: ChatCompletion = raw.parse()
                tokens = response.usage.total_tokens if response.usage else None
            except Exception:  # an HTML page from a proxy, a body of another API
                raise self._not_an_answer(raw.headers.get("content-type")) from None
            lease.succeeded(tokens=tokens)
            return response

        return await retrying(attempt, lease, self.max_retries, _refused, deadline)

    def _not_an_answer(self, content_type: str | None = None) -> ProviderError:
        return not_an_answer(
            self._client.base_url,
            content_type,
            "a chat completions response",
            "is OPENAI_BASE_URL the /v1 endpoint, or a page in front of it?",
        )

    async def aclose(self) -> None:
        await self._client.close()


def strip_reasoning(text: str) -> tuple[str, str | None]:
    """The answer without the reasoning in front of it, and a note when some was removed.

    Removes the ``<think>…</think>`` blocks that open the answer (after any whitespace; one
    or several); tags anywhere else are the answer's own. An opening tag never closed means
    the model spent its tokens reasoning: nothing is left to check."""
    rest = text.lstrip()
    if not rest.startswith(_OPEN):
        return text, None
    while rest.startswith(_OPEN):
        close = rest.find(_CLOSE)
        if close < 0:
            return "", (
                "the answer was all reasoning (a <think> block never closed, out of tokens?):"
                " nothing left to check"
            )
        rest = rest[close + len(_CLOSE) :].lstrip()
    return rest, (
        "reasoning (<think>…</think>) removed from the answer before it was checked "
        "(strip_reasoning in promptship.yaml)"
    )


def _refused(exc: Exception) -> Refused | None:
    if isinstance(exc, openai.APIStatusError):
        return Refused(exc.status_code, exc.response.headers)
    if isinstance(exc, openai.APIConnectionError):  # timeouts too
        return Refused(None)
    return None


def _refuses_max_tokens(exc: openai.BadRequestError) -> bool:
    """OpenAI's refusal of ``max_tokens`` for its newer models (also as Azure and proxies
    relay it): "Unsupported parameter: 'max_tokens' is not supported with this model. Use
    'max_completion_tokens' instead."."""
    message = _message(exc)
    return (
        "'max_tokens' is not supported with this model" in message
        and "max_completion_tokens" in message
    ) or (exc.param == "max_tokens" and exc.code == "unsupported_parameter")


def _message(exc: openai.APIStatusError) -> str:
    body = exc.body  # the SDK hands over the response's ``error`` object
    if isinstance(body, dict) and body.get("message"):
        return str(body["message"])[:300]
    return str(exc.message)[:300]


def _tool_name(call: Any) -> str:
    called = getattr(call, "function", None) or getattr(call, "custom", None)
    return str(getattr(called, "name", None) or "")
