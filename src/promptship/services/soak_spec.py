"""What one soak cycle works on and gives back: the two versions as called (their
templates rendered per sample), the sampled queries, and the cycle's counts."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from promptship.domain.template import Rendered, render_prompt


@dataclass(frozen=True)
class Side:
    """One prompt version as the soak calls it."""

    version: str
    provider: str
    model: str
    temperature: float
    max_tokens: int
    system_prompt: str
    #: the template's few-shot turns and declared variables (with defaults)
    messages: list[dict[str, str]] = field(default_factory=list)
    variables: dict[str, Any] | None = None

    def render(self, vars: dict[str, Any] | None) -> Rendered:
        """This version's prompt for one sample's vars (MissingVariable, RenderError)."""
        return render_prompt(self.system_prompt, self.messages, self.variables, vars)


@dataclass(frozen=True)
class Sample:
    input: str
    #: a logged answer, and which version gave it; reused instead of calling that version
    output: str | None = None
    version: str | None = None
    #: the template vars the app rendered the prompt with; both sides render with them
    vars: dict[str, Any] | None = None


@dataclass(frozen=True)
class CycleSpec:
    """What a replica needs to run one cycle, read in one transaction."""

    soak_id: int
    cycle: int
    kind: str
    prompt: str
    candidate: Side
    #: the version compared against (production's, or the one break-glass replaced);
    #: None: nothing to compare with, so the suite inputs are replayed for errors only.
    baseline: Side | None
    samples: list[Sample]
    min_samples: int
    similarity: float
    max_divergence: float


@dataclass
class CycleResult:
    sample_size: int
    divergent: int = 0
    errored: int = 0
    model_calls: int = 0
    worst: list[dict[str, Any]] = field(default_factory=list)
    error: str | None = None
    #: why the first errored sample got no answer (a provider error, vars that do not
    #: render a side), for the soak's failure message
    first_error: str | None = None
    calls_seconds: float = 0.0
    scoring_seconds: float = 0.0

    @property
    def rate(self) -> float | None:
        scored = self.sample_size - self.errored
        return self.divergent / scored if scored > 0 else None
