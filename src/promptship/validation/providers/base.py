"""What a model provider is to the runner: one call, one answer or a ProviderError."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol


@dataclass(frozen=True)
class Completion:
    text: str
    input_tokens: int | None
    output_tokens: int | None
    latency_ms: float


class ProviderError(Exception):
    """No answer, after the SDK's own retries; the message says why, for people."""


class Provider(Protocol):
    name: str

    async def complete(
        self, *, model: str, system: str, user: str, temperature: float, max_tokens: int
    ) -> Completion: ...

    async def aclose(self) -> None: ...
