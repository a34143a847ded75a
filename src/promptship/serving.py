"""uvicorn's server, ending the app's open streams as soon as shutdown starts.

uvicorn waits (up to its graceful timeout) for responses in progress before it runs the
app's lifespan shutdown; a stream that never ends (the console's live updates) would hold
every restart up that long. The app lists what ends its streams in ``app.state.stopping``
(``promptship.server.create_app`` does); this server calls those first."""

from __future__ import annotations

import socket
from collections.abc import Callable, Iterable

import uvicorn


class Server(uvicorn.Server):
    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        state = getattr(self.config.app, "state", None)
        stopping: Iterable[Callable[[], None]] = getattr(state, "stopping", None) or ()
        for stop in stopping:
            stop()
        await super().shutdown(sockets)
