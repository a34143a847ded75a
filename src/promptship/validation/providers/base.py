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
    #: what the call did differently from what was asked, for the run's record (e.g. a
    #: setting the provider refuses for this model, not sent)
    notes: tuple[str, ...] = ()


class ProviderError(Exception):
    """No answer, after the SDK's own retries; the message says why, for people."""


class Provider(Protocol):
    name: str

    async def complete(
        self,
        *,
        model: str,
        system: str,
        messages: list[dict[str, str]],
        temperature: float,
        max_tokens: int,
    ) -> Completion:
        """One answer to ``messages`` (the few-shot turns and the user's, last), under
        ``system``."""
        ...

    async def aclose(self) -> None: ...
