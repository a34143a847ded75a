"""The wire formats of the model double's two APIs (Anthropic Messages and OpenAI chat
completions): answers, error bodies, the parameter refusals real servers make, and the token
bucket of a rate-limited API."""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from starlette.responses import JSONResponse


class TokenBucket:
    """``rate`` requests a second, up to ``burst`` at once; not thread-safe (the double
    takes it under its lock)."""

    def __init__(self, rate: float, burst: int) -> None:
        self.rate = rate
        self.burst = burst
        self._tokens = float(burst)
        self._at = time.monotonic()

    def take(self) -> tuple[bool, dict[str, str]]:
        """Whether a request may go ahead (and it takes its token), and the headers its
        answer carries."""
        now = time.monotonic()
        self._tokens = min(self.burst, self._tokens + (now - self._at) * self.rate)
        self._at = now
        allowed = self._tokens >= 1
        if allowed:
            self._tokens -= 1
        full_in = (self.burst - self._tokens) / self.rate
        headers = {
            "anthropic-ratelimit-requests-limit": str(self.burst),
            "anthropic-ratelimit-requests-remaining": str(math.floor(self._tokens)),
            "anthropic-ratelimit-requests-reset": (
                datetime.now(UTC) + timedelta(seconds=full_in)
            ).isoformat(timespec="milliseconds"),
        }
        if not allowed:  # whole seconds, at least 1, as the real API says it
            headers["retry-after"] = str(max(1, math.ceil((1 - self._tokens) / self.rate)))
        return allowed, headers


@dataclass(frozen=True)
class ToolCall:
    """A responder's answer that calls a tool instead of answering."""

    name: str
    arguments: dict[str, Any] = field(default_factory=dict)


#: what a responder answers: text, tool calls instead of text, or None for no answer at all
Answer = str | ToolCall | list[ToolCall] | None
#: ``(system, user, model) -> answer``
Responder = Callable[[str, str, str], Answer]
#: the keys of a request that change how the model samples or how much it writes
PARAMS = ("temperature", "top_p", "top_k", "max_tokens", "max_completion_tokens")
SAMPLING = ("temperature", "top_p", "top_k")
MAX_TOKENS_REFUSED = (
    "Unsupported parameter: 'max_tokens' is not supported with this model. "
    "Use 'max_completion_tokens' instead."
)

ERRORS = {
    400: ("invalid_request_error", "Invalid request"),
    429: ("rate_limit_error", "Rate limited"),
    500: ("api_error", "Internal server error"),
    503: ("api_error", "Service unavailable"),
    529: ("overloaded_error", "Overloaded"),
}


def failure_response(
    status: int,
    retry_after: float | None,
    message: str | None,
    openai: bool = False,
    headers: dict[str, str] | None = None,
) -> JSONResponse:
    """An injected failure in the API's own error body (OpenAI's with ``openai``), with its
    ``retry-after`` (whole seconds, and ``retry-after-ms``) and the rate limit's headers."""
    kind, usual = ERRORS.get(status, ("api_error", "Error"))
    message = message or usual
    headers = dict(headers or {})
    if retry_after is not None:
        headers["retry-after"] = str(int(retry_after))
        headers["retry-after-ms"] = str(max(1, int(retry_after * 1000)))
    if openai:
        body: dict[str, Any] = {"error": {"message": message, "type": kind, "code": status}}
    else:
        body = {"type": "error", "error": {"type": kind, "message": message}}
    return JSONResponse(body, status_code=status, headers=headers)


def content_blocks(answer: Answer, ids: Iterator[int]) -> tuple[Any, str]:
    """/v1/messages content blocks for a responder's answer, and the text written."""
    calls = calls_of(answer)
    if calls:
        blocks = [
            {
                "type": "tool_use",
                "id": f"toolu_{next(ids):024d}",
                "name": call.name,
                "input": call.arguments,
            }
            for call in calls
        ]
        return blocks, json.dumps([call.arguments for call in calls])
    if answer is None:
        return [], ""
    return [{"type": "text", "text": answer}], str(answer)


def chat_choices(answer: Answer, ids: Iterator[int]) -> tuple[Any, str]:
    """/v1/chat/completions choices for a responder's answer, and the text written."""
    if answer is None:
        return [], ""
    calls = calls_of(answer)
    message: dict[str, Any] = {"role": "assistant", "content": None if calls else answer}
    if calls:
        message["tool_calls"] = [
            {
                "id": f"call_{next(ids)}",
                "type": "function",
                "function": {"name": call.name, "arguments": json.dumps(call.arguments)},
            }
            for call in calls
        ]
    finish = "tool_calls" if calls else "stop"
    written = json.dumps(message["tool_calls"]) if calls else str(answer)
    return [{"index": 0, "message": message, "finish_reason": finish}], written


def anthropic_error(status: int, kind: str, message: str) -> JSONResponse:
    return JSONResponse(
        {"type": "error", "error": {"type": kind, "message": message}}, status_code=status
    )


def sampling_refusal(body: dict[str, Any], refuses_sampling: set[str]) -> str | None:
    """Why /v1/messages refuses a well-formed request's parameters, as the API words it."""
    sampling = [key for key in SAMPLING if key in body]
    if sampling and body["model"] in refuses_sampling:  # takes no sampling parameters
        return f"{sampling[0]}: Extra inputs are not permitted"
    temperature = body.get("temperature", 0)
    if not isinstance(temperature, int | float) or temperature < 0:
        return "temperature: Input should be greater than or equal to 0"
    if temperature > 1:
        return "temperature: Input should be less than or equal to 1"
    return None


def calls_of(answer: Answer) -> list[ToolCall]:
    if isinstance(answer, ToolCall):
        return [answer]
    if isinstance(answer, list):
        return answer
    return []


def text_of(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(part.get("text", "") for part in content if isinstance(part, dict))
    return ""


def count_tokens(text: str) -> int:
    return max(1, len(text) // 4)
