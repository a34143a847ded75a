"""Bearer tokens issued per identity, stored hashed.

A token belongs to a person (a Slack user ID) or to a service (CI). Its secret is shown once
when it is made; the store keeps only its SHA-256, so a copy of the database cannot be used
to call the API. Tokens from ``PROMPTSHIP_API_TOKENS`` (``scope:service:secret``) are
service tokens that live in the environment instead of the store.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import re
import secrets
from dataclasses import dataclass
from datetime import timedelta

from sqlalchemy import func, or_, select
from sqlalchemy.ext.asyncio import AsyncSession

from promptship.auditkeys import AuditKey, AuditKeys
from promptship.domain.identity import Actor, Scope, Via, parse_scope
from promptship.errors import BadInput, Forbidden, NotFound
from promptship.services import audit
from promptship.services.deps import Deps
from promptship.services.roles import DECIDING_ROLES, ROLLBACK_ROLES
from promptship.services.views import IssuedToken, TokenView
from promptship.store.models import ApiToken, AuditEvent

log = logging.getLogger(__name__)

PREFIX = "psk_"
#: last_used_at is written at most this often per token (a hot app fetches constantly)
TOUCH_EVERY = timedelta(minutes=5)
#: where to point PROMPTSHIP_SERVER when PROMPTSHIP_PUBLIC_URL does not say
SERVER_PLACEHOLDER = "https://YOUR-PROMPTSHIP-SERVER"
#: how long a token people make for themselves in Slack lasts
OWN_LIFETIME = timedelta(days=90)
_SUBJECT = re.compile(r"[A-Za-z0-9][A-Za-z0-9._@:+-]{0,127}")
_SERVICE = re.compile(r"[a-z0-9][a-z0-9._-]{0,63}")
_USER = re.compile(r"[UW][A-Z0-9]{2,31}")


@dataclass(frozen=True)
class TokenIdentity:
    """Who a presented token speaks for, and what it may do."""

    subject: str
    service: bool
    scope: Scope
    token_id: int | None  # None for tokens from PROMPTSHIP_API_TOKENS

    def actor(self) -> Actor:
        return Actor(self.subject, Via.TOKEN, service=self.service)


@dataclass(frozen=True)
class EnvToken:
    scope: Scope
    subject: str
    secret: str


def digest(secret: str) -> str:
    return hashlib.sha256(secret.encode("utf-8")).hexdigest()


def _signed_fields(row: ApiToken, key_id: str) -> bytes:
    # id and prefix too: revocations name the token by id, people by its prefix
    body = {
        "id": row.id,
        "prefix": row.prefix,
        "token_hash": row.token_hash,
        "subject": row.subject,
        "service": row.service,
        "scope": row.scope,
        "expires_at": row.expires_at.isoformat() if row.expires_at else None,
        "created_at": row.created_at.isoformat(),
        "key_id": key_id,
    }
    return json.dumps(body, sort_keys=True, separators=(",", ":")).encode()


def sign(row: ApiToken, key: AuditKey) -> str:
    """The row's ``mac``: ``key_id:HMAC`` over what the token grants, under the audit key."""
    return f"{key.id}:{key.mac(_signed_fields(row, key.id))}"


def mac_holds(row: ApiToken, keys: AuditKeys | None) -> bool:
    """Whether the row's MAC verifies under a listed audit key (promptship issued it)."""
    key_id, _, mac = (row.mac or "").partition(":")
    key = keys.get(key_id) if keys else None
    return key is not None and hmac.compare_digest(mac, key.mac(_signed_fields(row, key_id)))


async def signed_revocations(session: AsyncSession) -> set[int]:
    """The ids of the tokens whose ``token.revoked`` event is signed."""
    query = select(AuditEvent).where(AuditEvent.action == "token.revoked")
    events = (await session.execute(query)).scalars().all()
    keys = audit.keyring(session).keys()
    return {
        e.details["token_id"]
        for e in events
        if isinstance(e.details.get("token_id"), int) and audit.authentic(e, keys)
    }


def parse_env_tokens(raw: str | None) -> list[EnvToken]:
    """Read ``PROMPTSHIP_API_TOKENS``: comma-separated ``scope:service:secret``,
    ``scope:secret`` or a bare ``secret`` (a write token). Every entry is a service token;
    an unknown scope, or a scope that decides, is refused naming the entry."""
    tokens = []
    for index, entry in enumerate((raw or "").split(","), 1):
        entry = entry.strip()
        if not entry:
            continue
        parts = entry.split(":", 2)
        if len(parts) == 1:
            scope, subject, secret = Scope.WRITE, f"api-token-{index}", parts[0]
        else:
            try:
                scope = parse_scope(parts[0])
            except ValueError as exc:
                raise BadInput(
                    f"PROMPTSHIP_API_TOKENS entry {index}: {exc}",
                    hint="write scope:service:token, e.g. write:ci-github:…",
                ) from None
            if len(parts) == 2:
                subject, secret = f"api-token-{index}", parts[1]
            else:
                subject, secret = parts[1].strip(), parts[2]
                if not _SERVICE.fullmatch(subject):
                    raise BadInput(
                        f"PROMPTSHIP_API_TOKENS entry {index}: {subject!r} is not a service name",
                        hint="lower-case letters, digits, '.', '_' and '-', e.g. ci-github",
                    )
        if scope is Scope.APPROVE:
            raise BadInput(
                f"PROMPTSHIP_API_TOKENS entry {index}: service tokens never decide, so they "
                "cannot have the approve scope",
                hint="people get their own in Slack: /prompt token",
            )
        if len(secret.strip()) < 16:
            raise BadInput(
                f"PROMPTSHIP_API_TOKENS entry {index}: the token is shorter than 16 characters",
                hint="make one with: python3 -c 'import secrets; print(secrets.token_urlsafe(32))'",
            )
        tokens.append(EnvToken(scope, subject, secret.strip()))
    return tokens


def _view(row: ApiToken) -> TokenView:
    return TokenView(
        id=row.id,
        prefix=row.prefix,
        subject=row.subject,
        service=row.service,
        scope=row.scope,
        name=row.name,
        created_at=row.created_at,
        created_by=row.created_by,
        expires_at=row.expires_at,
        revoked_at=row.revoked_at,
        last_used_at=row.last_used_at,
    )


def own_scope(roles: frozenset[str], asked: Scope | None) -> Scope:
    """The scope of the token a person asks for for themselves (``/prompt token``): approve
    by default for approvers and on-call, write for everyone else. Admin is refused (admins
    are made with the CLI), and so is approve for someone who holds no role that decides."""
    if asked is Scope.ADMIN:
        raise Forbidden(
            "admin tokens are not handed out in Slack",
            hint="ask for approve or write; the CLI issues admin tokens only where local_decisions is on",
        )
    if asked is None:
        # approvers and on-call decide day to day; a stakeholder asks for approve
        return Scope.APPROVE if roles & ROLLBACK_ROLES else Scope.WRITE
    if asked is Scope.APPROVE and not roles & DECIDING_ROLES:
        raise Forbidden(
            "an approve token is for approvers, on-call and stakeholders, and you hold none "
            "of these roles",
            hint="ask for /prompt token write, or to be listed under roles: in promptship.yaml",
        )
    return asked


def check_subject(subject: str, *, service: bool) -> str:
    subject = subject.strip()
    if service:
        if not _SERVICE.fullmatch(subject):
            raise BadInput(
                f"{subject!r} is not a service name",
                hint="lower-case letters, digits, '.', '_' and '-', e.g. ci-github",
            )
    elif not _USER.fullmatch(subject):
        raise BadInput(
            f"{subject!r} is not a Slack user ID", hint="Slack user IDs look like U01ABCDEF"
        )
    return subject


async def create(
    session: AsyncSession,
    deps: Deps,
    *,
    subject: str,
    service: bool,
    scope: Scope,
    actor: Actor,
    name: str | None = None,
    expires_in: timedelta | None = None,
) -> IssuedToken:
    """Issue a token; the returned secret is the only copy."""
    subject = check_subject(subject, service=service)
    if service and scope is Scope.APPROVE:
        raise BadInput(
            "service tokens never decide, so they cannot have the approve scope",
            hint="people get their own in Slack: /prompt token",
        )
    if name is not None and (len(name) > 64 or not name.strip()):
        raise BadInput("a token name is 1 to 64 characters")
    if expires_in is not None and expires_in <= timedelta(0):
        raise BadInput("a token's lifetime must be positive, e.g. --expires 90d")
    secret = PREFIX + secrets.token_urlsafe(32)
    now = deps.clock.now()
    row = ApiToken(
        token_hash=digest(secret),
        prefix=secret[:12],
        subject=subject,
        service=service,
        scope=scope.value,
        name=name.strip() if name else None,
        created_at=now,
        created_by=actor.id,
        expires_at=now + expires_in if expires_in else None,
        revoked_at=None,
        revoked_by=None,
        last_used_at=None,
        mac="",
    )
    session.add(row)
    await session.flush()  # the MAC covers the id, which the flush assigns
    row.mac = sign(row, audit.keyring(session).signer())
    await session.flush()
    await audit.record(
        session,
        deps.clock,
        actor=actor.id,
        action="token.created",
        details={
            **actor.audit_details(),
            "token": row.prefix,
            "token_id": row.id,
            "subject": subject,
            "service": service,
            "scope": scope.value,
            "expires_at": row.expires_at.isoformat() if row.expires_at else None,
        },
    )
    return IssuedToken(secret=secret, token=_view(row))


async def authenticate(session: AsyncSession, deps: Deps, secret: str) -> TokenIdentity | None:
    """The identity of a stored token, or None when it is unknown, revoked or expired."""
    if not secret.startswith(PREFIX) or len(secret) > 200:
        return None
    wanted = digest(secret)
    row = (
        await session.execute(select(ApiToken).where(ApiToken.token_hash == wanted))
    ).scalar_one_or_none()
    if row is None or not hmac.compare_digest(row.token_hash, wanted):
        return None
    now = deps.clock.now()
    if row.revoked_at is not None or (row.expires_at is not None and row.expires_at <= now):
        return None
    if not mac_holds(row, audit.keyring(session).keys()):
        log.warning(
            "refused token %s: its row has no valid signature (written directly?)", row.prefix
        )
        return None
    if row.id in await signed_revocations(session):
        log.warning("refused token %s: it was revoked, but its row was un-revoked", row.prefix)
        return None
    if row.last_used_at is None or now - row.last_used_at >= TOUCH_EVERY:
        row.last_used_at = now
        await session.flush()
    return TokenIdentity(row.subject, row.service, Scope(row.scope), row.id)


async def list_tokens(
    session: AsyncSession, subject: str | None = None, *, include_revoked: bool = False
) -> list[TokenView]:
    query = select(ApiToken).order_by(ApiToken.id)
    if subject is not None:
        query = query.where(ApiToken.subject == subject)
    if not include_revoked:
        query = query.where(ApiToken.revoked_at.is_(None))
    return [_view(row) for row in (await session.execute(query)).scalars().all()]


async def any_active(session: AsyncSession, deps: Deps) -> bool:
    """Whether any stored token could authenticate now (then the API requires tokens)."""
    now = deps.clock.now()
    count = (
        await session.execute(
            select(func.count())
            .select_from(ApiToken)
            .where(
                ApiToken.revoked_at.is_(None),
                or_(ApiToken.expires_at.is_(None), ApiToken.expires_at > now),
            )
        )
    ).scalar_one()
    return bool(count)


async def revoke(
    session: AsyncSession, deps: Deps, ref: str, actor: Actor, *, owner: str | None = None
) -> TokenView:
    """Revoke a token by its id or its prefix; revoking twice is refused. With ``owner``,
    only a token issued to ``owner`` is found (people revoke their own in Slack)."""
    ref = ref.strip()[:64]
    if ref.isascii() and ref.isdigit() and len(ref) <= 12:
        query = select(ApiToken).where(ApiToken.id == int(ref))
    elif ref.startswith(PREFIX) and 8 <= len(ref) <= 16:
        query = select(ApiToken).where(ApiToken.prefix == ref)
    else:
        raise BadInput(
            f"not a token id or prefix: {ref!r}", hint="see promptship token list (id or psk_…)"
        )
    if owner is not None:
        query = query.where(ApiToken.subject == owner)
    rows = (await session.execute(query.with_for_update())).scalars().all()
    if not rows:
        mine = " of yours" if owner is not None else ""
        raise NotFound(f"no token {ref}{mine}", hint="see promptship token list")
    if len(rows) > 1:
        raise BadInput(f"{ref} is the prefix of several tokens", hint="revoke it by its id")
    row = rows[0]
    if row.revoked_at is not None:
        raise BadInput(f"token {row.prefix} was already revoked by {row.revoked_by}")
    row.revoked_at = deps.clock.now()
    row.revoked_by = actor.id
    await session.flush()
    await audit.record(
        session,
        deps.clock,
        actor=actor.id,
        action="token.revoked",
        details={
            **actor.audit_details(),
            "token": row.prefix,
            "token_id": row.id,
            "subject": row.subject,
        },
    )
    return _view(row)
