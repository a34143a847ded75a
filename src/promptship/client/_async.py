"""``AsyncPromptClient``: the asyncio twin (the watch and the traffic sender are tasks)."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Mapping
from typing import Any

import httpx

from promptship.client._shared import (
    BATCH,
    QUEUE_LIMIT,
    Prompt,
    PromptUnavailable,
    _after_poll,
    _by_size,
    _clients,
    _path,
    _problem,
    _sample,
    log,
)


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
