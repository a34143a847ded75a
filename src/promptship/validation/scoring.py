"""Semantic similarity with all-MiniLM-L6-v2: one process-wide scorer, the model loaded
once, lazily, offline, and never on the event loop.

Where the model runs is ``PROMPTSHIP_SCORER``: ``process`` (the default) runs it in a scorer
process at a lower CPU priority (``promptship.validation.scorer_process``), so a busy
machine serves Slack acks before scoring; ``thread`` runs it in one worker thread of this
process. Both give the same embeddings.

Each text is encoded once: repeats within a call are encoded together once, a text another
call is already encoding is waited for rather than encoded again, and the embeddings of the
last ``cache_size`` distinct texts (about 1.8 KB each; 35 MB at the default 20,000) are kept,
so answers that recur (an expected text across suites, a logged production answer across
soak cycles) are not encoded again.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import threading
from collections import OrderedDict
from collections.abc import Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from functools import partial
from typing import Any

import numpy as np

from promptship.errors import BadInput
from promptship.validation.encoder import DIMENSIONS, Encoder, default_model_path
from promptship.validation.scorer_process import PER_TEXT, TIMEOUT, ScorerProcess

__all__ = ["MODES", "Scorer", "default_model_path", "get_scorer", "set_scorer"]

#: where the model runs (``PROMPTSHIP_SCORER``); the first is the default
MODES = ("process", "thread")


def _key(text: str) -> bytes:
    return hashlib.sha256(text.encode("utf-8")).digest()


def _threads_from_env() -> int | None:
    raw = os.environ.get("PROMPTSHIP_SCORER_THREADS", "").strip()
    if not raw:
        return None
    if not raw.isdigit() or int(raw) < 1:
        raise BadInput(
            f"PROMPTSHIP_SCORER_THREADS must be a whole number of at least 1, got {raw!r}"
        )
    return int(raw)


def _timeout_from_env() -> float:
    raw = os.environ.get("PROMPTSHIP_SCORER_TIMEOUT", "").strip()
    if not raw:
        return TIMEOUT
    try:
        seconds = float(raw)
    except ValueError:
        seconds = -1.0
    if not seconds > 0:
        raise BadInput(
            f"PROMPTSHIP_SCORER_TIMEOUT must be a number of seconds above 0, got {raw!r}"
        )
    return seconds


def _mode_from_env() -> str:
    raw = os.environ.get("PROMPTSHIP_SCORER", "").strip().lower() or MODES[0]
    if raw not in MODES:
        raise BadInput(f"PROMPTSHIP_SCORER must be process or thread, got {raw!r}")
    return raw


class Scorer:
    """Cosine similarity of texts, batched, each distinct text encoded once."""

    def __init__(
        self,
        model_path: str | None = None,
        *,
        mode: str | None = None,
        batch_size: int = 64,
        cache_size: int = 20_000,
        threads: int | None = None,
        timeout: float | None = None,
        per_text: float = PER_TEXT,
    ) -> None:
        self.model_path = model_path or default_model_path()
        self.mode = mode or _mode_from_env()
        if self.mode not in MODES:
            raise BadInput(f"the scorer's mode must be process or thread, got {self.mode!r}")
        #: torch threads for encoding (PROMPTSHIP_SCORER_THREADS); by default every core.
        #: In process mode the OS runs the server first whatever the count; fewer threads
        #: trade scoring speed for headroom on a busy machine.
        self.threads = threads or _threads_from_env()
        #: how long the scorer process may take to answer a batch before it is killed and
        #: started again (PROMPTSHIP_SCORER_TIMEOUT), plus ``per_text`` a text
        self.timeout = timeout if timeout is not None else _timeout_from_env()
        self.cache_size = cache_size
        self.encoded_texts = 0  # texts (or windows) actually run through the model
        self._encoder: Encoder | None = None
        self._process: ScorerProcess | None = None
        if self.mode == "thread":
            self._encoder = Encoder(self.model_path, batch_size=batch_size, threads=self.threads)
        else:
            self._process = ScorerProcess(
                self.model_path,
                batch_size=batch_size,
                threads=self.threads,
                timeout=self.timeout,
                per_text=per_text,
            )
        # one worker: encodes run one at a time, in the order they were asked for
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="promptship-scorer")
        self._lock = threading.Lock()  # the cache and the pending table: any thread, any loop
        self._cache: OrderedDict[bytes, np.ndarray] = OrderedDict()
        #: texts being encoded now: the encode's future and the text's row in its result
        self._pending: dict[bytes, tuple[Future[np.ndarray], int]] = {}

    @property
    def load_count(self) -> int:
        """How many times the model has been loaded (a restarted scorer process loads it
        again)."""
        return self._encoder.load_count if self._encoder else self._process_handle.starts

    @property
    def pid(self) -> int | None:
        """The scorer process's id while it runs (process mode)."""
        return self._process.pid if self._process else None

    @property
    def _process_handle(self) -> ScorerProcess:
        assert self._process is not None
        return self._process

    # -- API -------------------------------------------------------------------------------

    async def embed(self, texts: Sequence[str]) -> np.ndarray:
        """L2-normalised embeddings, one row per text, computed off the event loop."""
        if not texts:
            return np.zeros((0, DIMENSIONS), dtype=np.float32)
        keys = [_key(text) for text in texts]
        vectors = await self._vectors(dict(zip(keys, texts, strict=True)))
        return np.stack([vectors[key] for key in keys])

    async def similarity(self, pairs: Sequence[tuple[str, str]]) -> list[float]:
        """Cosine similarity of each (response, expected) pair, in one batched pass."""
        if not pairs:
            return []
        keys = [(_key(response), _key(expected)) for response, expected in pairs]
        wanted: dict[bytes, str] = {}
        for (a, b), (response, expected) in zip(keys, pairs, strict=True):
            wanted.setdefault(a, response)
            wanted.setdefault(b, expected)
        vectors = await self._vectors(wanted)
        return [float(np.clip(np.dot(vectors[a], vectors[b]), -1.0, 1.0)) for a, b in keys]

    async def warm_up(self) -> None:
        """Load the model now (off the event loop) instead of on the first score."""
        start = self._encoder.load if self._encoder else self._process_handle.start
        await _result(self._executor.submit(start))

    def close(self) -> None:
        """Stop the scorer process, after the encode in progress (process mode). A later
        call starts a new one; the cache is kept."""
        if self._process is not None:
            self._process.close()

    # -- internals -------------------------------------------------------------------------

    async def _vectors(self, wanted: dict[bytes, str]) -> dict[bytes, np.ndarray]:
        """The embedding of each text, by key: from the cache, from an encode already under
        way, or from one encode of all the others."""
        found: dict[bytes, np.ndarray] = {}
        waits: dict[Future[np.ndarray], list[tuple[bytes, int]]] = {}
        missing: list[bytes] = []
        with self._lock:
            for key in wanted:
                cached = self._cache.get(key)
                if cached is not None:
                    self._cache.move_to_end(key)
                    found[key] = cached
                elif key in self._pending:
                    job, row = self._pending[key]
                    waits.setdefault(job, []).append((key, row))
                else:
                    missing.append(key)
            if missing:
                mine = self._executor.submit(self._encode, [wanted[key] for key in missing])
                for row, key in enumerate(missing):
                    self._pending[key] = (mine, row)
                waits[mine] = list(zip(missing, range(len(missing)), strict=True))
        if missing:  # (outside the lock: an encode already done calls back at once)
            mine.add_done_callback(partial(self._settle, missing))
        for job, rows in waits.items():
            matrix = await _result(job)
            for key, row in rows:
                found[key] = matrix[row]
        return found

    def _encode(self, texts: list[str]) -> np.ndarray:
        if self._encoder is not None:
            vectors, pieces = self._encoder.encode(texts)
        else:
            vectors, pieces = self._process_handle.encode(texts)
        self.encoded_texts += pieces
        return vectors

    def _settle(self, keys: list[bytes], job: Future[np.ndarray]) -> None:
        """An encode has ended: its texts are no longer pending, and (if it succeeded) their
        embeddings are cached, the oldest dropped beyond ``cache_size``."""
        with self._lock:
            for key in keys:
                entry = self._pending.get(key)
                if entry is not None and entry[0] is job:
                    del self._pending[key]
            if job.exception() is not None:
                return
            for key, vector in zip(keys, job.result(), strict=True):
                self._cache[key] = vector.copy()  # not a view holding the whole batch
            while len(self._cache) > self.cache_size:
                self._cache.popitem(last=False)


async def _result(job: Future[Any]) -> Any:
    """Wait for an encode on the current event loop. A caller that is cancelled stops
    waiting, but the encode is not cancelled: other callers may be waiting for it too."""
    loop = asyncio.get_running_loop()
    waiter: asyncio.Future[Any] = loop.create_future()

    def copy(done: Future[Any]) -> None:
        if waiter.done():
            return
        error = done.exception()
        if error is not None:
            waiter.set_exception(error)
        else:
            waiter.set_result(done.result())

    def wake(done: Future[Any]) -> None:
        try:
            loop.call_soon_threadsafe(copy, done)
        except RuntimeError:
            pass  # the loop has closed: nobody is waiting any more

    job.add_done_callback(wake)
    return await waiter


_scorer: Scorer | None = None
_scorer_lock = threading.Lock()


def get_scorer() -> Scorer:
    """The process-wide scorer: the one obvious owner of the embedding model."""
    global _scorer
    with _scorer_lock:
        if _scorer is None:
            _scorer = Scorer()
        return _scorer


def set_scorer(scorer: Scorer | None) -> None:
    global _scorer
    with _scorer_lock:
        _scorer = scorer
