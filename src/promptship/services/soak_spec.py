"""What one soak cycle works on and gives back: the two versions as called (their
templates rendered per sample), the sampled queries, and the cycle's counts."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
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
class TrafficWindow:
    """Where a cycle's samples are read, page by page: the prompt's logged traffic in one
    environment, newest first, at most ``size`` queries, none newer than ``upto_id`` (the
    newest when the cycle began, so the pages hold still while traffic keeps arriving)."""

    prompt_id: int
    environment: str
    #: only traffic logged from this time (a break-glass soak: what the new version met)
    since: datetime | None
    upto_id: int
    size: int


@dataclass(frozen=True)
class SampleCursor:
    """Where the next page of a window starts: after the sample logged at ``at``, ``id``."""

    at: datetime
    id: int


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
    #: the suite's inputs, when there is no baseline (a handful, held here); with one, the
    #: logged traffic is read from ``traffic`` a page at a time instead
    samples: list[Sample]
    min_samples: int
    similarity: float
    max_divergence: float
    traffic: TrafficWindow | None = None

    @property
    def sample_size(self) -> int:
        """The queries the cycle replays."""
        return self.traffic.size if self.traffic is not None else len(self.samples)


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
