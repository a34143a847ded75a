"""What ``promptship init`` writes: a commented trial policy, an example prompt with a passing
suite, a sample of production traffic, and the ``.gitignore`` lines for local state.

The example prompt and the traffic sample ship as package data beside this module, so
``init`` works from an installed package; ``customer-support.yaml`` is the same file as
``examples/prompts/customer-support.yaml`` in the repository (a test keeps them equal).
"""

from __future__ import annotations

from datetime import timedelta
from importlib.resources import files

from promptship.durations import format_duration

POLICY_FILE = "promptship.yaml"
EXAMPLE_PROMPT = "prompts/customer-support.yaml"
TRAFFIC_SAMPLE = "traffic-sample.jsonl"
EXAMPLE_NAME = "customer-support"
EXAMPLE_VERSION = "2.1.0"

DEFAULT_SOAK = timedelta(hours=24)
#: the shortest soak init writes: three cycles of at least a second each
MIN_SOAK = timedelta(seconds=3)

GITIGNORE_HEADER = (
    "# promptship: the local database, its audit and session keys, the serve lock, the doubles"
)
GITIGNORE_LINES = (
    "promptship.db",
    "promptship.db-wal",
    "promptship.db-shm",
    "*.audit-key",
    "*.session-key",
    "*.serve.lock",
    ".promptship-doubles.json",
    ".promptship-*.log",
)


def soak_interval(soak: timedelta) -> timedelta:
    """A cycle every hour, or three cycles when the soak is shorter than three hours
    (whole seconds, at least one)."""
    third = timedelta(seconds=max(1, int(soak.total_seconds() / 3)))
    return min(timedelta(hours=1), third)


def spell(delta: timedelta) -> str:
    """A duration as the policy file spells it: whole hours in hours (``24h``, not ``1d``)."""
    seconds = int(delta.total_seconds())
    if seconds >= 3600 and seconds % 3600 == 0:
        return f"{seconds // 3600}h"
    return format_duration(delta)


def policy_text(soak: timedelta = DEFAULT_SOAK) -> str:
    """The commented trial policy, with this staging soak."""
    interval = soak_interval(soak)
    note = (
        "the default"
        if soak == DEFAULT_SOAK
        else "shortened for a trial (init --soak); the default is 24h"
    )
    return _POLICY.format(
        soak=f"{spell(soak):<20}# {note}",
        interval=f"{spell(interval):<11}# one cycle every this long",
    )


def example_prompt() -> str:
    return files(__name__).joinpath("customer-support.yaml").read_text(encoding="utf-8")


def traffic_sample() -> str:
    return files(__name__).joinpath("traffic-sample.jsonl").read_text(encoding="utf-8")


def merge_gitignore(existing: str | None) -> tuple[str, list[str]]:
    """``existing`` (None: no file) with the lines it lacks appended; returns the new text
    and the lines added (none: leave the file as it is)."""
    text = existing or ""
    present = {line.strip() for line in text.splitlines()}
    missing = [line for line in GITIGNORE_LINES if line not in present]
    if not missing:
        return text, []
    block = ([] if GITIGNORE_HEADER in present else [GITIGNORE_HEADER]) + missing
    if text and not text.endswith("\n"):
        text += "\n"
    if text.strip():
        text += "\n"
    return text + "\n".join(block) + "\n", missing


_POLICY = """\
# promptship policy: who decides, and the gates between dev, staging and production.
# Written by `promptship init`; every key is described in promptship's README
# ("Configuration"). Durations: s, m, h, d (e.g. 90s, 1h30m).

channel: C0PROMPTOPS          # the Slack channel (its ID) for approval requests and alerts

roles:
  # PLACEHOLDERS: replace U01, U02 and U03 with your team's Slack user IDs (U…),
  # user-group IDs (S…) or e-mail addresses.
  approvers: [U01, U02]       # approve promotions to production (never their own)
  oncall: [U03]               # roll back at once, without approvals
  stakeholders: []            # when set, one of them signs off each production promotion

environments:                 # dev → staging → production
  dev:
    follow_latest: false      # true: dev runs each newly pushed version (no gates in dev)
  staging:
    min_pass_rate: 0.8        # a version's suite must pass 80 % of its cases to enter staging
    regression_check: true    # ... and fail no case the production version passes
  production:
    approvals: 2              # distinct approvers, never the requester or the author
    # the staging soak: before production, the staging version answers recent production
    # queries beside the production version (`promptship init --soak 30s` writes a short
    # soak, with a fitting interval, for a trial)
    soak: {soak}
    soak_interval: {interval}
    max_divergence: 0.10      # a cycle with more than 10 % diverging answers fails the soak
    soak_min_samples: 20      # fewer production queries in a cycle: not enough traffic, no pass

breakglass:                   # emergency promotion straight to production
  approvals: 3                # distinct approvers: list at least three above to use it
  production_soak: 1h         # then a production soak; over the limit, an automatic rollback

approval_expiry: 72h          # an open request not approved by then closes

# SINGLE-PERSON TRIAL ONLY. `true` lets the local command line's --as (self-declared,
# unverified) approve, reject and roll back, so one person can take a prompt to production
# alone; anyone with a shell could then decide as anyone. A shared install sets it to false
# and decides in Slack, or with each person's own token (README, "Security model").
local_decisions: true

# The model that grades llm-rubric test cases (a rubric a judge checks the answer against).
# judge: {{provider: anthropic, model: claude-haiku-4-5}}
"""
