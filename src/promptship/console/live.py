"""Live updates: a server-sent events stream that tells a signed-in page when something it
shows has changed (a pointer moved, a request changed state), so ``static/console.js``
re-fetches the overview's fragment without a reload.

The stream listens through the runtime API's deployment watcher (one poll of the store per
process, shared with the long-polls). Streams are bounded: at most ``max_streams`` per
process, a comment every ``heartbeat`` seconds (so proxies and the browser see a live
connection), the session checked on every wake, and all of them end as soon as the server
starts to shut down (``close``), so a restart is not held up by open pages."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable
from typing import TYPE_CHECKING

from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response, StreamingResponse
from starlette.types import Receive, Scope, Send

from promptship.console.pages import Pages, secured
from promptship.errors import Unavailable
from promptship.services import Promptship

if TYPE_CHECKING:
    from promptship.api import DeploymentWatcher, Marks

#: open streams one process serves; past it new pages answer 503 and retry later
MAX_STREAMS = 100
#: seconds between heartbeat comments
HEARTBEAT = 15.0
#: how long the browser waits before reconnecting a stream that ended, in milliseconds
RETRY_MS = 3000


class _Stream(StreamingResponse):
    """A streaming response that calls ``done`` however it ends (even if never started)."""

    def __init__(self, body: AsyncIterator[str], done: Callable[[], None]) -> None:
        super().__init__(
            body,
            media_type="text/event-stream",
            headers={"X-Accel-Buffering": "no"},  # nginx: pass each event on at once
        )
        self._done = done

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            self._done()


class LiveUpdates:
    def __init__(
        self,
        pages: Pages,
        core: Promptship,
        watcher: DeploymentWatcher,
        max_streams: int | None = None,
        heartbeat: float | None = None,
    ) -> None:
        self.pages = pages
        self.core = core
        self.watcher = watcher
        self.max_streams = MAX_STREAMS if max_streams is None else max_streams
        self.heartbeat = HEARTBEAT if heartbeat is None else heartbeat
        self.open = 0
        self.closing = False

    def close(self) -> None:
        """End every stream now (the server is shutting down); new ones are refused."""
        self.closing = True
        self.watcher.wake_listeners()

    async def events(self, request: Request) -> Response:
        if self.pages.session_of(request, self.core.clock.now()) is None:
            return secured(PlainTextResponse("Sign in first: live updates need a session.", 401))
        if self.closing or self.open >= self.max_streams:
            return secured(
                PlainTextResponse(
                    "Too many live connections to this server; the page retries later.",
                    503,
                    headers={"Retry-After": "30"},
                )
            )
        try:
            marks = await self.watcher.marks()
        except Unavailable as exc:
            return secured(PlainTextResponse(exc.message, 503, headers={"Retry-After": "30"}))
        self.open += 1
        return secured(_Stream(self._stream(request, marks), self._ended))

    def _ended(self) -> None:
        self.open -= 1

    async def _stream(self, request: Request, marks: Marks) -> AsyncIterator[str]:
        yield f"retry: {RETRY_MS}\n: live\n\n"
        while not self.closing:
            changed = await self.watcher.wait_change(marks, self.heartbeat)
            if self.closing:
                break
            if self.pages.session_of(request, self.core.clock.now()) is None:
                yield "event: signed-out\ndata: {}\n\n"
                break
            if changed is None:
                yield ": heartbeat\n\n"
                continue
            data = {
                "deployments": [f"{name}/{env}" for name, env in changed.moved(marks)],
                "activity": changed.activity != marks.activity,
            }
            marks = changed
            yield f"event: change\ndata: {json.dumps(data)}\n\n"
