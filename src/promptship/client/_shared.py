"""What the sync and asyncio clients share: the prompt as served, the traffic batches' sizing, the HTTP answers' reading."""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from types import MappingProxyType
from typing import Any
from urllib.parse import quote

import httpx

from promptship.domain.template import MissingVariable, Rendered, RenderError, render_prompt

log = logging.getLogger("promptship.client")

BATCH = 1000
#: bytes of one batch's JSON: half the server's default limit for ``POST /v1/traffic``
#: (``PROMPTSHIP_MAX_BODY_TRAFFIC``, 8 MiB), so samples with large vars still get through
BATCH_BYTES = 4 * 2**20


def _by_size(batch: list[dict[str, Any]]) -> list[list[dict[str, Any]]]:
    """``batch`` in parts whose JSON stays under ``BATCH_BYTES`` (a sample over it alone is
    its own part, for the server to refuse and the sender to count as dropped)."""
    parts: list[list[dict[str, Any]]] = [[]]
    size = 2
    for sample in batch:
        cost = len(json.dumps(sample, ensure_ascii=False).encode()) + 1
        if parts[-1] and size + cost > BATCH_BYTES:
            parts.append([])
            size = 2
        parts[-1].append(sample)
        size += cost
    return [part for part in parts if part]


QUEUE_LIMIT = 50_000


class PromptUnavailable(Exception):
    """No copy of the prompt, and the server could not give one."""


@dataclass(frozen=True)
class Prompt:
    """The version an environment runs, as the runtime API serves it."""

    name: str
    environment: str
    version: str
    #: as written: a template when ``variables`` is not empty (``render`` fills it in)
    system_prompt: str
    model: str
    provider: str
    temperature: float
    max_tokens: int
    etag: str
    fetched_at: float
    #: the template's variables and their defaults (None: the app must pass it)
    variables: Mapping[str, Any] = field(default_factory=lambda: MappingProxyType({}))
    #: the turns before the user's (few-shot examples), ``{"role", "content"}`` templates
    messages: tuple[Mapping[str, str], ...] = ()
    #: True for a copy from a server that predates templates: it is served as written
    literal: bool = False

    @classmethod
    def from_response(cls, response: httpx.Response) -> Prompt:
        body = response.json()
        return cls(
            name=body["name"],
            environment=body["environment"],
            version=body["version"],
            system_prompt=body["system_prompt"],
            model=body["model"],
            provider=body["provider"],
            temperature=body["temperature"],
            max_tokens=body["max_tokens"],
            etag=response.headers.get("etag", ""),
            fetched_at=time.monotonic(),
            variables=MappingProxyType(dict(body.get("variables") or {})),
            messages=tuple(
                MappingProxyType({"role": str(m["role"]), "content": str(m["content"])})
                for m in body.get("messages") or ()
            ),
            literal="variables" not in body,
        )

    def render(self, /, **vars: Any) -> Rendered:
        """The system text and few-shot turns for ``vars``, rendered as the validation run
        and soaks render them: declared variables not passed take their default; variables
        the version does not declare are ignored. ``.conversation(user_text)`` adds the
        user's turn. Raises MissingVariable (naming it) when a required one is missing, and
        RenderError when the template fails on the values given."""
        if self.literal:
            return Rendered(self.system_prompt, [dict(m) for m in self.messages])
        where = f"{self.name} {self.version} in {self.environment}"
        try:
            return render_prompt(self.system_prompt, self.messages, self.variables, vars)
        except MissingVariable as exc:
            raise MissingVariable(exc.names, where) from None
        except RenderError as exc:
            raise RenderError(f"{where}: {exc.message}", hint=exc.hint) from None


def _path(name: str, environment: str) -> str:
    return f"/v1/prompts/{quote(name, safe='')}/environments/{quote(environment, safe='')}"


def _problem(response: httpx.Response) -> str:
    try:
        return str(response.json().get("detail") or response.text)
    except ValueError:
        return response.text


def _sample(
    name: str,
    environment: str,
    input: str,
    output: str | None,
    version: str | None,
    vars: Mapping[str, Any] | None,
) -> dict[str, Any] | None:
    """The sample to send, or None (with a warning) when the server would refuse it: one
    bad sample would otherwise cost its whole batch."""
    sample: dict[str, Any] = {
        "prompt": name,
        "environment": environment,
        "input": input,
        "at": datetime.now(UTC).isoformat(),
    }
    if output is not None:
        sample["output"] = output
    if version is not None:
        sample["version"] = version
    if vars is not None:
        from promptship.domain.promptfile import vars_problem

        given = dict(vars) if isinstance(vars, Mapping) else vars
        problem = vars_problem(given)
        if problem is not None:
            log.warning("traffic sample for %s %s not logged: vars: %s", name, environment, problem)
            return None
        sample["vars"] = given
    return sample


def _clients(base_url: str, token: str | None) -> tuple[str, dict[str, str]]:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    return base_url.rstrip("/"), headers


def _after_poll(cached: Prompt | None, response: httpx.Response) -> Prompt | None:
    """What a long-poll's answer makes of the cached copy: the new prompt (200), the same
    one confirmed fresh (304), or an error for the watch's backoff."""
    if response.status_code == 200:
        return Prompt.from_response(response)
    if response.status_code == 304:
        return None if cached is None else replace(cached, fetched_at=time.monotonic())
    raise httpx.HTTPStatusError(_problem(response), request=response.request, response=response)
