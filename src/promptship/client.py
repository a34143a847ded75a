"""The client apps use to run the live prompt, and to log the traffic soaks replay.

    from promptship.client import PromptClient

    prompts = PromptClient("https://promptship.internal", token="app-token")
    prompt = prompts.get("customer-support", "production")
    rendered = prompt.render(customer_name="Ada", plan="pro")
    answer = call_model(rendered.system, rendered.conversation(user_text))
    prompts.log_traffic(
        "customer-support", "production", user_text, answer,
        version=prompt.version, vars={"customer_name": "Ada", "plan": "pro"},
    )
    # or, when the version has no few-shot messages, the system text in one call:
    system = prompts.get_system_prompt("customer-support", "production", customer_name="Ada")

A version's ``system_prompt`` and ``messages`` are Jinja2 templates over the ``variables`` it
declares (name -> default; None: the app must pass it). ``render(**vars)`` fills them in the
same sandbox the validation runs and soaks use, so the app sends what was tested: variables
the version does not declare are ignored (pass the same superset to every version), and a
required one that is missing raises ``MissingVariable`` naming it. Log the vars with the
query (``log_traffic(..., vars=...)``) and a soak renders both versions with them.

``get`` answers from memory. The first call for a prompt fetches it and starts a watch: a
long-poll (``?wait=30`` with ``If-None-Match``) that the server answers the moment the
environment's pointer moves, so a promotion or a rollback reaches the app in about a second,
not after a cache TTL. If the watch cannot reach the server, the TTL takes over (a fetch
when the copy is older than ``ttl``), and the last good prompt keeps serving while the
server is down (stale-if-error, with a warning). ``log_traffic`` never blocks: samples are
queued and sent in batches of up to 1,000 in the background. ``AsyncPromptClient`` is the
same for asyncio apps.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import queue
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from types import MappingProxyType
from typing import Any
from urllib.parse import quote

import httpx

from promptship.domain.template import MissingVariable, Rendered, RenderError, render_prompt

__all__ = [
    "AsyncPromptClient",
    "MissingVariable",
    "Prompt",
    "PromptClient",
    "PromptUnavailable",
    "RenderError",
    "Rendered",
]

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


class PromptClient:
    """Thread-safe; one per process is enough."""

    def __init__(
        self,
        base_url: str,
        token: str | None = None,
        *,
        ttl: float = 60.0,
        wait: float = 30.0,
        timeout: float = 10.0,
        flush_interval: float = 1.0,
    ) -> None:
        base, headers = _clients(base_url, token)
        self._http = httpx.Client(base_url=base, headers=headers, timeout=timeout)
        self._watch_http = httpx.Client(base_url=base, headers=headers, timeout=wait + timeout)
        self.ttl, self.wait = ttl, wait
        self._cache: dict[tuple[str, str], Prompt] = {}
        self._healthy: dict[tuple[str, str], bool] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._watchers: dict[tuple[str, str], threading.Thread] = {}
        self._traffic: queue.Queue[dict[str, Any]] = queue.Queue(QUEUE_LIMIT)
        self.dropped = 0
        self._flush_interval = flush_interval
        self._flusher = threading.Thread(
            target=self._flush_forever, name="promptship-traffic", daemon=True
        )
        self._flusher.start()

    # -- prompts -------------------------------------------------------------------------

    def get(self, name: str, environment: str) -> Prompt:
        key = (name, environment)
        with self._lock:
            cached = self._cache.get(key)
            healthy = self._healthy.get(key, False)
        if cached is not None and (healthy or time.monotonic() - cached.fetched_at < self.ttl):
            return cached
        try:
            fresh = self._fetch(name, environment)
        except (httpx.HTTPError, PromptUnavailable) as exc:
            if cached is None:
                raise PromptUnavailable(f"{name} in {environment}: {exc}") from None
            log.warning(
                "promptship unreachable (%s); serving %s %s from %.0f s ago",
                exc, name, cached.version, time.monotonic() - cached.fetched_at,
            )  # fmt: skip
            return cached
        self._store(key, fresh)
        self._watch(key)
        return fresh

    def get_system_prompt(self, name: str, environment: str, /, **vars: Any) -> str:
        """The live system text rendered with ``vars`` (see ``Prompt.render``; a version
        with few-shot ``messages`` needs ``get(...).render(...)`` to send them too)."""
        return self.get(name, environment).render(**vars).system

    def _fetch(self, name: str, environment: str) -> Prompt:
        response = self._http.get(_path(name, environment))
        if response.status_code != 200:
            raise PromptUnavailable(f"{response.status_code}: {_problem(response)}")
        return Prompt.from_response(response)

    def _store(self, key: tuple[str, str], prompt: Prompt) -> None:
        with self._lock:
            self._cache[key] = prompt

    def _watch(self, key: tuple[str, str]) -> None:
        with self._lock:
            if key in self._watchers or self._stop.is_set():
                return
            thread = threading.Thread(
                target=self._watch_forever,
                args=(key,),
                name=f"promptship-watch-{key[0]}",
                daemon=True,
            )
            self._watchers[key] = thread
        thread.start()

    def _watch_forever(self, key: tuple[str, str]) -> None:
        backoff = 1.0
        while not self._stop.is_set():
            with self._lock:
                etag = self._cache[key].etag if key in self._cache else ""
            try:
                response = self._watch_http.get(
                    _path(*key), params={"wait": self.wait}, headers={"If-None-Match": etag}
                )
                with self._lock:
                    updated = _after_poll(self._cache.get(key), response)
                    if updated is not None:
                        self._cache[key] = updated
                    self._healthy[key] = True
                backoff = 1.0
            except httpx.HTTPError as exc:
                with self._lock:
                    self._healthy[key] = False
                if self._stop.is_set():
                    return
                log.warning("watching %s %s failed (%s); retrying in %.0f s", *key, exc, backoff)
                self._stop.wait(backoff)
                backoff = min(backoff * 2, 30.0)

    # -- traffic -------------------------------------------------------------------------

    def log_traffic(
        self,
        name: str,
        environment: str,
        input: str,
        output: str | None = None,
        version: str | None = None,
        *,
        vars: Mapping[str, Any] | None = None,
    ) -> None:
        """Queue one real query (and the answer it got, and the vars its prompt was rendered
        with) for soaks; never blocks. Vars the server would refuse (not JSON, names that
        are not variable names, over 100,000 characters) drop the sample with a warning."""
        sample = _sample(name, environment, input, output, version, vars)
        if sample is None:
            self.dropped += 1
            return
        try:
            self._traffic.put_nowait(sample)
        except queue.Full:
            self.dropped += 1

    def flush(self) -> None:
        """Send everything queued now (also done every ``flush_interval`` seconds)."""
        while True:
            batch: list[dict[str, Any]] = []
            with contextlib.suppress(queue.Empty):
                while len(batch) < BATCH:
                    batch.append(self._traffic.get_nowait())
            if not batch:
                return
            for part in _by_size(batch):
                try:
                    response = self._http.post("/v1/traffic", json=part)
                except httpx.HTTPError as exc:
                    self.dropped += len(part)
                    log.warning("could not send %d traffic samples: %s", len(part), exc)
                    return
                if response.status_code >= 300:
                    self.dropped += len(part)
                    log.warning(
                        "traffic batch of %d refused (%s): %s",
                        len(part),
                        response.status_code,
                        _problem(response),
                    )

    def _flush_forever(self) -> None:
        while not self._stop.wait(self._flush_interval):
            self.flush()

    def close(self) -> None:
        self._stop.set()
        self.flush()
        self._http.close()
        self._watch_http.close()

    def __enter__(self) -> PromptClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class AsyncPromptClient:
    """The asyncio twin of ``PromptClient``: the watch and the traffic sender are tasks."""

    def __init__(
        self,
        base_url: str,
        token: str | None = None,
        *,
        ttl: float = 60.0,
        wait: float = 30.0,
        timeout: float = 10.0,
        flush_interval: float = 1.0,
    ) -> None:
        base, headers = _clients(base_url, token)
        self._http = httpx.AsyncClient(base_url=base, headers=headers, timeout=timeout)
        self._watch_http = httpx.AsyncClient(base_url=base, headers=headers, timeout=wait + timeout)
        self.ttl, self.wait = ttl, wait
        self._cache: dict[tuple[str, str], Prompt] = {}
        self._healthy: dict[tuple[str, str], bool] = {}
        self._watchers: dict[tuple[str, str], asyncio.Task[None]] = {}
        self._traffic: list[dict[str, Any]] = []
        self._flush_interval = flush_interval
        self._flusher: asyncio.Task[None] | None = None
        self.dropped = 0

    async def get(self, name: str, environment: str) -> Prompt:
        key = (name, environment)
        cached = self._cache.get(key)
        if cached is not None and (
            self._healthy.get(key) or time.monotonic() - cached.fetched_at < self.ttl
        ):
            return cached
        try:
            response = await self._http.get(_path(name, environment))
            if response.status_code != 200:
                raise PromptUnavailable(f"{response.status_code}: {_problem(response)}")
            fresh = Prompt.from_response(response)
        except (httpx.HTTPError, PromptUnavailable) as exc:
            if cached is None:
                raise PromptUnavailable(f"{name} in {environment}: {exc}") from None
            log.warning("promptship unreachable (%s); serving %s %s", exc, name, cached.version)
            return cached
        self._cache[key] = fresh
        if key not in self._watchers:
            self._watchers[key] = asyncio.create_task(self._watch_forever(key))
        return fresh

    async def get_system_prompt(self, name: str, environment: str, /, **vars: Any) -> str:
        """The live system text rendered with ``vars`` (see ``Prompt.render``)."""
        return (await self.get(name, environment)).render(**vars).system

    async def _watch_forever(self, key: tuple[str, str]) -> None:
        backoff = 1.0
        while True:
            etag = self._cache[key].etag if key in self._cache else ""
            try:
                response = await self._watch_http.get(
                    _path(*key), params={"wait": self.wait}, headers={"If-None-Match": etag}
                )
                updated = _after_poll(self._cache.get(key), response)
                if updated is not None:
                    self._cache[key] = updated
                self._healthy[key] = True
                backoff = 1.0
            except httpx.HTTPError as exc:
                self._healthy[key] = False
                log.warning("watching %s %s failed (%s); retrying in %.0f s", *key, exc, backoff)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 30.0)

    def log_traffic(
        self,
        name: str,
        environment: str,
        input: str,
        output: str | None = None,
        version: str | None = None,
        *,
        vars: Mapping[str, Any] | None = None,
    ) -> None:
        """Queue one real query for soaks; never blocks (call from the event loop)."""
        sample = _sample(name, environment, input, output, version, vars)
        if sample is None or len(self._traffic) >= QUEUE_LIMIT:
            self.dropped += 1
            return
        self._traffic.append(sample)
        if self._flusher is None or self._flusher.done():
            self._flusher = asyncio.create_task(self._flush_later())

    async def _flush_later(self) -> None:
        await asyncio.sleep(self._flush_interval)
        await self.flush()

    async def flush(self) -> None:
        while self._traffic:
            batch, self._traffic = self._traffic[:BATCH], self._traffic[BATCH:]
            for part in _by_size(batch):
                try:
                    response = await self._http.post("/v1/traffic", json=part)
                except httpx.HTTPError as exc:
                    self.dropped += len(part)
                    log.warning("could not send %d traffic samples: %s", len(part), exc)
                    return
                if response.status_code >= 300:
                    self.dropped += len(part)
                    log.warning(
                        "traffic batch of %d refused (%s): %s",
                        len(part),
                        response.status_code,
                        _problem(response),
                    )

    async def aclose(self) -> None:
        for task in self._watchers.values():
            task.cancel()
        for task in self._watchers.values():
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if self._flusher is not None:
            self._flusher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._flusher
        await self.flush()
        await self._http.aclose()
        await self._watch_http.aclose()

    async def __aenter__(self) -> AsyncPromptClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()
