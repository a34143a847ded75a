"""The API's decisions and who-am-I: approve, reject, cancel, break-glass, override
regressions (of a version, or holding a request back), re-run a request's tests, roll back —
each by the token's own identity.

Deciding needs the ``decide`` permission (an ``approve`` or ``admin`` token), and the
services then refuse services (they push and request, never decide) and apply the person
rules (no approving your own request or version). Request ids are ``req-42`` or ``42``.
"""

from __future__ import annotations

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
    problem,
)
from promptship.domain.identity import Actor, Permission, grants
from promptship.services import Promptship
from promptship.services.deps import parse_request_code


def _run_id(document: object) -> int | None:
    """The optional ``run_id`` of an override: the test run the caller weighed."""
    value = document.get("run_id") if isinstance(document, dict) else None
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ApiProblem(problem(400, "Bad request", "run_id must be a positive integer"))
    return value


def routes(core: Promptship, auth: Authenticator) -> list[Route]:
    def request_id(request: Request) -> int:
        return parse_request_code(request.path_params["id"])

    def decider(request: Request) -> Actor:
        return caller_of(request).deciding(request.headers.get(ON_BEHALF_HEADER))

    async def whoami(request: Request) -> Response:
        identity = caller_of(request).identity
        assert identity is not None  # the guard lets no anonymous caller through here
        return JSONResponse(
            {
                "subject": identity.subject,
                "service": identity.service,
                "scope": identity.scope.value,
                # a service never decides, whatever its scope
                "permissions": [
                    p.value
                    for p in Permission
                    if grants(identity.scope, p)
                    and not (identity.service and p is Permission.DECIDE)
                ],
                "token": "environment" if identity.token_id is None else identity.token_id,
            }
        )

    async def show_request(request: Request) -> Response:
        return JSONResponse(dump(await core.request(request_id(request))))

    async def approve(request: Request) -> Response:
        code = request_id(request)
        document = await json_body(request)
        outcome = await core.approve(
            code,
            decider(request),
            field(document, "comment", required=False),
            content_hash=field(document, "content_hash", required=False),
        )
        return JSONResponse(dump(outcome))

    async def reject(request: Request) -> Response:
        code = request_id(request)
        document = await json_body(request)
        outcome = await core.reject(
            code,
            decider(request),
            field(document, "reason") or "",
            content_hash=field(document, "content_hash", required=False),
        )
        return JSONResponse(dump(outcome))

    async def cancel(request: Request) -> Response:
        code = request_id(request)
        actor = caller_of(request).actor(request.headers.get(ON_BEHALF_HEADER), what="cancel")
        return JSONResponse(dump(await core.cancel(code, actor)))

    async def breakglass(request: Request) -> Response:
        document = await json_body(request)
        named = field(document, "requester", required=False)
        actor = caller_of(request).actor(
            named or request.headers.get(ON_BEHALF_HEADER), what="request"
        )
        view = await core.breakglass(
            request.path_params["name"],
            field(document, "version") or "",
            actor,
            field(document, "reason") or "",
            queue_tests=True,
        )
        return JSONResponse(dump(view), status_code=201)

    async def override(request: Request) -> Response:
        document = await json_body(request)
        run = await core.override_regressions(
            request.path_params["name"],
            request.path_params["version"],
            field(document, "reason") or "",
            decider(request),
            run_id=_run_id(document),
        )
        return JSONResponse(dump(run))

    async def override_request(request: Request) -> Response:
        code = request_id(request)
        document = await json_body(request)
        view = await core.override_request(
            code,
            decider(request),
            field(document, "reason") or "",
            content_hash=field(document, "content_hash", required=False),
            run_id=_run_id(document),
        )
        return JSONResponse(dump(view))

    async def rerun(request: Request) -> Response:
        code = request_id(request)
        document = await json_body(request)  # empty, or a content_hash
        actor = caller_of(request).actor(request.headers.get(ON_BEHALF_HEADER), what="re-run tests")
        view = await core.rerun_request_tests(
            code, actor, content_hash=field(document, "content_hash", required=False)
        )
        return JSONResponse(dump(view))

    async def rollback(request: Request) -> Response:
        document = await json_body(request)  # empty: the previous version
        result = await core.rollback(
            request.path_params["name"],
            request.path_params["environment"],
            decider(request),
            field(document, "version", required=False),
            field(document, "reason", required=False),
        )
        return JSONResponse(dump(result))

    guard, decide = auth.guard, Permission.DECIDE
    prompt = "/v1/prompts/{name}"
    return [
        Route("/v1/whoami", guard(None, whoami), methods=["GET"]),
        Route("/v1/requests/{id}", guard(Permission.READ, show_request), methods=["GET"]),
        Route("/v1/requests/{id}/approve", guard(decide, approve), methods=["POST"]),
        Route("/v1/requests/{id}/reject", guard(decide, reject), methods=["POST"]),
        Route("/v1/requests/{id}/cancel", guard(Permission.REQUEST, cancel), methods=["POST"]),
        Route("/v1/requests/{id}/override", guard(decide, override_request), methods=["POST"]),
        Route("/v1/requests/{id}/rerun", guard(Permission.REQUEST, rerun), methods=["POST"]),
        Route(f"{prompt}/breakglass", guard(Permission.REQUEST, breakglass), methods=["POST"]),
        Route(f"{prompt}/versions/{{version}}/override", guard(decide, override), methods=["POST"]),
        Route(
            f"{prompt}/environments/{{environment}}/rollback",
            guard(decide, rollback),
            methods=["POST"],
        ),
    ]
