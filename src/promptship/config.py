"""Settings from the environment (pydantic-settings) and policy from ``promptship.yaml``.

A bad policy file stops start-up with the file, the key and the problem, e.g.
``promptship.yaml: environments.production.approvals: Input should be greater than or
equal to 0 (got -1)``.
"""

from __future__ import annotations

import os
import re
from datetime import timedelta
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PlainSerializer,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_settings import BaseSettings, SettingsConfigDict

from promptship.auditkeys import AuditKeys
from promptship.auditkeys import resolve as resolve_audit_keys
from promptship.domain.identity import is_slack_user_id
from promptship.domain.safe_load import load_yaml
from promptship.durations import format_duration, parse_duration
from promptship.errors import BadInput

DEFAULT_DATABASE_URL = "sqlite+aiosqlite:///./promptship.db"
DEFAULT_POLICY_FILE = "promptship.yaml"


def _duration(value: Any) -> timedelta:
    try:
        return parse_duration(value)
    except BadInput as exc:
        raise ValueError(str(exc)) from None


Duration = Annotated[
    timedelta, BeforeValidator(_duration), PlainSerializer(format_duration, return_type=str)
]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class DevPolicy(_Strict):
    """The development environment: no gates; anyone with write rights points it at any
    registered version, or it follows the newest push."""

    #: move dev to each newly pushed version that is its prompt's newest
    follow_latest: bool = False


class StagingPolicy(_Strict):
    """The gate into the staging environment: the version's suite must pass."""

    min_pass_rate: float = Field(0.8, ge=0.0, le=1.0)
    regression_check: bool = True


class ProductionPolicy(_Strict):
    """The gate into production: people, and a soak in staging."""

    approvals: int = Field(2, ge=0, le=20)
    soak: Duration = timedelta(hours=24)
    max_divergence: float = Field(0.10, ge=0.0, le=1.0)
    divergence_similarity: float = Field(0.85, ge=0.0, le=1.0)
    soak_interval: Duration = timedelta(hours=1)
    soak_sample: int = Field(1000, ge=1, le=100_000)
    #: fewer production queries than this in a cycle is "not enough traffic", never a pass
    soak_min_samples: int = Field(20, ge=1, le=100_000)


class BreakglassPolicy(_Strict):
    approvals: int = Field(3, ge=1, le=20)
    production_soak: Duration = timedelta(hours=1)


class TrafficPolicy(_Strict):
    """How much logged traffic is kept per prompt and environment for soaks."""

    max_samples: int = Field(50_000, ge=1, le=10_000_000)
    max_age: Duration = timedelta(days=7)


_EMAIL = re.compile(r"[^@\s<>]{1,64}@[A-Za-z0-9-]+(\.[A-Za-z0-9-]+)+")
_GROUP_ID = re.compile(r"S[A-Z0-9]{2,31}")


def is_email(text: str) -> bool:
    """Whether a roles entry is an e-mail address (resolved to a Slack user when used)."""
    return len(text) <= 254 and bool(_EMAIL.fullmatch(text))


class JudgePolicy(_Strict):
    """The model that grades ``llm-rubric`` cases: it answers a strict JSON verdict."""

    provider: Literal["anthropic", "openai-compatible"] = "anthropic"
    model: str = Field(min_length=1, max_length=200)
    max_tokens: int = Field(512, ge=16, le=8192)


def _holders(value: list[str]) -> list[str]:
    """A list of people as roles name them, cleaned; anything else is refused, naming it."""
    cleaned = []
    for entry in value:
        entry = str(entry).strip()
        if is_email(entry):
            entry = entry.lower()  # Slack matches addresses case-insensitively
        elif not (is_slack_user_id(entry) or _GROUP_ID.fullmatch(entry)):
            raise ValueError(
                f"{entry[:100]!r} is not a Slack user ID (U01ABCDEF), a user-group ID "
                "(S0GROUP) or an e-mail address"
            )
        cleaned.append(entry)
    return cleaned


class RolesPolicy(_Strict):
    """Who holds each role: Slack user IDs, user-group IDs (``S…``) or e-mail addresses."""

    approvers: list[str] = Field(default_factory=list)
    oncall: list[str] = Field(default_factory=list)
    stakeholders: list[str] = Field(default_factory=list)

    @field_validator("approvers", "oncall", "stakeholders")
    @classmethod
    def _holders(cls, value: list[str]) -> list[str]:
        return _holders(value)


class ConsolePolicy(_Strict):
    """Who may sign in to the read-only web console: Slack user IDs, user-group IDs or
    e-mail addresses, as in ``roles``; empty (the default) lets everyone in the workspace."""

    viewers: list[str] = Field(default_factory=list, max_length=1000)

    @field_validator("viewers")
    @classmethod
    def _viewers(cls, value: list[str]) -> list[str]:
        return _holders(value)


class Environments(BaseModel):
    """The pipeline: a development, a staging and a production environment, in that order.

    The YAML mapping may name all three (``{dev: {}, qa: {...}, live: {...}}``) or only the
    last two, in which case the development environment is called ``dev``.
    """

    model_config = ConfigDict(frozen=True)

    dev: str = "dev"
    staging: str = "staging"
    production: str = "production"
    dev_policy: DevPolicy = DevPolicy()
    staging_policy: StagingPolicy = StagingPolicy()
    production_policy: ProductionPolicy = ProductionPolicy()

    @model_validator(mode="before")
    @classmethod
    def _from_mapping(cls, value: Any) -> Any:
        if not isinstance(value, dict) or "staging_policy" in value or "dev_policy" in value:
            return value
        names = list(value)
        if set(names) <= {"dev", "staging", "production"}:
            # the default pipeline, with some of its environments' settings overridden
            value = {"dev": {}, "staging": {}, "production": {}, **value}
            names = ["dev", "staging", "production"]
        elif len(names) == 2:
            names.insert(0, "dev")
            value = {"dev": {}, **value}
        if len(names) != 3:
            raise ValueError(
                "list the environments in order: dev, staging and production "
                f"(three, or the last two), got {len(names)}: {', '.join(map(str, names))}"
            )
        for name in names:
            if not isinstance(name, str) or not name.strip():
                raise ValueError(f"environment names must be non-empty text, got {name!r}")
        if len(set(names)) != 3:
            raise ValueError("environment names must differ")
        return {
            "dev": names[0],
            "dev_policy": value[names[0]] or {},
            "staging": names[1],
            "production": names[2],
            "staging_policy": value[names[1]] or {},
            "production_policy": value[names[2]] or {},
        }

    @property
    def names(self) -> tuple[str, str, str]:
        return (self.dev, self.staging, self.production)

    def check(self, name: str) -> str:
        """Return ``name`` if it is an environment of this pipeline, else raise BadInput."""
        if name not in self.names:
            raise BadInput(
                f"unknown environment {name!r}", hint=f"use one of: {', '.join(self.names)}"
            )
        return name


class Policy(_Strict):
    """The contents of ``promptship.yaml``."""

    channel: str | None = None
    roles: RolesPolicy = RolesPolicy()
    #: who may sign in to the web console (everyone in the workspace by default)
    console: ConsolePolicy = ConsolePolicy()
    #: static user-group membership for the CLI and tests; Slack resolves groups live.
    groups: dict[str, list[str]] = Field(default_factory=dict)
    environments: Environments = Environments()
    breakglass: BreakglassPolicy = BreakglassPolicy()
    approval_expiry: Duration = timedelta(hours=72)
    traffic: TrafficPolicy = TrafficPolicy()
    #: when production suites are re-run to catch a provider changing a model under its
    #: name (crontab, UTC); null turns the drift watch off.
    drift_watch: str | None = "0 3 * * *"
    #: outside identities (``github:alice``, ``gitlab:bob``, ``alice@example.com``) mapped to
    #: the Slack user IDs of the people they are, so CI pushes and requests count as theirs.
    identities: dict[str, str] = Field(default_factory=dict)
    #: let the local CLI (``--as``/``PROMPTSHIP_USER``, self-declared and unverified) approve,
    #: reject, override regressions and roll back production. For a single-person trial only:
    #: anyone with a shell could then decide as anyone.
    local_decisions: bool = False
    #: the model that grades ``llm-rubric`` cases; a suite with one fails to run without it
    judge: JudgePolicy | None = None
    #: remove a reasoning block (``<think>…</think>``, as reasoning models served by Ollama
    #: or vLLM emit) from an answer before its assertions are checked
    strip_reasoning: bool = True

    @field_validator("drift_watch")
    @classmethod
    def _crontab(cls, value: str | None) -> str | None:
        if value is None or not value.strip():
            return None
        from apscheduler.triggers.cron import CronTrigger

        try:
            CronTrigger.from_crontab(value, timezone="UTC")
        except ValueError as exc:
            raise ValueError(
                f'not a crontab line ({exc}); e.g. "0 3 * * *" for 03:00 UTC nightly'
            ) from None
        return value.strip()

    @field_validator("environments", mode="before")
    @classmethod
    def _environments(cls, value: Any) -> Any:
        return {} if value is None else value

    @field_validator("identities")
    @classmethod
    def _identity_targets(cls, value: dict[str, str]) -> dict[str, str]:
        cleaned = {}
        for name, user in value.items():
            name, user = str(name).strip(), str(user).strip()
            if not name or len(name) > 256:
                raise ValueError("an outside identity is 1 to 256 characters, e.g. github:alice")
            if not is_slack_user_id(user):
                raise ValueError(
                    f"{name} maps to {user!r}, which is not a Slack user ID (like U01ABCDEF)"
                )
            cleaned[name] = user
        return cleaned

    @field_validator("groups")
    @classmethod
    def _group_ids(cls, value: dict[str, list[str]]) -> dict[str, list[str]]:
        for group in value:
            if not group.startswith("S"):
                raise ValueError(f"user-group IDs start with S, got {group!r}")
        return value


def _policy_key_names(raw: dict[str, Any]) -> dict[str, str]:
    """Map the model's field names back to the environment names the file used."""
    envs = raw.get("environments")
    if not isinstance(envs, dict) or set(envs) <= {"dev", "staging", "production"}:
        return {
            "dev_policy": "dev",
            "staging_policy": "staging",
            "production_policy": "production",
        }
    names = list(envs)[-3:]
    if len(names) == 2:
        names.insert(0, "dev")
    fields = ("dev_policy", "staging_policy", "production_policy")
    return dict(zip(fields, map(str, names), strict=False))


def _format_error(source: str, exc: ValidationError, raw: dict[str, Any]) -> str:
    renames = _policy_key_names(raw)
    lines = []
    for error in exc.errors():
        loc = ".".join(renames.get(str(part), str(part)) for part in error["loc"]) or "(top level)"
        message = error["msg"].removeprefix("Value error, ")
        if error["type"] == "extra_forbidden":
            message = "unknown key (check its spelling)"
        detail = f"{source}: {loc}: {message}"
        if "input" in error and error["type"] not in ("extra_forbidden", "missing"):
            given = error["input"]
            if not isinstance(given, dict | list) and repr(given) not in detail:
                detail += f" (got {given!r})"
        lines.append(detail)
    return "\n".join(lines)


def parse_policy(text: str, source: str = DEFAULT_POLICY_FILE) -> Policy:
    raw = load_yaml(text, source)
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise BadInput(f"{source}: expected a mapping of keys at the top level")
    try:
        return Policy.model_validate(raw)
    except ValidationError as exc:
        raise BadInput(_format_error(source, exc, raw)) from None


def load_policy(path: str | os.PathLike[str] | None) -> Policy:
    """Load the policy file; ``None`` means ``./promptship.yaml`` if present, else defaults."""
    if path is None:
        default = Path(DEFAULT_POLICY_FILE)
        if not default.exists():
            return Policy()
        path = default
    file = Path(path)
    try:
        text = file.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise BadInput(f"{file}: policy file not found (PROMPTSHIP_CONFIG)") from None
    except OSError as exc:
        raise BadInput(f"{file}: cannot read the policy file: {exc.strerror}") from None
    return parse_policy(text, str(file))


class Settings(BaseSettings):
    """Process settings, from environment variables."""

    model_config = SettingsConfigDict(extra="ignore", populate_by_name=True)

    database_url: str = Field(DEFAULT_DATABASE_URL, alias="PROMPTSHIP_DATABASE_URL")
    config: str | None = Field(None, alias="PROMPTSHIP_CONFIG")
    user: str | None = Field(None, alias="PROMPTSHIP_USER")
    api_tokens: SecretStr | None = Field(None, alias="PROMPTSHIP_API_TOKENS")
    #: the audit log's keys, ``id:secret[,id:secret…]``: the first signs, all verify
    audit_key: SecretStr | None = Field(None, alias="PROMPTSHIP_AUDIT_KEY")
    slack_bot_token: SecretStr | None = Field(None, alias="SLACK_BOT_TOKEN")
    slack_signing_secret: SecretStr | None = Field(None, alias="SLACK_SIGNING_SECRET")
    slack_app_token: SecretStr | None = Field(None, alias="SLACK_APP_TOKEN")
    slack_api_url: str = Field("https://slack.com/api/", alias="SLACK_API_URL")
    #: the address people and CI reach this server at, shown with the tokens it hands out
    public_url: str | None = Field(None, alias="PROMPTSHIP_PUBLIC_URL")
    #: Sign in with Slack for the web console: the Slack app's OAuth client, and the
    #: workspace whose members may sign in
    slack_client_id: str | None = Field(None, alias="SLACK_CLIENT_ID", max_length=200)
    slack_client_secret: SecretStr | None = Field(None, alias="SLACK_CLIENT_SECRET")
    slack_team_id: str | None = Field(None, alias="PROMPTSHIP_SLACK_TEAM_ID", max_length=40)
    #: where people are sent to sign in; by default Slack's, or the same origin as
    #: SLACK_API_URL when that is not slack.com (a local double)
    slack_authorize_url: str | None = Field(None, alias="PROMPTSHIP_SLACK_AUTHORIZE_URL")
    #: signs the console's session cookies (32+ characters); on SQLite without it, a key
    #: file beside the database is made on first use
    session_secret: SecretStr | None = Field(None, alias="PROMPTSHIP_SESSION_SECRET")
    #: how often each replica looks for due, unclaimed or abandoned soak cycles (seconds)
    scheduler_tick: float = Field(15.0, gt=0, alias="PROMPTSHIP_SCHEDULER_TICK")
    #: how long a claimed cycle stays with its replica without a renewal (seconds); a
    #: replica that dies mid-cycle is taken over after this
    claim_lease: float = Field(60.0, gt=0, alias="PROMPTSHIP_CLAIM_LEASE")
    #: how many times a notification is tried before it is set aside as a dead letter
    #: (errors Slack would answer the same way again set it aside at once)
    outbox_max_attempts: int = Field(8, ge=1, le=100, alias="PROMPTSHIP_OUTBOX_MAX_ATTEMPTS")
    #: seconds any one database call may take (a query, a lock wait, a pooled connection)
    db_timeout: float = Field(30.0, gt=0, alias="PROMPTSHIP_DB_TIMEOUT")
    #: request body caps in bytes: Slack's events, a pushed prompt file, a traffic batch,
    #: and every other route; a larger body is refused with 413 before it is read
    max_body_slack: int = Field(2**20, gt=0, alias="PROMPTSHIP_MAX_BODY_SLACK")
    max_body_push: int = Field(2**20, gt=0, alias="PROMPTSHIP_MAX_BODY_PUSH")
    max_body_traffic: int = Field(8 * 2**20, gt=0, alias="PROMPTSHIP_MAX_BODY_TRAFFIC")
    max_body_api: int = Field(64 * 2**10, gt=0, alias="PROMPTSHIP_MAX_BODY_API")

    def policy(self) -> Policy:
        return load_policy(self.config)

    def audit_keys(self) -> AuditKeys:
        """The audit keys; without PROMPTSHIP_AUDIT_KEY, a SQLite database's trial key file,
        and on PostgreSQL a refusal naming the command that makes a key."""
        configured = self.audit_key.get_secret_value() if self.audit_key is not None else None
        return resolve_audit_keys(configured, self.database_url)
