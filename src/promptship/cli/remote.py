"""The CLI through a promptship server (``--server``/``PROMPTSHIP_SERVER``) with a bearer
token (``--token``/``PROMPTSHIP_TOKEN``): the server knows who acts from the token, so a
person's decisions made here are theirs, not a self-declared ``--as``.

A refusal comes back as a problem document and is raised as the same typed error the
services raise locally, so a command prints the same message and exits with the same code.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Annotated, Any, TypeVar
from urllib.parse import quote

import httpx
import typer
from rich.markup import escape

from promptship.cli.common import err, guard, state
from promptship.domain.safe_load import load_json
from promptship.errors import (
    BadInput,
    Conflict,
    Forbidden,
    GateRefused,
    NotFound,
    PromptshipError,
    RequestClosed,
)
from promptship.services.views import (
    ApplyResult,
    DecisionOutcome,
    DeploymentMove,
    PushResult,
    RequestView,
    RollbackResult,
    RunView,
)

T = TypeVar("T")


def _q(segment: str) -> str:
    return quote(segment, safe="")


ServerOption = Annotated[
    str | None,
    typer.Option(
        "--server", envvar="PROMPTSHIP_SERVER", help="Act through this promptship server's API."
    ),
]
TokenOption = Annotated[
    str | None,
    typer.Option(
        "--token", envvar="PROMPTSHIP_TOKEN", help="Your bearer token for --server (secret)."
    ),
]

_BY_KIND: dict[str, type[PromptshipError]] = {
    cls.kind: cls for cls in (BadInput, NotFound, Forbidden, Conflict, GateRefused, RequestClosed)
}
_BY_STATUS: dict[int, type[PromptshipError]] = {
    401: Forbidden,
    403: Forbidden,
    404: NotFound,
    409: GateRefused,
}


def refusal(response: httpx.Response, prefix: str = "") -> PromptshipError:
    """The typed error a problem document stands for (by its ``type``, else its status)."""
    try:
        document = response.json()
    except ValueError:
        document = None
    if not isinstance(document, dict) or not isinstance(document.get("detail"), str):
        return BadInput(
            f"{prefix}the server answered {response.status_code}: {response.text[:300]}"
        )
    detail, hint = document["detail"], document.get("hint")
    hint = hint if isinstance(hint, str) and hint else None
    if hint and detail.endswith(f" ({hint})"):
        detail = detail[: -len(hint) - 3]
    if response.status_code == 401:
        hint = "pass your token with --token or PROMPTSHIP_TOKEN"
    kind = str(document.get("type", "")).removeprefix("urn:promptship:")
    error = _BY_KIND.get(kind) or _BY_STATUS.get(response.status_code, BadInput)
    if prefix:
        detail = f"{prefix}the server refused it ({response.status_code}): {detail}"
    return error(detail, hint=hint)


class Remote:
    """A promptship server's ``/v1`` API, called with one token."""

    def __init__(self, server: str, token: str | None) -> None:
        self.server = server.rstrip("/")
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        self.http = httpx.AsyncClient(base_url=self.server, headers=headers, timeout=60)
        self._on_behalf: dict[str, str] | None = None

    async def call(
        self,
        method: str,
        path: str,
        *,
        json: Any = None,
        content: bytes | None = None,
        headers: dict[str, str] | None = None,
        prefix: str = "",
    ) -> Any:
        """The JSON answer of a 2xx; the typed error of a problem document otherwise."""
        try:
            response = await self.http.request(
                method, path, json=json, content=content, headers=headers
            )
        except httpx.HTTPError as exc:
            raise BadInput(f"cannot reach {self.server}: {exc}") from None
        if not response.is_success:
            raise refusal(response, prefix)
        return load_json(response.content, f"the answer of {self.server}")

    async def on_behalf(self) -> dict[str, str]:
        """The header naming ``--as``, when this token may act on someone's behalf (admin);
        otherwise ``--as`` is ignored (the token says who acts), with a note on stderr."""
        if self._on_behalf is None:
            named = (state.actor or "").strip()
            self._on_behalf = {}
            if named:
                me = await self.call("GET", "/v1/whoami")
                if "on-behalf" in me["permissions"]:
                    self._on_behalf = {"X-Promptship-User": named}
                elif named != me["subject"]:
                    err.print(
                        f"note: --as {escape(named)} is ignored: the server knows you from "
                        f"your token as {escape(me['subject'])}"
                    )
        return self._on_behalf

    async def act(self, path: str, body: dict[str, Any] | None = None) -> Any:
        return await self.call("POST", path, json=body, headers=await self.on_behalf())

    # -- the use cases -------------------------------------------------------------------

    async def push(self, content: bytes, prefix: str) -> PushResult:
        headers = {"Content-Type": "application/yaml", **await self.on_behalf()}
        answer = await self.call(
            "POST", "/v1/prompts", content=content, headers=headers, prefix=prefix
        )
        return PushResult.model_validate(answer)

    async def request_promotion(
        self, name: str, version: str, environment: str, reason: str | None
    ) -> RequestView | DeploymentMove:
        """A request (staging, production), or dev's move made at once."""
        body = {"version": version, "environment": environment, "reason": reason}
        answer = await self.act(f"/v1/prompts/{_q(name)}/promotions", body)
        if isinstance(answer, dict) and "code" not in answer and "to_version" in answer:
            return DeploymentMove.model_validate(answer)
        return RequestView.model_validate(answer)

    async def breakglass(self, name: str, version: str, reason: str) -> RequestView:
        body = {"version": version, "reason": reason}
        return RequestView.model_validate(
            await self.act(f"/v1/prompts/{_q(name)}/breakglass", body)
        )

    async def override_regressions(
        self, name: str, version: str, reason: str, run_id: int | None = None
    ) -> RunView:
        path = f"/v1/prompts/{_q(name)}/versions/{_q(version)}/override"
        body: dict[str, object] = {"reason": reason}
        if run_id is not None:
            body["run_id"] = run_id
        return RunView.model_validate(await self.act(path, body))

    async def approve(self, request_id: int, comment: str | None) -> DecisionOutcome:
        path = f"/v1/requests/{request_id}/approve"
        return DecisionOutcome.model_validate(await self.act(path, {"comment": comment}))

    async def reject(self, request_id: int, reason: str) -> DecisionOutcome:
        path = f"/v1/requests/{request_id}/reject"
        return DecisionOutcome.model_validate(await self.act(path, {"reason": reason}))

    async def cancel(self, request_id: int) -> RequestView:
        return RequestView.model_validate(await self.act(f"/v1/requests/{request_id}/cancel"))

    async def rollback(
        self, name: str, environment: str, version: str | None, reason: str | None
    ) -> RollbackResult:
        path = f"/v1/prompts/{_q(name)}/environments/{_q(environment)}/rollback"
        answer = await self.act(path, {"version": version, "reason": reason})
        return RollbackResult.model_validate(answer)

    async def apply(self, content: bytes, dry_run: bool) -> ApplyResult:
        headers = {"Content-Type": "application/yaml", **await self.on_behalf()}
        path = "/v1/deployments/apply" + ("?dry_run=1" if dry_run else "")
        answer = await self.call("POST", path, content=content, headers=headers)
        return ApplyResult.model_validate(answer)

    async def deployments(self) -> dict[str, dict[str, dict[str, Any]]]:
        answer: dict[str, dict[str, dict[str, Any]]] = await self.call("GET", "/v1/deployments")
        return answer


def run_remote(server: str, token: str | None, use: Callable[[Remote], Awaitable[T]]) -> T:
    """Call the server once (or a few times) and render errors as a local command would."""

    async def go() -> T:
        remote = Remote(server, token)
        try:
            return await use(remote)
        finally:
            await remote.http.aclose()

    return guard(go)
