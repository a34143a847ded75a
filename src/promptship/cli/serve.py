"""``promptship serve``: the server process."""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import threading
from types import FrameType
from typing import Annotated

import typer
from rich.markup import escape

from promptship.cli.app import app
from promptship.cli.common import err, guard, settings
from promptship.errors import PromptshipError


@app.command()
def serve(
    host: Annotated[str, typer.Option(help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to listen on.")] = 8000,
) -> None:
    """Run the server: Slack endpoint, HTTP API, health checks (migrates on start)."""
    import uvicorn

    from promptship import logs
    from promptship.server import create_app
    from promptship.single_process import SingleProcessLock

    config = settings()
    secrets = [
        value.get_secret_value()
        for value in (
            config.slack_bot_token,
            config.slack_signing_secret,
            config.slack_app_token,
        )
        if value is not None
    ]
    if config.api_tokens is not None:
        secrets += [part.split(":")[-1] for part in config.api_tokens.get_secret_value().split(",")]
    secrets += [os.environ.get(k, "") for k in ("ANTHROPIC_API_KEY", "OPENAI_API_KEY")]
    if config.audit_key is not None:
        secrets += [
            part.partition(":")[2].strip()
            for part in config.audit_key.get_secret_value().split(",")
        ]
    logs.configure(secrets, os.environ.get("PROMPTSHIP_LOG_LEVEL", "INFO"))
    # SQLite is single-process: a second server on the file stops here, before binding a port
    lock = SingleProcessLock.for_url(config.database_url)
    # until uvicorn takes Ctrl-C over (it then shuts down gracefully), Ctrl-C leaves at once:
    # an interrupted event loop leaves database threads behind that print tracebacks
    main_thread = threading.current_thread() is threading.main_thread()  # else no signals
    previous = signal.signal(signal.SIGINT, _leave) if main_thread else None
    try:
        if lock is not None:
            lock.acquire()
        guard(lambda: _reachable(config.database_url))
        application = create_app(config, lock=lock)
    except PromptshipError as exc:
        err.print(f"[bold red]error:[/] {escape(str(exc))}")
        raise typer.Exit(exc.exit_code) from None
    finally:
        if main_thread:
            signal.signal(signal.SIGINT, previous)
    from promptship.serving import Server

    # open long-polls (up to a minute) must not hold a restart up: after 10 s they are cut
    # and their clients reconnect to another replica, or to this one once it is back; the
    # console's live streams end as shutdown starts (promptship.serving.Server)
    server = Server(
        uvicorn.Config(
            application,
            host=host,
            port=port,
            log_config=None,  # our JSON handler, set up above
            access_log=False,  # the request-id middleware logs each request
            timeout_graceful_shutdown=10,
        )
    )
    with contextlib.suppress(KeyboardInterrupt):
        server.run()
    if not server.started:  # the port was taken, or start-up failed: uvicorn said why
        raise typer.Exit(3)


def _leave(signum: int, frame: FrameType | None) -> None:
    """Ctrl-C during start-up: nothing is written yet (migrations run later, under uvicorn),
    so the process ends here, exit code 130."""
    err.print("interrupted")
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(130)


async def _reachable(url: str) -> None:
    """Fail start-up with one line, not uvicorn's traceback, when the database is out of
    reach (its own engine: the server's belongs to the server's event loop)."""
    from promptship.store.db import Database

    db = Database(url)
    try:
        await db.current_revision()
    finally:
        await db.dispose()
