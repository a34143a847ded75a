"""The ASGI app ``promptship serve`` runs: Slack (``POST /slack/events``), the HTTP API, the
read-only web console, health checks, and the background workers (validation runs, the
notification outbox)."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
from collections.abc import AsyncIterator, Callable, Coroutine
from contextlib import asynccontextmanager
from datetime import timedelta
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

from promptship.auditkeys import ENV_VAR as AUDIT_KEY_VAR
from promptship.config import Policy, Settings
from promptship.domain.identity import Permission
from promptship.health import About, home_for, readyz_for
from promptship.services import Promptship
from promptship.single_process import SingleProcessLock
from promptship.store.db import Database
from promptship.worker import worker_id

log = logging.getLogger("promptship.server")


def create_app(
    settings: Settings,
    policy: Policy | None = None,
    *,
    migrate: bool = True,
    workers: bool = True,
    lock: SingleProcessLock | None = None,
) -> Starlette:
    """Build the app. The policy and Slack settings are checked (and refused if bad) before
    anything starts; with ``migrate`` the schema is brought up to date on start-up; with
    ``workers`` the validation worker and the Slack dispatcher run in the background.

    With workers on a SQLite file the app holds the file's single-process lock while it
    runs: ``lock`` if given (``serve`` takes it before binding its port), else taken on
    start-up, which fails with ``Conflict`` while another process holds it."""
    from bot.app import BotIdentity, build_app, check_settings, web_client
    from bot.blocks.links import ConsoleLinks
    from bot.directory import SlackGroupDirectory
    from bot.dispatcher import SlackDispatcher
    from promptship.limits import slack_guard
    from promptship.metrics import Metrics

    policy = policy or settings.policy()
    slack_mode = check_settings(settings)
    audit_keys = settings.audit_keys()  # none outside SQLite trial mode: refuse to start
    if audit_keys.source != AUDIT_KEY_VAR:
        log.warning(
            "PROMPTSHIP_AUDIT_KEY is not set: the audit log is signed with the trial key in %s "
            "(SQLite only; keep it out of git, back it up, and set PROMPTSHIP_AUDIT_KEY, made "
            "with `promptship audit keygen`, before going to PostgreSQL)",
            audit_keys.source,
        )
    from promptship.api_auth import Authenticator
    from promptship.services.tokens import parse_env_tokens

    # a malformed entry or an unknown scope stops start-up here, naming the entry
    env_tokens = parse_env_tokens(
        settings.api_tokens.get_secret_value() if settings.api_tokens is not None else None
    )
    db = Database(settings.database_url, audit_keys=audit_keys, timeout=settings.db_timeout)
    routes = [Route("/healthz", _healthz)]
    background: list[Callable[[], Coroutine[Any, Any, None]]] = []
    slack_app = None
    identity = None
    dispatcher = None
    client = web_client(settings) if slack_mode is not None else None
    core = Promptship(db, policy, directory=SlackGroupDirectory(client) if client else None)
    metrics = Metrics(core)
    auth = Authenticator(core, env_tokens)
    if client is not None:
        from slack_bolt.adapter.starlette.async_handler import AsyncSlackRequestHandler

        identity = BotIdentity(client)
        slack_app = build_app(settings, core, client, identity)
        handler = AsyncSlackRequestHandler(slack_app)
        secret = settings.slack_signing_secret

        async def slack_events(request: Request) -> Response:
            with metrics.ack_latency.time():
                refused = await slack_guard(request, secret.get_secret_value() if secret else None)
                return refused or await handler.handle(request)

        # only HTTP mode has a secret to verify requests with: in Socket Mode events come over
        # Slack's websocket, and an HTTP route would take requests signed with no key at all
        if slack_mode == "http" and secret is not None:
            routes.append(Route("/slack/events", slack_events, methods=["POST"]))
        dispatcher = SlackDispatcher(
            core,
            client,
            worker=worker_id(),
            on_error=lambda error: metrics.slack_errors.labels(error=error).inc(),
            max_attempts=settings.outbox_max_attempts,
            console=ConsoleLinks.from_public_url(settings.public_url),
        )
        background.append(dispatcher.run_forever)

    # once tokens are configured, the metrics (names of prompts, who approves) need a read token
    routes.append(Route("/metrics", auth.guard(Permission.READ, metrics.endpoint)))

    def scheduler_running() -> bool:
        return bool(getattr(app.state, "scheduler", None) and app.state.scheduler.alive)

    scheduler_alive = scheduler_running if workers else None
    routes.append(Route("/readyz", readyz_for(db, scheduler_alive)))
    about = About(slack_mode=slack_mode, workers=workers)
    from promptship.console import console_routes

    # what the server is and whether it is healthy: for people at /about, for scripts at /
    facts = home_for(db, about, scheduler_alive)
    routes.append(Route("/about", facts, methods=["GET"]))
    from promptship.api import DeploymentWatcher
    from promptship.api import routes as api_routes

    watcher = DeploymentWatcher(core)
    # what ends open streams (the console's live updates) as the server starts shutting down
    stopping: list[Callable[[], None]] = []
    routes.extend(console_routes(settings, core, facts, watcher, stopping))
    routes.extend(api_routes(core, auth, watcher))

    if workers:

        async def validation_worker() -> None:
            from promptship.validation.runner import SuiteRunner, ValidationWorker

            async with SuiteRunner(core) as runner:
                app.state.runner = runner
                await ValidationWorker(runner).run_forever()

        background.append(validation_worker)

        async def soak_scheduler() -> None:
            from promptship.soak.cycle import run_cycle
            from promptship.soak.scheduler import Scheduler
            from promptship.validation.scoring import get_scorer

            scheduler = Scheduler(
                core,
                lambda spec: run_cycle(
                    spec,
                    get_scorer(),
                    pages=core.soak_sample_pages,
                    strip_reasoning=core.policy.strip_reasoning,
                ),
                lease=timedelta(seconds=settings.claim_lease),
                reconcile_every=settings.scheduler_tick,
            )
            app.state.scheduler = scheduler
            await scheduler.run_forever()

        background.append(soak_scheduler)

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        single = lock or (SingleProcessLock.for_url(settings.database_url) if workers else None)
        if single is not None:
            single.acquire()  # a second server on one SQLite file stops here, before migrating
        if migrate:
            await db.upgrade()
        gc.freeze()  # what is loaded by now lives as long as the process: spare it full GCs
        log.info("database at revision %s", await db.current_revision())
        if slack_mode is None:
            log.warning("Slack is off: no SLACK_BOT_TOKEN; serving the API and workers only")
        # e-mail addresses in roles are looked up now, without holding start-up up
        roles_check = asyncio.create_task(_name_unresolved_role_emails(core))
        if identity is not None:  # the bot's identity too: no Slack request waits for auth.test
            identity.look_up()
        tasks: list[asyncio.Task[None]] = (
            [asyncio.create_task(job()) for job in background] if workers else []
        )
        socket_handler: Any = None
        if slack_mode == "socket" and slack_app is not None and settings.slack_app_token:
            from slack_bolt.adapter.socket_mode.async_handler import AsyncSocketModeHandler

            socket_handler = AsyncSocketModeHandler(
                slack_app, settings.slack_app_token.get_secret_value()
            )
            await socket_handler.connect_async()
        try:
            yield
        finally:
            roles_check.cancel()
            if identity is not None:
                identity.stop()
            if socket_handler is not None:
                await socket_handler.close_async()
            runner = getattr(app.state, "runner", None)
            if runner is not None:
                runner.shutting_down = True  # a run cut short is recorded as interrupted
            scheduler = getattr(app.state, "scheduler", None)
            if scheduler is not None:
                scheduler.shutting_down = True  # a cycle cut short is handed back, uncounted
            for task in tasks:
                task.cancel()
            for outcome in await asyncio.gather(*tasks, return_exceptions=True):
                if isinstance(outcome, Exception):
                    log.error("background worker had failed: %r", outcome)
            await asyncio.wait([roles_check])  # nothing reads the database past dispose
            for stop in stopping:  # a server other than promptship.serving's: streams end here
                stop()
            await watcher.close()
            if dispatcher is not None:  # what is due now goes out before we stop
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(dispatcher.deliver_once(), timeout=5)
            if single is not None:
                single.release()
            await db.dispose()

    from starlette.middleware import Middleware

    from promptship.limits import BodyLimits, limits_from
    from promptship.logs import RequestIds

    app = Starlette(
        routes=routes,
        lifespan=lifespan,
        exception_handlers={Exception: _failed},
        middleware=[
            Middleware(RequestIds),
            Middleware(BodyLimits, limit_for=limits_from(settings)),
        ],
    )
    app.state.core = core
    app.state.stopping = stopping  # promptship.serving.Server calls these as shutdown starts
    return app


async def _name_unresolved_role_emails(core: Promptship) -> None:
    """Name, in one warning line, every e-mail address in the roles that names nobody
    (so grants nothing)."""
    try:
        problems = await core.roles.unresolved_emails()
    except Exception:
        log.exception("roles: could not look up the e-mail addresses in the roles")
        return
    if problems:
        log.warning("roles: %s", "; ".join(problems))


async def _failed(request: Request, exc: Exception) -> Response:
    """What a request that failed unexpectedly (a database error, a bug) answers: a problem
    document on the API, a sentence elsewhere; never a traceback. The error is logged."""
    detail = "the server could not answer this request; the error was logged"
    if request.url.path.startswith("/v1/"):
        return JSONResponse(
            {"type": "about:blank", "title": "Internal error", "status": 500, "detail": detail},
            status_code=500,
            media_type="application/problem+json",
        )
    return PlainTextResponse(f"Something went wrong on our side: {detail}.", status_code=500)


async def _healthz(request: Request) -> JSONResponse:
    return JSONResponse({"status": "ok"})
