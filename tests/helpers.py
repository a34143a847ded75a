"""Build real state through the services, the way a team would."""

from __future__ import annotations

from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from promptship.domain.identity import Actor, Via
from promptship.domain.promptfile import parse_prompt
from promptship.services import Promptship
from promptship.services.views import RequestView
from promptship.testing.serve import ServerThread
from tests.conftest import prompt_yaml

AUTHOR = "U09"  # writes prompts; holds no role
REQUESTER = "U04"  # asks for promotions; holds no role


def slack(user_id: str) -> Actor:
    """A person as Slack vouches for them."""
    return Actor(user_id, Via.SLACK)


def local(user_id: str) -> Actor:
    """A person as the local CLI knows them: self-declared."""
    return Actor(user_id, Via.LOCAL)


def service(name: str) -> Actor:
    """A service (CI) acting with its own token."""
    return Actor(name, Via.TOKEN, service=True)


async def push(
    core: Promptship, name: str = "customer-support", version: str = "1.0.0", **kw: Any
) -> None:
    await core.push(parse_prompt(prompt_yaml(name, version, **kw)), slack(AUTHOR))


def case_results(passed: int, failed: int = 0, errored: int = 0) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    for i in range(passed):
        rows.append({"input": f"q{i}", "type": "contains", "passed": True, "got": "ok"})
    for i in range(failed):
        rows.append({"input": f"f{i}", "type": "contains", "passed": False, "got": "no"})
    for i in range(errored):
        rows.append({"input": f"e{i}", "type": "contains", "passed": False, "error": "timeout"})
    return rows


async def pass_tests(
    core: Promptship, name: str, version: str, passed: int = 10, failed: int = 0
) -> None:
    await core.record_validation_run(name, version, case_results(passed, failed), slack(REQUESTER))


async def to_staging(
    core: Promptship, name: str = "customer-support", version: str = "1.0.0"
) -> RequestView:
    await pass_tests(core, name, version)
    request = await core.request_promotion(name, version, "staging", slack(REQUESTER))
    assert request.state == "promoted", request
    return request


async def to_production(
    core: Promptship, name: str = "customer-support", version: str = "1.0.0"
) -> RequestView:
    await to_staging(core, name, version)
    request = await core.request_promotion(name, version, "production", slack(REQUESTER))
    await core.approve(request.id, slack("U01"))
    outcome = await core.approve(request.id, slack("U02"))
    assert outcome.request.state == "promoted", outcome
    return outcome.request


async def start_staging_soak(
    core: Promptship, name: str = "customer-support", version: str = "1.0.0"
) -> int:
    """Push, pass the tests, enter staging: returns the staging soak's id."""
    await push(core, name, version)
    await to_staging(core, name, version)
    soak_id = await core.staging_soak_id(name, version)
    assert soak_id is not None, "the policy sets no staging soak"
    return soak_id


def answering(body: str, content_type: str) -> ServerThread:
    """A server in front of the API (a proxy's login page, a catch-all) answering every
    POST with 200 and ``body``."""

    async def fixed(request: Request) -> Response:
        return Response(body, media_type=content_type)

    return ServerThread(Starlette(routes=[Route("/{path:path}", fixed, methods=["POST"])]))
