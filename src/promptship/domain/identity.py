"""Who acts: a person (a Slack user ID), a service (CI), or promptship itself.

An :class:`Actor` is always built by the surface that authenticated the caller (Slack's
signed request, a bearer token, the local CLI) and handed to the services; it never comes
from a field the caller fills in. The services record ``id`` as the audit event's actor and
:meth:`Actor.audit_details` beside it, so the log says how each person was known.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import StrEnum

_SLACK_USER_ID = re.compile(r"[UW][A-Z0-9]{2,31}")


def is_slack_user_id(text: str) -> bool:
    """Whether ``text`` looks like a Slack user ID (``U01ABCDEF``, or ``W…`` on Enterprise Grid)."""
    return bool(_SLACK_USER_ID.fullmatch(text))


class Via(StrEnum):
    """How the acting identity was established."""

    SLACK = "slack"  # a request signed by Slack: the user ID is Slack's
    TOKEN = "token"  # a bearer token issued to this identity
    LOCAL = "local"  # the CLI straight on the database: self-declared, unverified
    SYSTEM = "system"  # promptship itself: expiry, auto-revert, the scheduler


@dataclass(frozen=True)
class Actor:
    """An acting identity.

    ``id`` is a Slack user ID for a person, the service's name for a service (CI), or
    ``promptship`` for the system. ``proxy`` is set when an admin token acted on behalf of
    ``id``: the audit then reads "proxy on behalf of id".
    """

    id: str
    via: Via
    service: bool = False
    proxy: str | None = None

    @property
    def verified(self) -> bool:
        return self.via is not Via.LOCAL

    @property
    def is_person(self) -> bool:
        return not self.service and self.via is not Via.SYSTEM

    def audit_details(self) -> dict[str, str]:
        """What the audit keeps about how this identity was known."""
        details = {"auth": self.via.value}
        if self.service:
            details["service"] = "true"
        if self.proxy:
            details["on_behalf_of_by"] = self.proxy
        return details

    def describe(self) -> str:
        """The identity as people read it: ``U01``, ``ci-github (service)``,
        ``U07 on behalf of U01``, ``U01 via local CLI, unverified``."""
        text = f"{self.id} (service)" if self.service else self.id
        if self.proxy:
            text = f"{self.proxy} on behalf of {text}"
        if self.via is Via.LOCAL:
            text += " via local CLI, unverified"
        return text


SYSTEM = Actor("promptship", Via.SYSTEM)


def person(user_id: str, via: Via) -> Actor:
    return Actor(user_id, via)


def service(name: str) -> Actor:
    return Actor(name, Via.TOKEN, service=True)


class Scope(StrEnum):
    """What a bearer token may do. Each scope grants a fixed set of permissions."""

    RUNTIME = "runtime"  # fetch live prompts and log traffic: what an application needs
    READ = "read"  # every read, /metrics
    WRITE = "write"  # reads, push, promotion requests, traffic, test re-runs
    APPROVE = "approve"  # write, plus decisions: approve, reject, override, rollback
    ADMIN = "admin"  # approve, plus acting on behalf of a named person


class Permission(StrEnum):
    FETCH = "fetch"
    READ = "read"
    TRAFFIC = "traffic"
    PUSH = "push"
    REQUEST = "request"
    DECIDE = "decide"
    ON_BEHALF = "on-behalf"


_GRANTS: dict[Scope, frozenset[Permission]] = {
    Scope.RUNTIME: frozenset({Permission.FETCH, Permission.TRAFFIC}),
    Scope.READ: frozenset({Permission.FETCH, Permission.READ}),
    Scope.WRITE: frozenset(
        {Permission.FETCH, Permission.READ, Permission.TRAFFIC, Permission.PUSH, Permission.REQUEST}
    ),
}
_GRANTS[Scope.APPROVE] = _GRANTS[Scope.WRITE] | {Permission.DECIDE}
_GRANTS[Scope.ADMIN] = _GRANTS[Scope.APPROVE] | {Permission.ON_BEHALF}


def grants(scope: Scope, permission: Permission) -> bool:
    return permission in _GRANTS[scope]


def parse_scope(text: str) -> Scope:
    """A scope by name; ValueError naming the known ones otherwise."""
    try:
        return Scope(text.strip().lower())
    except ValueError:
        known = ", ".join(s.value for s in Scope)
        raise ValueError(f"unknown scope {text.strip()!r} (use one of: {known})") from None
