"""What services return: plain, serialisable shapes for Slack, the CLI and the API."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field


class View(BaseModel):
    model_config = ConfigDict(frozen=True)


class PushResult(View):
    name: str
    version: str
    content_hash: str
    created: bool  # False: the identical version was already registered
    status: str


class VersionSummary(View):
    name: str
    version: str
    status: str
    content_hash: str
    author: str
    created_at: datetime


class RunView(View):
    id: int
    state: str
    total: int
    passed: int
    failed: int
    errored: int
    pass_rate: float | None
    started_at: datetime
    finished_at: datetime | None
    regressions: list[str]
    regression_override: str | None
    error: str | None
    #: what the run did differently from the version's settings, and why
    notes: list[str] = []


class RunDetail(RunView):
    prompt: str
    version: str
    requested_by: str
    results: list[dict[str, Any]]


class VersionDetail(VersionSummary):
    model: str
    provider: str
    temperature: float
    max_tokens: int
    system_prompt: str
    description: str | None
    tests: list[dict[str, Any]]
    environments: list[str]  # where this version is active now
    #: the template's variables and their defaults (null: required), and few-shot turns
    variables: dict[str, Any] = {}
    messages: list[dict[str, str]] = []
    latest_run: RunView | None


class CheckView(View):
    gate: str
    state: str  # passed, waiting, failed
    detail: str


class DecisionView(View):
    user: str
    approve: bool
    comment: str | None
    roles: list[str]
    at: datetime
    #: how the decider was known: ``slack``, ``token``, ``local`` (unverified); None if unknown
    via: str | None = None


class TestsEvidence(View):
    """The version's latest test run, as an approver weighs it."""

    state: str
    passed: int
    total: int
    failed: int
    errored: int
    pass_rate: float | None
    min_pass_rate: float  # the gate
    #: the cases that pass on production and fail here (the first ones) and how many in all
    regressions: list[str]
    regression_count: int
    override_reason: str | None = None
    override_by: str | None = None
    #: the run shown: an override names it, and is refused once a later run replaced it
    run_id: int | None = None
    #: for a request that waits on tests: which of its runs this is ("run 2 of at most 4":
    #: the first, then at most ``MAX_RERUNS`` re-runs)
    run_number: int | None = None
    max_runs: int | None = None


class SoakEvidence(View):
    """The version's staging soak."""

    state: str
    cycles_done: int
    cycles_total: int
    worst_divergence: float | None
    max_divergence: float
    started_at: datetime
    ends_at: datetime
    failure: str | None


class DiffEvidence(View):
    """The changed lines of the system prompt against another version (the first ones)."""

    against: str
    lines: list[str]
    added: int
    removed: int
    #: the change is too large to diff in a request (``lines`` is empty, the counts are the
    #: changed region's lines); ``/prompt diff`` shows it
    too_large: bool = False

    @property
    def shown_all(self) -> bool:
        return (
            not self.too_large
            and sum(1 for x in self.lines if x[:1] in "+-") >= self.added + self.removed
        )


class RequestEvidence(View):
    """What approvers need to decide: what production runs now, tests, soak, the diff."""

    #: when it was gathered (soak times are shown against it)
    as_of: datetime
    #: a request into production (whatever the policy calls it): one with no test run says so
    into_production: bool = False
    production_version: str | None
    tests: TestsEvidence | None
    soak: SoakEvidence | None
    diff: DiffEvidence | None


class RequestView(View):
    id: int
    code: str
    prompt: str
    version: str
    content_hash: str
    environment: str
    kind: str
    state: str
    requester: str
    author: str
    reason: str | None
    required_approvals: int
    decisions: list[DecisionView]
    checks: list[CheckView]
    created_at: datetime
    expires_at: datetime
    closed_at: datetime | None
    closed_by: str | None
    close_reason: str | None
    evidence: RequestEvidence | None = None

    @property
    def approvers(self) -> list[str]:
        return [d.user for d in self.decisions if d.approve]


class DecisionOutcome(View):
    request: RequestView
    recorded: bool  # False: this person had already decided the same way
    message: str


class DeploymentView(View):
    environment: str
    version: str
    status: str
    deployed_at: datetime
    deployed_by: str
    revision: int


class PromptStatus(View):
    name: str
    latest_version: str | None
    versions: int
    environments: list[DeploymentView]
    open_requests: list[RequestView]


class RollbackResult(View):
    prompt: str
    environment: str
    from_version: str
    to_version: str
    actor: str
    reason: str | None
    at: datetime
    #: how the actor was known: ``slack``, ``token``, ``local`` (unverified), ``system``
    via: str | None = None


class AuditEventView(View):
    seq: int
    at: datetime
    actor: str
    action: str
    prompt: str | None
    version: str | None
    environment: str | None
    request_id: int | None
    details: dict[str, Any]


class HistoryPage(View):
    prompt: str
    environment: str | None
    events: list[AuditEventView]
    #: pass as ``before`` to get the next (older) page; None on the last page.
    next_before: int | None


class AuditPage(View):
    events: list[AuditEventView]
    #: pass as ``before`` to get the next (older) page; None on the last page.
    next_before: int | None


class SettingChange(View):
    key: str
    old: Any
    new: Any


class VersionDiff(View):
    name: str
    old_version: str
    new_version: str
    settings: list[SettingChange]
    system_prompt_diff: str  # unified diff; empty when the texts are equal
    tests_added: list[str]
    tests_removed: list[str]

    @property
    def identical(self) -> bool:
        return not (
            self.settings or self.system_prompt_diff or self.tests_added or self.tests_removed
        )


class SoakView(View):
    id: int
    version: str
    environment: str
    kind: str
    state: str
    started_at: datetime
    ends_at: datetime
    finished_at: datetime | None
    cycles_done: int
    cycles_total: int = 0
    #: when the next cycle is due (running soaks only)
    next_at: datetime | None = None
    worst_divergence: float | None
    failure: str | None


class SoakCycleView(View):
    """A settled soak cycle: passed, diverged, missed, insufficient or errored."""

    cycle: int
    state: str
    finished_at: datetime | None
    sample_size: int | None
    divergent: int | None
    errored: int | None
    rate: float | None
    error: str | None = None
    #: the most divergent pairs: input, candidate, baseline, similarity
    worst: list[dict[str, Any]] = []


class SoakDetail(View):
    prompt: str
    soak: SoakView
    #: the divergence a cycle may reach (the production policy's)
    max_divergence: float
    cycles: list[SoakCycleView]


class PromptMessage(View):
    """A turn sent before the user's (a few-shot example); a template like the system prompt."""

    role: Literal["user", "assistant"]
    content: str


class RuntimePrompt(View):
    """What the runtime API serves: the active version of a prompt in an environment.

    ``system_prompt`` and each message's ``content`` are served as written: templates when
    the version declares ``variables``, rendered by the app (the client's ``render``)."""

    name: str
    environment: str
    version: str
    content_hash: str
    #: bumped on every move of the environment's pointer (promotion, rollback)
    revision: int
    provider: str
    model: str
    temperature: float
    max_tokens: int
    system_prompt: str
    deployed_at: datetime
    deployed_by: str
    variables: dict[str, Any] = Field(
        description="the template's variables: name to default, null when the app must "
        "give it ({} when none)"
    )
    messages: list[PromptMessage] = Field(
        description="the turns sent before the user's, in order ([] when none)"
    )

    @property
    def etag(self) -> str:
        """Strong: the same pointer move and content give the same bytes."""
        return f'"{self.revision}-{self.content_hash[:20]}"'


class TokenView(View):
    """A token as lists show it: never the secret, only its first characters."""

    id: int
    prefix: str
    subject: str
    service: bool
    scope: str
    name: str | None
    created_at: datetime
    created_by: str
    expires_at: datetime | None
    revoked_at: datetime | None
    last_used_at: datetime | None

    @property
    def active(self) -> bool:
        return self.revoked_at is None


class IssuedToken(View):
    """A token just made: ``secret`` is shown this once and kept nowhere."""

    secret: str
    token: TokenView


class DeploymentMove(View):
    """An environment's pointer moved (or was already there) without a request: dev,
    pointed at a version at once or following the newest push."""

    prompt: str
    environment: str
    from_version: str | None
    to_version: str
    actor: str
    move: str
    changed: bool  # False: it already ran that version
    reason: str | None = None
    at: datetime
    via: str | None = None


class ApplyChange(View):
    """What ``apply`` does (or, dry, would do) to one environment of one prompt.

    ``action``: ``none`` (it already runs the version), ``point`` (dev, at once),
    ``promote`` (staging: a request whose tests run), ``request`` (production: a request
    people approve), ``rollback`` (to a version that ran there, or an older one).
    ``outcome``: ``unchanged``, ``waiting`` (its request is already open), ``planned``
    (dry run), ``done``, ``opened`` (a request now waits on its gates), ``refused``."""

    prompt: str
    environment: str
    line: int
    from_version: str | None
    to_version: str
    action: str
    outcome: str
    detail: str | None = None
    request: str | None = None


class ApplyResult(View):
    source: str
    dry_run: bool
    changes: list[ApplyChange]

    @property
    def refused(self) -> int:
        return sum(1 for c in self.changes if c.outcome == "refused")
