"""A local HTTP double of the model APIs: Anthropic Messages and OpenAI chat completions.

Real HTTP over loopback, so the real SDK clients (with their retries) talk to it. Latency and
failures (429 with retry-after, 529 overloaded, 500) are injected at will.

    with ModelDouble(latency=0.1) as model:
        os.environ["ANTHROPIC_BASE_URL"] = model.url      # OPENAI_BASE_URL = model.url + "/v1"
        model.responder = lambda system, user, model_name: "25 projects"
        model.fail_next(3, status=429, retry_after=0)
        ...
        assert model.request_count == 4

The default responder in a test answers ``"Answer: <the user's message>"``; the double run
as a process of its own (``python -m promptship.testing.model_double``) answers from its
answer book instead (``promptship.testing.answers``: the example suites pass), or echoes with
``--echo``.
"""

from __future__ import annotations

import asyncio
import itertools
import threading
import time
from collections.abc import Callable
from typing import Any

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from promptship.testing.serve import bind_loopback

Responder = Callable[[str, str, str], str]

_ERRORS = {
    429: ("rate_limit_error", "Rate limited"),
    500: ("api_error", "Internal server error"),
    503: ("api_error", "Service unavailable"),
    529: ("overloaded_error", "Overloaded"),
}


def echo(system: str, user: str, model: str) -> str:
    return f"Answer: {user}"


class ModelDouble:
    def __init__(self, responder: Responder | None = None, latency: float = 0.0) -> None:
        self.responder: Responder = responder or echo
        self.latency = latency
        #: every request gets 503 while True (a provider that is down but reachable)
        self.down = False
        self.requests: list[dict[str, Any]] = []
        self._failures: list[tuple[int, float | None]] = []
        self._lock = threading.Lock()
        self._ids = itertools.count(1)
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None
        self.port = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def request_count(self) -> int:
        with self._lock:
            return len(self.requests)

    def fail_next(self, count: int, status: int = 429, retry_after: float | None = 0.0) -> None:
        with self._lock:
            self._failures.extend([(status, retry_after)] * count)

    def reset(self) -> None:
        with self._lock:
            self.requests.clear()
            self._failures.clear()

    # -- the APIs ----------------------------------------------------------------------

    def _record(
        self, path: str, model: str, system: str, user: str
    ) -> tuple[int, float | None] | None:
        with self._lock:
            self.requests.append(
                {"path": path, "model": model, "system": system, "user": user, "at": time.time()}
            )
            if self.down:
                return (503, None)
            return self._failures.pop(0) if self._failures else None

    @staticmethod
    def _failure(status: int, retry_after: float | None, openai: bool = False) -> JSONResponse:
        kind, message = _ERRORS.get(status, ("api_error", "Error"))
        headers = {}
        if retry_after is not None:
            headers["retry-after"] = str(int(retry_after))
            headers["retry-after-ms"] = str(max(1, int(retry_after * 1000)))
        if openai:
            body: dict[str, Any] = {"error": {"message": message, "type": kind, "code": status}}
        else:
            body = {"type": "error", "error": {"type": kind, "message": message}}
        return JSONResponse(body, status_code=status, headers=headers)

    async def _messages(self, request: Request) -> JSONResponse:
        bearer = request.headers.get("authorization", "").removeprefix("Bearer ").strip()
        if not (request.headers.get("x-api-key") or bearer):
            return _anthropic_error(401, "authentication_error", "an API key is required")
        body = await request.json()
        if not body.get("model") or not body.get("max_tokens") or not body.get("messages"):
            return _anthropic_error(
                400, "invalid_request_error", "model, max_tokens and messages are required"
            )
        sampling = [key for key in ("temperature", "top_p", "top_k") if key in body]
        if sampling:  # API version 2026-10-21 refuses sampling parameters
            return _anthropic_error(
                400, "invalid_request_error", f"{sampling[0]}: Extra inputs are not permitted"
            )
        system = body.get("system") or ""
        if isinstance(system, list):
            system = "".join(part.get("text", "") for part in system)
        user = _text(body["messages"][-1].get("content"))
        failure = self._record("/v1/messages", body["model"], system, user)
        if self.latency:
            await asyncio.sleep(self.latency)
        if failure is not None:
            return self._failure(*failure)
        text = self.responder(system, user, body["model"])
        return JSONResponse(
            {
                "id": f"msg_{next(self._ids):024d}",
                "type": "message",
                "role": "assistant",
                "model": body["model"],
                "content": [{"type": "text", "text": text}],
                "stop_reason": "end_turn",
                "stop_sequence": None,
                "usage": {
                    "input_tokens": _tokens(system) + _tokens(user),
                    "output_tokens": _tokens(text),
                },
            }
        )

    async def _chat(self, request: Request) -> JSONResponse:
        body = await request.json()
        messages = body.get("messages") or []
        system = "".join(_text(m.get("content")) for m in messages if m.get("role") == "system")
        user = next(
            (_text(m.get("content")) for m in reversed(messages) if m.get("role") == "user"), ""
        )
        failure = self._record("/v1/chat/completions", body.get("model", ""), system, user)
        if self.latency:
            await asyncio.sleep(self.latency)
        if failure is not None:
            return self._failure(*failure, openai=True)
        text = self.responder(system, user, body.get("model", ""))
        prompt_tokens, completion_tokens = _tokens(system) + _tokens(user), _tokens(text)
        return JSONResponse(
            {
                "id": f"chatcmpl-{next(self._ids)}",
                "object": "chat.completion",
                "created": int(time.time()),
                "model": body.get("model", ""),
                "choices": [
                    {
                        "index": 0,
                        "message": {"role": "assistant", "content": text},
                        "finish_reason": "stop",
                    }
                ],
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
        sock = bind_loopback()
        self.port = sock.getsockname()[1]
        # a request still waiting out its latency when the double stops is cut after 1 s
        self._server = uvicorn.Server(
            uvicorn.Config(app, log_level="warning", lifespan="off", timeout_graceful_shutdown=1)
        )
        server = self._server

        def run() -> None:
            asyncio.run(server.serve(sockets=[sock]))
            sock.close()

        self._thread = threading.Thread(target=run, name="model-double", daemon=True)
        self._thread.start()
        deadline = time.monotonic() + 10
        while not server.started and time.monotonic() < deadline:
            time.sleep(0.01)
        return self

    def stop(self) -> None:
        """Stop serving: later calls get connection refused."""
        if self._server is not None and self._thread is not None:
            self._server.should_exit = True
            self._thread.join(timeout=10)
            self._server = None

    def __enter__(self) -> ModelDouble:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _anthropic_error(status: int, kind: str, message: str) -> JSONResponse:
    return JSONResponse(
        {"type": "error", "error": {"type": kind, "message": message}}, status_code=status
    )


def _text(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(part.get("text", "") for part in content if isinstance(part, dict))
    return ""


def _tokens(text: str) -> int:
    return max(1, len(text) // 4)


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
    args = parser.parse_args()
    responder = echo if args.echo else answer
    serve_until_signalled(ModelDouble(responder, latency=args.latency).start)


if __name__ == "__main__":
    main()
