"""``PromptClient``: the thread-based client (a watch thread and a traffic sender thread)."""

from __future__ import annotations

import contextlib
import queue
import threading
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
