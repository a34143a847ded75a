"""A local HTTP double of the model APIs: Anthropic Messages and OpenAI chat completions.

Real HTTP over loopback, so the real SDK clients (with their retries) talk to it. Latency and
failures (429 with retry-after, 529 overloaded, 500, a 400 in the API's words) are injected at
will.

    with ModelDouble(latency=0.1) as model:
        os.environ["ANTHROPIC_BASE_URL"] = model.url      # OPENAI_BASE_URL = model.url + "/v1"
        model.responder = lambda system, user, model_name: "25 projects"
        model.fail_next(3, status=429, retry_after=0)
        ...
        assert model.request_count == 4

What real servers do, on demand:

- ``temperature`` is accepted on both APIs; a model in ``refuses_sampling`` is refused it on
  ``/v1/messages`` (400 ``invalid_request_error``, ``temperature: Extra inputs are not
  permitted``), as models that take no sampling parameters are;
- a model in ``refuses_max_tokens`` is refused ``max_tokens`` on ``/v1/chat/completions``
  with OpenAI's 400 (it takes ``max_completion_tokens``);
- a responder that returns a ``ToolCall`` (or a list of them) answers with tool calls and no
  text (``content: null`` and ``tool_calls``; ``tool_use`` blocks on ``/v1/messages``);
- a reasoning model's answer is a responder returning ``"<think>…</think>answer"``;
- a responder returning None answers with nothing (no choices; no content blocks).

A rate limit, as the real APIs keep one: ``model.rate_limit(8, burst=8)`` (or
``--rate-limit 8 --burst 8``) is a token bucket of 8 requests a second holding up to 8;
a request finding it empty is refused at once with a 429, its ``retry-after`` in whole
seconds (as Anthropic's is). Every ``/v1/messages`` answer then carries
``anthropic-ratelimit-requests-{limit,remaining,reset}`` (``reset``: when the bucket is
full again, RFC 3339). ``rejected`` counts the 429s sent; the double run as a process
prints its counts when it stops.

``temperature`` outside 0–1 is refused on ``/v1/messages`` as the API refuses it.
``requests`` records every well-formed request (refused ones too): its path, model, system
prompt, last user message, the whole ``messages`` list as sent, the sampling and limit keys
sent (``params``) and the status answered.

The default responder in a test answers ``"Answer: <the user's message>"``; the double run
as a process of its own (``python -m promptship.testing.model_double``) answers from its
answer book instead (``promptship.testing.answers``: the example suites pass), or echoes with
``--echo``; ``--refuses-sampling MODEL`` and ``--refuses-max-tokens MODEL`` (repeatable) fill
the two sets.
"""

from __future__ import annotations

import asyncio
import itertools
import math
import threading
import time
from typing import Any

from starlette.applications import Starlette
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from promptship.testing.grader import grade, is_judge_request
from promptship.testing.model_wire import (
    MAX_TOKENS_REFUSED,
    PARAMS,
    Responder,
    TokenBucket,
    ToolCall,
    anthropic_error,
    calls_of,
    chat_choices,
    content_blocks,
    count_tokens,
    failure_response,
    sampling_refusal,
    text_of,
)
from promptship.testing.serve import ServerThread

__all__ = ["ModelDouble", "Responder", "TokenBucket", "ToolCall", "echo"]

#: an injected failure: status, retry-after, message (None: the status's usual one)
_Failure = tuple[int, float | None, str | None]


def _grade(system: str, user: str, model: str) -> str:
    return grade(user)


def echo(system: str, user: str, model: str) -> str:
    return f"Answer: {user}"


class ModelDouble:
    def __init__(self, responder: Responder | None = None, latency: float = 0.0) -> None:
        self.responder: Responder = responder or echo
        #: answers requests carrying promptship's judge instructions (llm-rubric); the
        #: default grades deterministically (``promptship.testing.grader``). None: the
        #: responder answers them too.
        self.judge: Responder | None = _grade
        self.latency = latency
        #: every request gets 503 while True (a provider that is down but reachable)
        self.down = False
        #: models whose /v1/messages API refuses sampling parameters (temperature, top_p,
        #: top_k) with a 400
        self.refuses_sampling: set[str] = set()
        #: models whose /v1/chat/completions refuses ``max_tokens`` (OpenAI's newer models:
        #: they take ``max_completion_tokens``)
        self.refuses_max_tokens: set[str] = set()
        self.requests: list[dict[str, Any]] = []
        #: the rate limit (``rate_limit``), None: none
        self.bucket: TokenBucket | None = None
        self._failures: list[_Failure] = []
        self._lock = threading.Lock()
        self._ids = itertools.count(1)
        self._serving: ServerThread | None = None
        self.port = 0

    def _answer(self, system: str, user: str, model: str) -> Any:
        if self.judge is not None and is_judge_request(system):
            return self.judge(system, user, model)
        return self.responder(system, user, model)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def request_count(self) -> int:
        with self._lock:
            return len(self.requests)

    @property
    def rejected(self) -> int:
        """The 429s sent (the rate limit's and injected ones)."""
        with self._lock:
            return sum(1 for request in self.requests if request["status"] == 429)

    def rate_limit(self, per_second: float | None, burst: int | None = None) -> None:
        """Keep a token bucket of ``per_second`` requests a second holding ``burst``
        (default: one second's worth) on ``/v1/messages``; None lifts it."""
        with self._lock:
            self.bucket = (
                None
                if per_second is None
                else TokenBucket(per_second, burst or max(1, math.ceil(per_second)))
            )

    def fail_next(
        self,
        count: int,
        status: int = 429,
        retry_after: float | None = 0.0,
        message: str | None = None,
    ) -> None:
        """The next ``count`` requests fail with ``status`` (its usual message, or
        ``message``: e.g. a 400 in words the real API uses)."""
        with self._lock:
            self._failures.extend([(status, retry_after, message)] * count)

    def reset(self) -> None:
        with self._lock:
            self.requests.clear()
            self._failures.clear()

    # -- the APIs ----------------------------------------------------------------------

    def _record(
        self,
        path: str,
        body: dict[str, Any],
        system: str,
        user: str,
        refused: bool = False,
        headers: dict[str, str] | None = None,
        connection: str = "",
    ) -> _Failure | None:
        """Record a request; the failure to answer with (503 while down, else the next
        injected one, which a request ``refused`` for its parameters does not use up, else
        a 429 when the rate limit is spent). With ``headers``, the rate limit takes the
        request and puts its headers there. ``connection`` names the caller's end of the
        connection the request came on (``host:port``)."""
        with self._lock:
            failure: _Failure | None = None
            if self.down:
                failure = (503, None, None)
            elif not refused and self._failures:
                failure = self._failures.pop(0)
            elif headers is not None and self.bucket is not None:
                allowed, limits = self.bucket.take()
                headers.update(limits)
                if not allowed:
                    failure = (429, None, None)
            self.requests.append(
                {
                    "path": path,
                    "model": body.get("model", ""),
                    "system": system,
                    "user": user,
                    "messages": body.get("messages") or [],
                    "params": {key: body[key] for key in PARAMS if key in body},
                    "status": failure[0] if failure else 400 if refused else 200,
                    "at": time.time(),
                    "connection": connection,
                }
            )
            return failure

    async def _latency(self, arrived: float) -> None:
        """Answer ``latency`` seconds after the request arrived, as a model API's latency is
        counted: the double's own parsing and bookkeeping are part of it, not added to it."""
        if self.latency:
            await asyncio.sleep(max(0.0, arrived + self.latency - time.monotonic()))

    async def _messages(self, request: Request) -> JSONResponse:
        arrived = time.monotonic()
        bearer = request.headers.get("authorization", "").removeprefix("Bearer ").strip()
        if not (request.headers.get("x-api-key") or bearer):
            return anthropic_error(401, "authentication_error", "an API key is required")
        try:
            body = await request.json()
        except ClientDisconnect:  # the caller went away (a server stopped mid-run): no answer
            return JSONResponse({}, status_code=499)
        if not body.get("model") or not body.get("max_tokens") or not body.get("messages"):
            return anthropic_error(
                400, "invalid_request_error", "model, max_tokens and messages are required"
            )
        system = body.get("system") or ""
        if isinstance(system, list):
            system = "".join(part.get("text", "") for part in system)
        user = text_of(body["messages"][-1].get("content"))
        refusal = sampling_refusal(body, self.refuses_sampling)
        limits: dict[str, str] = {}
        failure = self._record(
            "/v1/messages",
            body,
            system,
            user,
            refused=bool(refusal),
            headers=limits,
            connection=_connection(request),
        )
        if failure is not None and "retry-after" in limits:  # refused at the door, at once
            return failure_response(*failure, headers=limits)
        await self._latency(arrived)
        if failure is not None:
            return failure_response(*failure, headers=limits)
        if refusal:
            return anthropic_error(400, "invalid_request_error", refusal)
        answer = self._answer(system, user, body["model"])
        content, written = content_blocks(answer, self._ids)
        return JSONResponse(
            {
                "id": f"msg_{next(self._ids):024d}",
                "type": "message",
                "role": "assistant",
                "model": body["model"],
                "content": content,
                "stop_reason": "tool_use" if calls_of(answer) else "end_turn",
                "stop_sequence": None,
                "usage": {
                    "input_tokens": count_tokens(system) + count_tokens(user),
                    "output_tokens": count_tokens(written),
                },
            },
            headers=limits,
        )

    async def _chat(self, request: Request) -> JSONResponse:
        arrived = time.monotonic()
        body = await request.json()
        messages = body.get("messages") or []
        system = "".join(text_of(m.get("content")) for m in messages if m.get("role") == "system")
        user = next(
            (text_of(m.get("content")) for m in reversed(messages) if m.get("role") == "user"), ""
        )
        model = body.get("model", "")
        refused = "max_tokens" in body and model in self.refuses_max_tokens
        failure = self._record(
            "/v1/chat/completions",
            body,
            system,
            user,
            refused=refused,
            connection=_connection(request),
        )
        await self._latency(arrived)
        if failure is not None:
            return failure_response(*failure, openai=True)
        if refused:  # OpenAI's newer models
            error = {
                "message": MAX_TOKENS_REFUSED,
                "type": "invalid_request_error",
                "param": "max_tokens",
                "code": "unsupported_parameter",
            }
            return JSONResponse({"error": error}, status_code=400)
        answer = self._answer(system, user, model)
        choices, written = chat_choices(answer, self._ids)
        prompt_tokens, completion_tokens = (
            count_tokens(system) + count_tokens(user),
            count_tokens(written),
        )
        return JSONResponse(
            {
                "id": f"chatcmpl-{next(self._ids)}",
                "object": "chat.completion",
                "created": int(time.time()),
                "model": model,
                "choices": choices,
                "usage": {
                    "prompt_tokens": prompt_tokens,
                    "completion_tokens": completion_tokens,
                    "total_tokens": prompt_tokens + completion_tokens,
                },
            }
        )

    # -- lifecycle ---------------------------------------------------------------------

    def start(self) -> ModelDouble:
        app = Starlette(
            routes=[
                Route("/v1/messages", self._messages, methods=["POST"]),
                Route("/v1/chat/completions", self._chat, methods=["POST"]),
            ]
        )
        self._serving = ServerThread(app, name="model-double", lifespan="off").start()
        self.port = self._serving.port
        return self

    def stop(self) -> None:
        """Stop serving: later calls get connection refused."""
        if self._serving is not None:
            self._serving.stop()
            self._serving = None

    def __enter__(self) -> ModelDouble:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _connection(request: Request) -> str:
    """The caller's end of the request's connection: a kept-alive connection's requests
    share it."""
    return f"{request.client.host}:{request.client.port}" if request.client else ""


def main() -> None:
    """Serve the double in its own process (benchmarks, ``promptship doubles``, the demo):
    prints the base URL, then serves, answering from the answer book unless ``--echo``."""
    import argparse

    from promptship.testing.answers import answer
    from promptship.testing.serve import serve_until_signalled

    parser = argparse.ArgumentParser(description="promptship's model API double")
    parser.add_argument("--latency", type=float, default=0.0)
    parser.add_argument(
        "--echo", action="store_true", help="answer 'Answer: <the question>' instead"
    )
    parser.add_argument(
        "--refuses-sampling",
        action="append",
        default=[],
        metavar="MODEL",
        help="a model whose /v1/messages refuses temperature with a 400 (repeatable)",
    )
    parser.add_argument(
        "--refuses-max-tokens",
        action="append",
        default=[],
        metavar="MODEL",
        help="a model whose /v1/chat/completions refuses max_tokens (repeatable)",
    )
    parser.add_argument(
        "--rate-limit",
        type=float,
        default=None,
        metavar="PER_SECOND",
        help="keep a token bucket of this many /v1/messages requests a second",
    )
    parser.add_argument(
        "--burst", type=int, default=None, help="the bucket's size (default: one second's worth)"
    )
    args = parser.parse_args()
    double = ModelDouble(echo if args.echo else answer, latency=args.latency)
    double.refuses_sampling.update(args.refuses_sampling)
    double.refuses_max_tokens.update(args.refuses_max_tokens)
    double.rate_limit(args.rate_limit, args.burst)
    serve_until_signalled(double.start)
    print(f"{double.request_count} requests, {double.rejected} rejected (429)", flush=True)


if __name__ == "__main__":
    main()
