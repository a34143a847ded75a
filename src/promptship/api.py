"""The HTTP API under ``/v1``: what CI pushes through and what apps fetch their prompt from.

Every route needs a bearer token whose scope grants its permission (``promptship.api_auth``):
``runtime`` fetches live prompts and logs traffic, ``read`` reads, ``write`` pushes and
requests promotions, ``approve`` decides too, ``admin`` may also act on behalf of a named
person. With no tokens configured, reads are open and writes are refused. Errors are RFC
9457 problem documents. The runtime endpoint answers with a strong ETag, ``304`` to a
matching ``If-None-Match``, and long-polls with ``?wait=N``: the answer comes as soon as the
environment's pointer moves (on any replica), so a rollback reaches apps in about a second.
It calls the same services as the CLI and the Slack bot; decisions stay with people.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from dataclasses import dataclass

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from promptship.api_auth import (
    ON_BEHALF_HEADER,
    ApiProblem,
    Authenticator,
    caller_of,
    dump,
    field,
    json_body,
)
from promptship.api_auth import problem as problem  # where promptship.api's users find it
from promptship.api_decisions import routes as decision_routes
from promptship.domain.identity import Permission, grants
from promptship.domain.promptfile import PromptSpec, parse_prompt, prompt_from_document
from promptship.domain.safe_load import load_json, nul_path, nul_refusal
from promptship.errors import BadInput
from promptship.services import Promptship
from promptship.services.traffic import MAX_BATCH
from promptship.services.views import DeploymentMove

log = logging.getLogger("promptship.api")

MAX_WAIT = 60.0
#: JSON lists, mappings and items a traffic batch may hold: its samples' keys with room for
#: structured vars, far beyond real batches, far below what a hostile 8 MiB body packs
MAX_TRAFFIC_ITEMS = MAX_BATCH * 100
#: query numbers (?before=, ?limit=) fit a 64-bit integer column
MAX_QUERY_DIGITS = 18


@dataclass(frozen=True)
class Marks:
    """What the console's live updates compare: every pointer's revision, and the audit
    chain's last sequence number (which moves with every request's state change)."""

    revisions: dict[tuple[str, str], int]
    activity: int

    def moved(self, before: Marks) -> list[tuple[str, str]]:
        """The pointers that moved (or appeared, or went) since ``before``."""
        keys = self.revisions.keys() | before.revisions.keys()
        return sorted(k for k in keys if self.revisions.get(k) != before.revisions.get(k))


class DeploymentWatcher:
    """The runtime endpoint's view of the pointers, shared by every request of the process.

    While apps fetch or wait, one poll of the (small) deployments table every ``interval``
    seconds keeps the pointers' revisions; the store is the only channel, so a move made on
    another replica is seen as fast as one made here. A fetch whose revision is unchanged is
    answered from the rendered body of that revision (no query); a long-poll is woken when
    its revision moves. After ``idle`` seconds without requests the poll stops and the next
    request reads the store again. The console's live updates listen through the same poll
    (``wait_change``), which then also reads the audit chain's head.
    """

    def __init__(self, core: Promptship, interval: float = 0.1, idle: float = 60.0) -> None:
        self.core = core
        self.interval = interval
        self.idle = idle
        self.revisions: dict[tuple[str, str], int] = {}
        self._bodies: dict[tuple[str, str], tuple[int, str, bytes]] = {}
        self._waiters: dict[tuple[str, str], list[tuple[int, asyncio.Future[None]]]] = {}
        self._listeners: dict[asyncio.Future[Marks | None], Marks] = {}
        self._task: asyncio.Task[None] | None = None
        self._last_use = 0.0

    def _touch(self) -> None:
        self._last_use = time.monotonic()
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._poll())

    async def current(self, name: str, environment: str) -> tuple[int, str, bytes]:
        """(revision, etag, JSON body) of what ``environment`` runs now."""
        self._touch()
        key = (name, environment)
        cached = self._bodies.get(key)
        if cached is not None and self.revisions.get(key) == cached[0]:
            return cached
        prompt = await self.core.runtime_prompt(name, environment)
        rendered = (prompt.revision, prompt.etag, prompt.model_dump_json().encode())
        self._bodies[key] = rendered
        if self.revisions.get(key, -1) < prompt.revision:
            self.revisions[key] = prompt.revision
        return rendered

    async def wait(self, name: str, environment: str, revision: int, seconds: float) -> bool:
        """Wait until the pointer's revision differs from ``revision``; False on timeout."""
        self._touch()
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        entry = (revision, future)
        self._waiters.setdefault((name, environment), []).append(entry)
        try:
            await asyncio.wait_for(asyncio.shield(future), seconds)
            return True
        except TimeoutError:
            return False
        finally:
            waiting = self._waiters.get((name, environment), [])
            if entry in waiting:
                waiting.remove(entry)
            if not waiting:
                self._waiters.pop((name, environment), None)

    async def marks(self) -> Marks:
        """The pointers' revisions and the audit chain's head, read from the store now."""
        return Marks(await self.core.deployment_revisions(), await self.core.last_audit_seq())

    async def wait_change(self, seen: Marks, seconds: float) -> Marks | None:
        """Wait until the marks differ from ``seen``: the new marks, or None on timeout or
        when ``wake_listeners`` is called."""
        self._touch()
        future: asyncio.Future[Marks | None] = asyncio.get_running_loop().create_future()
        self._listeners[future] = seen
        try:
            return await asyncio.wait_for(asyncio.shield(future), seconds)
        except TimeoutError:
            return None
        finally:
            self._listeners.pop(future, None)

    def wake_listeners(self) -> None:
        """End every ``wait_change`` now, with None (the server is shutting down)."""
        for future in list(self._listeners):
            if not future.done():
                future.set_result(None)

    async def _poll(self) -> None:
        try:
            while self._waiters or self._listeners or time.monotonic() - self._last_use < self.idle:
                try:
                    self.revisions = await self.core.deployment_revisions()
                    activity = await self.core.last_audit_seq() if self._listeners else None
                except Exception:
                    log.exception("could not read the deployment revisions")
                else:
                    for key, waiting in list(self._waiters.items()):
                        current = self.revisions.get(key)
                        for seen, future in list(waiting):
                            if current != seen and not future.done():
                                future.set_result(None)
                    if activity is not None:
                        now = Marks(dict(self.revisions), activity)
                        for listener, before in list(self._listeners.items()):
                            if now != before and not listener.done():
                                listener.set_result(now)
                await asyncio.sleep(self.interval)
        finally:
            self.revisions = {}  # unwatched from here on: the next request reads the store

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task


def routes(core: Promptship, auth: Authenticator, watcher: DeploymentWatcher) -> list[Route]:
    def query_int(request: Request, key: str, default: int | None) -> int | None:
        raw = request.query_params.get(key)
        if raw is None:
            return default
        if not (raw.isascii() and raw.isdigit()) or len(raw) > MAX_QUERY_DIGITS:
            raise ApiProblem(
                problem(
                    400,
                    "Bad request",
                    f"{key} must be a whole number of at most {MAX_QUERY_DIGITS} digits",
                )
            )
        return int(raw)

    # -- reads -----------------------------------------------------------------------

    async def list_prompts(request: Request) -> Response:
        return JSONResponse(dump(await core.status()))

    async def prompt_status(request: Request) -> Response:
        [status] = await core.status(request.path_params["name"])
        return JSONResponse(dump(status))

    async def deployments(request: Request) -> Response:
        return JSONResponse(await core.deployment_file())

    async def versions(request: Request) -> Response:
        return JSONResponse(dump(await core.versions(request.path_params["name"])))

    async def version(request: Request) -> Response:
        detail = await core.show(request.path_params["name"], request.path_params["version"])
        return JSONResponse(dump(detail))

    async def history(request: Request) -> Response:
        page = await core.history(
            request.path_params["name"],
            request.query_params.get("environment"),
            query_int(request, "before", None),
            query_int(request, "limit", 20) or 20,
        )
        return JSONResponse(dump(page))

    async def diff(request: Request) -> Response:
        old, new = request.query_params.get("from"), request.query_params.get("to")
        if not old or not new:
            raise ApiProblem(problem(400, "Bad request", "pass ?from=VERSION&to=VERSION"))
        return JSONResponse(dump(await core.diff(request.path_params["name"], old, new)))

    async def runtime(request: Request) -> Response:
        name, environment = request.path_params["name"], request.path_params["environment"]
        raw_wait = request.query_params.get("wait", "0")
        try:
            wait = min(max(float(raw_wait), 0.0), MAX_WAIT)
        except ValueError:
            raise ApiProblem(problem(400, "Bad request", "wait is a number of seconds")) from None
        revision, etag, rendered = await watcher.current(name, environment)
        seen = request.headers.get("if-none-match")
        if seen is not None and _matches(seen, etag) and wait > 0:
            if await watcher.wait(name, environment, revision, wait):
                revision, etag, rendered = await watcher.current(name, environment)
        headers = {"ETag": etag, "Cache-Control": "no-cache"}
        if seen is not None and _matches(seen, etag):
            return Response(status_code=304, headers=headers)
        return Response(rendered, media_type="application/json", headers=headers)

    # -- writes ----------------------------------------------------------------------

    async def push(request: Request) -> Response:
        raw = await request.body()  # its size is capped by promptship.limits.BodyLimits
        # parsing a large file takes a while: off the event loop, so other requests go on
        spec = await asyncio.to_thread(_spec, raw, request.headers.get("content-type", ""))
        named = request.query_params.get("author") or request.headers.get(ON_BEHALF_HEADER)
        actor = caller_of(request).actor(named, what="push")
        result = await core.push(spec, actor)
        return JSONResponse(dump(result), status_code=201 if result.created else 200)

    async def promote(request: Request) -> Response:
        document = await json_body(request)
        named = field(document, "requester", required=False)
        actor = caller_of(request).actor(
            named or request.headers.get(ON_BEHALF_HEADER), what="request"
        )
        result = await core.promote(
            request.path_params["name"],
            field(document, "version") or "",
            field(document, "environment") or "",
            actor,
            field(document, "reason", required=False),
            queue_tests=True,
        )
        if isinstance(result, DeploymentMove):  # dev: moved at once, no request
            return JSONResponse(dump(result), status_code=200)
        return JSONResponse(dump(result), status_code=201)

    async def apply(request: Request) -> Response:
        raw = await request.body()  # capped like a pushed prompt file
        dry = request.query_params.get("dry_run", "0").strip().lower()
        if dry not in ("0", "1", "true", "false", ""):
            raise ApiProblem(problem(400, "Bad request", "dry_run is 1 or 0"))
        caller = caller_of(request)
        actor = caller.actor(request.headers.get(ON_BEHALF_HEADER), what="request")
        # a rollback in the file is a decision: only a token whose scope decides makes it
        scope = caller.identity.scope if caller.identity else None
        result = await core.apply_deployments(
            raw,
            "deployment file",
            actor,
            dry_run=dry in ("1", "true"),
            may_decide=scope is not None and grants(scope, Permission.DECIDE),
        )
        return JSONResponse(dump(result))

    async def traffic(request: Request) -> Response:
        document = await json_body(request, max_items=MAX_TRAFFIC_ITEMS)
        samples = document.get("samples") if isinstance(document, dict) else document
        if not isinstance(samples, list):
            raise ApiProblem(
                problem(400, "Bad body", 'send a JSON list of samples, or {"samples": [...]}')
            )
        result = await core.ingest_traffic(samples)
        return JSONResponse({"stored": result.stored, "pruned": result.pruned}, status_code=201)

    async def openapi(request: Request) -> Response:
        from promptship.openapi import document

        return JSONResponse(document())

    guard = auth.guard
    read, fetch, push_, request_ = (
        Permission.READ,
        Permission.FETCH,
        Permission.PUSH,
        Permission.REQUEST,
    )
    return [
        Route("/v1/openapi.json", openapi, methods=["GET"]),
        Route("/v1/prompts", guard(read, list_prompts), methods=["GET"]),
        Route("/v1/prompts", guard(push_, push), methods=["POST"]),
        Route("/v1/deployments", guard(read, deployments), methods=["GET"]),
        Route("/v1/deployments/apply", guard(request_, apply), methods=["POST"]),
        Route("/v1/prompts/{name}", guard(read, prompt_status), methods=["GET"]),
        Route("/v1/prompts/{name}/versions", guard(read, versions), methods=["GET"]),
        Route("/v1/prompts/{name}/versions/{version}", guard(read, version), methods=["GET"]),
        Route("/v1/prompts/{name}/history", guard(read, history), methods=["GET"]),
        Route("/v1/prompts/{name}/diff", guard(read, diff), methods=["GET"]),
        Route(
            "/v1/prompts/{name}/environments/{environment}",
            guard(fetch, runtime),
            methods=["GET"],
        ),
        Route("/v1/prompts/{name}/promotions", guard(request_, promote), methods=["POST"]),
        Route("/v1/traffic", guard(Permission.TRAFFIC, traffic), methods=["POST"]),
        *decision_routes(core, auth),
    ]


def _matches(header: str, etag: str) -> bool:
    candidates = [c.strip() for c in header.split(",")]
    return "*" in candidates or etag in candidates or f"W/{etag}" in candidates


def _spec(raw: bytes, content_type: str) -> PromptSpec:
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise ApiProblem(problem(400, "Bad request", "the prompt file must be UTF-8")) from None
    if "json" in content_type:
        try:
            document = load_json(text, "request body")
        except BadInput as exc:
            raise ApiProblem(problem(400, "Bad JSON", str(exc))) from None
        spec = prompt_from_document(document, "request body")
    else:
        spec = parse_prompt(text, "request body")
    where = nul_path(spec.model_dump())  # PostgreSQL text cannot hold U+0000
    if where is not None:
        raise ApiProblem(problem(400, "Bad request", nul_refusal(where)))
    return spec
