"""Tables. The services are the only code that reads or writes them."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    Boolean,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Text,
    TypeDecorator,
    UniqueConstraint,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

NAMING = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class UTCDateTime(TypeDecorator[datetime]):
    """Timezone-aware UTC in Python, on every backend (SQLite keeps no zone)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to the store; use an aware UTC time")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


JSONType = JSON().with_variant(JSONB(), "postgresql")


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING)
    type_annotation_map = {datetime: UTCDateTime, dict[str, Any]: JSONType, list[Any]: JSONType}


class Prompt(Base):
    __tablename__ = "prompts"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(64), unique=True)
    created_at: Mapped[datetime]
    created_by: Mapped[str] = mapped_column(String(255))

    versions: Mapped[list[PromptVersion]] = relationship(back_populates="prompt", lazy="raise")


class PromptVersion(Base):
    """An immutable version of a prompt; only ``status`` ever changes."""

    __tablename__ = "prompt_versions"
    __table_args__ = (UniqueConstraint("prompt_id", "version"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    prompt_id: Mapped[int] = mapped_column(ForeignKey("prompts.id", ondelete="CASCADE"), index=True)
    version: Mapped[str] = mapped_column(String(128))
    status: Mapped[str] = mapped_column(String(16))
    content_hash: Mapped[str] = mapped_column(String(64))
    author: Mapped[str] = mapped_column(String(255))
    #: who pushed it on behalf of ``author`` (an admin token's holder); None when the author
    #: pushed it themselves (migration 0009)
    pushed_by: Mapped[str | None] = mapped_column(String(255))
    created_at: Mapped[datetime]
    model: Mapped[str] = mapped_column(String(200))
    provider: Mapped[str] = mapped_column(String(32))
    temperature: Mapped[float] = mapped_column(Float)
    max_tokens: Mapped[int] = mapped_column(Integer)
    system_prompt: Mapped[str] = mapped_column(Text)
    #: the version's canonical content, exactly as hashed (settings, tests, description).
    content: Mapped[dict[str, Any]]

    prompt: Mapped[Prompt] = relationship(back_populates="versions", lazy="raise")


class Deployment(Base):
    """The active pointer: which version an environment runs now."""

    __tablename__ = "deployments"
    __table_args__ = (UniqueConstraint("prompt_id", "environment"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    prompt_id: Mapped[int] = mapped_column(ForeignKey("prompts.id", ondelete="CASCADE"))
    environment: Mapped[str] = mapped_column(String(64))
    version_id: Mapped[int] = mapped_column(ForeignKey("prompt_versions.id"))
    deployed_at: Mapped[datetime]
    deployed_by: Mapped[str] = mapped_column(String(255))
    #: bumped on every change of the pointer; the runtime API's ETag builds on it.
    revision: Mapped[int] = mapped_column(Integer, default=1)


class DeploymentHistory(Base):
    """Every move of an environment's pointer, oldest first."""

    __tablename__ = "deployment_history"
    __table_args__ = (Index(None, "prompt_id", "environment", "id"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    prompt_id: Mapped[int] = mapped_column(ForeignKey("prompts.id", ondelete="CASCADE"))
    environment: Mapped[str] = mapped_column(String(64))
    version_id: Mapped[int] = mapped_column(ForeignKey("prompt_versions.id"))
    previous_version_id: Mapped[int | None] = mapped_column(ForeignKey("prompt_versions.id"))
    move: Mapped[str] = mapped_column(String(32))
    actor: Mapped[str] = mapped_column(String(255))
    reason: Mapped[str | None] = mapped_column(Text)
    request_id: Mapped[int | None] = mapped_column(ForeignKey("promotion_requests.id"))
    at: Mapped[datetime]


class PromotionRequest(Base):
    __tablename__ = "promotion_requests"
    __table_args__ = (
        Index(None, "state", "expires_at"),
        Index(None, "prompt_id", "environment", "state"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    prompt_id: Mapped[int] = mapped_column(ForeignKey("prompts.id", ondelete="CASCADE"))
    version_id: Mapped[int] = mapped_column(ForeignKey("prompt_versions.id"))
    #: an approval is bound to the exact content it was given for.
    content_hash: Mapped[str] = mapped_column(String(64))
    environment: Mapped[str] = mapped_column(String(64))
    kind: Mapped[str] = mapped_column(String(16))
    state: Mapped[str] = mapped_column(String(16))
    requester: Mapped[str] = mapped_column(String(255))
    #: who asked on behalf of ``requester`` (an admin token's holder); None when the
    #: requester asked themselves (migration 0009)
    requested_by: Mapped[str | None] = mapped_column(String(255))
    reason: Mapped[str | None] = mapped_column(Text)
    required_approvals: Mapped[int] = mapped_column(Integer)
    created_at: Mapped[datetime]
    expires_at: Mapped[datetime]
    closed_at: Mapped[datetime | None]
    closed_by: Mapped[str | None] = mapped_column(String(255))
    close_reason: Mapped[str | None] = mapped_column(Text)


class Approval(Base):
    """One decision (approve or reject) per person per request, enforced by the database."""

    __tablename__ = "approvals"
    __table_args__ = (UniqueConstraint("request_id", "user_id"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    request_id: Mapped[int] = mapped_column(
        ForeignKey("promotion_requests.id", ondelete="CASCADE"), index=True
    )
    user_id: Mapped[str] = mapped_column(String(255))
    approve: Mapped[bool] = mapped_column(Boolean)
    comment: Mapped[str | None] = mapped_column(Text)
    content_hash: Mapped[str] = mapped_column(String(64))
    #: the roles the person held when deciding (approvers, stakeholders).
    roles: Mapped[list[Any]]
    created_at: Mapped[datetime]
    #: how the decider was known: slack, token, local; None before it was kept (migration 0006)
    via: Mapped[str | None] = mapped_column(String(16))


class ValidationRun(Base):
    __tablename__ = "validation_runs"
    __table_args__ = (Index(None, "version_id", "id"), Index(None, "state", "heartbeat_at"))

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    version_id: Mapped[int] = mapped_column(ForeignKey("prompt_versions.id", ondelete="CASCADE"))
    content_hash: Mapped[str] = mapped_column(String(64))
    state: Mapped[str] = mapped_column(String(16))
    total: Mapped[int] = mapped_column(Integer, default=0)
    passed: Mapped[int] = mapped_column(Integer, default=0)
    failed: Mapped[int] = mapped_column(Integer, default=0)
    errored: Mapped[int] = mapped_column(Integer, default=0)
    pass_rate: Mapped[float | None] = mapped_column(Float)
    #: one entry per case: input, expected, got, type, score, passed, error, latency, tokens.
    results: Mapped[list[Any]]
    #: inputs of cases that pass on the production version and fail on this one.
    regressions: Mapped[list[Any]]
    regression_override: Mapped[str | None] = mapped_column(Text)
    requested_by: Mapped[str] = mapped_column(String(255))
    started_at: Mapped[datetime]
    finished_at: Mapped[datetime | None]
    error: Mapped[str | None] = mapped_column(Text)
    #: what the run did differently from the version's settings, and why: e.g. a
    #: temperature the provider refuses for the model, not sent (migration 0010)
    notes: Mapped[list[Any] | None]
    #: the worker executing the run, and when it last said so; a stale heartbeat means
    #: the worker died and the run is marked interrupted.
    owner: Mapped[str | None] = mapped_column(String(128))
    heartbeat_at: Mapped[datetime | None]
    #: how many times a worker started the run; an interrupted run is re-queued until this
    #: reaches the limit, then failed (column added by migration 0008).
    attempts: Mapped[int] = mapped_column(Integer, default=0, server_default="0")


class SoakRun(Base):
    __tablename__ = "soak_runs"
    __table_args__ = (Index(None, "version_id", "environment", "id"), Index(None, "state"))

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    version_id: Mapped[int] = mapped_column(ForeignKey("prompt_versions.id", ondelete="CASCADE"))
    environment: Mapped[str] = mapped_column(String(64))
    kind: Mapped[str] = mapped_column(String(32))
    baseline_version_id: Mapped[int | None] = mapped_column(ForeignKey("prompt_versions.id"))
    state: Mapped[str] = mapped_column(String(24))
    started_at: Mapped[datetime]
    ends_at: Mapped[datetime]
    finished_at: Mapped[datetime | None]
    cycles_done: Mapped[int] = mapped_column(Integer, default=0)
    worst_divergence: Mapped[float | None] = mapped_column(Float)
    failure: Mapped[str | None] = mapped_column(Text)
    details: Mapped[dict[str, Any]]


class TrafficSample(Base):
    __tablename__ = "traffic_samples"
    __table_args__ = (Index(None, "prompt_id", "environment", "at"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    prompt_id: Mapped[int] = mapped_column(ForeignKey("prompts.id", ondelete="CASCADE"))
    environment: Mapped[str] = mapped_column(String(64))
    input: Mapped[str] = mapped_column(Text)
    output: Mapped[str | None] = mapped_column(Text)
    version: Mapped[str | None] = mapped_column(String(128))
    at: Mapped[datetime]
    #: the template vars the app rendered this query's prompt with (migration 0010)
    vars: Mapped[dict[str, Any] | None]


class AuditEvent(Base):
    """Append-only; each row's hash covers its content and the previous row's hash (an
    HMAC under the key ``key_id`` names; plain SHA-256 for events older than migration
    0007, whose ``key_id`` is NULL)."""

    __tablename__ = "audit_events"
    __table_args__ = (
        Index(None, "prompt", "seq"),
        Index(None, "prompt", "environment", "seq"),
        Index(None, "request_id"),
        Index(None, "action"),  # migration 0006: token revocations are looked up by action
    )

    seq: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    at: Mapped[datetime]
    actor: Mapped[str] = mapped_column(String(255))
    action: Mapped[str] = mapped_column(String(64))
    prompt: Mapped[str | None] = mapped_column(String(64))
    version: Mapped[str | None] = mapped_column(String(128))
    environment: Mapped[str | None] = mapped_column(String(64))
    request_id: Mapped[int | None] = mapped_column(Integer)
    details: Mapped[dict[str, Any]]
    prev_hash: Mapped[str] = mapped_column(String(64))
    hash: Mapped[str] = mapped_column(String(64))
    key_id: Mapped[str | None] = mapped_column(String(32))


class AuditHead(Base):
    """One row: the chain's last sequence number and hash. Locked to append."""

    __tablename__ = "audit_head"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    seq: Mapped[int] = mapped_column(Integer)
    hash: Mapped[str] = mapped_column(String(64))


class OutboxMessage(Base):
    """A notification to deliver after its transaction commits (Slack, later others)."""

    __tablename__ = "notification_outbox"
    __table_args__ = (Index(None, "state", "available_at", "id"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    created_at: Mapped[datetime]
    topic: Mapped[str] = mapped_column(String(64))
    channel: Mapped[str | None] = mapped_column(String(64))
    #: messages with the same key are delivered in order (and threaded together in Slack).
    thread_key: Mapped[str | None] = mapped_column(String(128))
    payload: Mapped[dict[str, Any]]
    dedupe_key: Mapped[str | None] = mapped_column(String(255), unique=True)
    state: Mapped[str] = mapped_column(String(16), default="pending")
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    available_at: Mapped[datetime]
    claimed_by: Mapped[str | None] = mapped_column(String(128))
    claimed_until: Mapped[datetime | None]
    sent_at: Mapped[datetime | None]
    last_error: Mapped[str | None] = mapped_column(Text)


class OutboxChannelLease(Base):
    """Who delivers a channel's notifications now: one sender per channel keeps their order
    across replicas."""

    __tablename__ = "outbox_channel_leases"

    channel: Mapped[str] = mapped_column(String(64), primary_key=True)
    leased_by: Mapped[str | None] = mapped_column(String(128))
    lease_until: Mapped[datetime | None]


class NotificationThread(Base):
    """The message a thread of notifications hangs under (a Slack ``ts``), by thread key."""

    __tablename__ = "notification_threads"

    thread_key: Mapped[str] = mapped_column(String(128), primary_key=True)
    channel: Mapped[str] = mapped_column(String(64))
    message_id: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime]


class SoakCycle(Base):
    """One cycle of a soak, keyed (soak, cycle number). Inserting the row claims the due
    tick for one replica (with a lease another replica takes over when it runs out); the
    cycle's result is written to the same row, so a retried tick changes nothing."""

    __tablename__ = "soak_cycles"

    soak_id: Mapped[int] = mapped_column(
        ForeignKey("soak_runs.id", ondelete="CASCADE"), primary_key=True
    )
    cycle: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    #: claimed, then passed, diverged, insufficient (too little traffic) or errored
    state: Mapped[str] = mapped_column(String(16))
    owner: Mapped[str] = mapped_column(String(128))
    lease_until: Mapped[datetime]
    claimed_at: Mapped[datetime]
    attempts: Mapped[int] = mapped_column(Integer, default=1)
    finished_at: Mapped[datetime | None]
    sample_size: Mapped[int | None] = mapped_column(Integer)
    divergent: Mapped[int | None] = mapped_column(Integer)
    errored: Mapped[int | None] = mapped_column(Integer)
    rate: Mapped[float | None] = mapped_column(Float)
    model_calls: Mapped[int | None] = mapped_column(Integer)
    #: the worst examples (input, both outputs, similarity) and anything else worth showing
    details: Mapped[dict[str, Any]]


class JobClaim(Base):
    """A due tick of a scheduled job (the nightly drift watch), claimed once by key."""

    __tablename__ = "job_claims"

    key: Mapped[str] = mapped_column(String(200), primary_key=True)
    owner: Mapped[str] = mapped_column(String(128))
    lease_until: Mapped[datetime]
    claimed_at: Mapped[datetime]
    done_at: Mapped[datetime | None]


# -- outbox dead letters (migration 0005) -------------------------------------------------


class OutboxDeadLetter(Base):
    """A notification set aside after a permanent Slack error or too many failed tries; its
    outbox row is ``dead`` until an operator retries (back to ``pending``) or drops it."""

    __tablename__ = "outbox_dead_letters"

    outbox_id: Mapped[int] = mapped_column(
        ForeignKey("notification_outbox.id", ondelete="CASCADE"), primary_key=True
    )
    topic: Mapped[str] = mapped_column(String(64))
    channel: Mapped[str | None] = mapped_column(String(64))
    attempts: Mapped[int] = mapped_column(Integer)
    error: Mapped[str] = mapped_column(Text)
    dead_at: Mapped[datetime]


# -- identities and tokens (migration 0006) -----------------------------------------------


class ApiToken(Base):
    """A bearer token issued to a person (a Slack user ID) or a service (CI). Only the
    SHA-256 of the secret is kept; the secret is shown once, when it is made."""

    __tablename__ = "api_tokens"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    #: the secret's first characters, to recognise a token in lists
    prefix: Mapped[str] = mapped_column(String(16))
    subject: Mapped[str] = mapped_column(String(255), index=True)
    service: Mapped[bool] = mapped_column(Boolean)
    scope: Mapped[str] = mapped_column(String(16))
    name: Mapped[str | None] = mapped_column(String(64))
    created_at: Mapped[datetime]
    created_by: Mapped[str] = mapped_column(String(255))
    expires_at: Mapped[datetime | None]
    revoked_at: Mapped[datetime | None]
    revoked_by: Mapped[str | None] = mapped_column(String(255))
    last_used_at: Mapped[datetime | None]
    #: ``key_id:HMAC`` under the audit key over what the token grants: a row written
    #: into the database directly has none that verifies, so it never authenticates
    mac: Mapped[str] = mapped_column(String(128))


# -- keyed audit checkpoints (migration 0007) ---------------------------------------------


class AuditCheckpoint(Base):
    """The chain's head at a moment, signed: (seq, hash, at, key) and an HMAC over them.
    Copies go to the policy channel and to files, where deleting the newest events and
    moving ``audit_head`` back cannot reach them."""

    __tablename__ = "audit_checkpoints"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    seq: Mapped[int] = mapped_column(Integer, index=True)
    hash: Mapped[str] = mapped_column(String(64))
    at: Mapped[datetime]
    key_id: Mapped[str] = mapped_column(String(32))
    mac: Mapped[str] = mapped_column(String(64))
    #: what made it: "scheduled", or the production deployment it followed
    reason: Mapped[str] = mapped_column(String(64))


# -- replay-safe command receipts (migration 0008) ----------------------------------------


class CommandReceipt(Base):
    """A non-idempotent slash command acted on, by the fingerprint of its signed request;
    a replay of the same request within Slack's signature window finds it and does nothing."""

    __tablename__ = "command_receipts"

    #: SHA-256 of the signed timestamp and the raw body
    fingerprint: Mapped[str] = mapped_column(String(64), primary_key=True)
    user_id: Mapped[str] = mapped_column(String(255))
    received_at: Mapped[datetime]
    expires_at: Mapped[datetime] = mapped_column(index=True)


# -- proxies (migration 0009) ------------------------------------------------------------
# PromptVersion.pushed_by and PromotionRequest.requested_by, above: who acted on behalf of
# the author or requester, so the person rules hold for them too.
