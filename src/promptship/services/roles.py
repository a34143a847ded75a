"""Who holds which role: policy lists of Slack user IDs, user-group IDs (``S...``) and
e-mail addresses (the Slack user with that address)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from promptship.config import Policy, is_email

ROLE_NAMES = ("approvers", "oncall", "stakeholders")
#: who approves or rejects a promotion request
DECISION_ROLES = frozenset({"approvers", "stakeholders"})
#: who rolls an environment back (production only by a person who decides: identities)
ROLLBACK_ROLES = frozenset({"oncall", "approvers"})
#: every role whose holders decide something: what an approve token is for
DECIDING_ROLES = DECISION_ROLES | ROLLBACK_ROLES


@dataclass(frozen=True)
class EmailLookup:
    """Whom an e-mail address names: a Slack user ID, or None and why nobody
    (``transient`` when the directory could not be asked, e.g. rate-limited)."""

    user: str | None
    error: str | None = None
    transient: bool = False


class GroupDirectory(Protocol):
    """Resolves a user group to its members and an e-mail address to its Slack user.
    The Slack layer provides a live one; without Slack the policy is the directory."""

    async def members(self, group_id: str) -> frozenset[str]: ...

    async def user_by_email(self, email: str) -> EmailLookup: ...


class StaticGroupDirectory:
    """Group membership from the policy's ``groups:``, e-mail addresses from its
    ``identities:`` (CLI, tests, a server without Slack)."""

    def __init__(
        self, groups: dict[str, list[str]] | None = None, identities: dict[str, str] | None = None
    ) -> None:
        self._groups = {g: frozenset(users) for g, users in (groups or {}).items()}
        self._emails = {
            name.lower(): user for name, user in (identities or {}).items() if is_email(name)
        }

    async def members(self, group_id: str) -> frozenset[str]:
        return self._groups.get(group_id, frozenset())

    async def user_by_email(self, email: str) -> EmailLookup:
        user = self._emails.get(email.lower())
        if user is None:
            return EmailLookup(None, "not mapped under identities: in the policy")
        return EmailLookup(user)


class RoleResolver:
    def __init__(self, policy: Policy, directory: GroupDirectory | None = None) -> None:
        self._policy = policy
        self._directory = directory or StaticGroupDirectory(policy.groups, policy.identities)

    async def _holds(self, entry: str, user: str) -> bool:
        if entry == user:
            return True
        if is_email(entry):
            return (await self._directory.user_by_email(entry)).user == user
        return entry.startswith("S") and user in await self._directory.members(entry)

    async def listed(self, entries: list[str], user: str, email: str | None = None) -> bool:
        """Whether ``user`` is named by any of ``entries`` (user IDs, user groups, e-mail
        addresses), as roles are resolved; ``email`` is the user's own verified address."""
        for entry in entries:
            if email is not None and is_email(entry) and entry == email.lower():
                return True
            if await self._holds(entry, user):
                return True
        return False

    async def roles_of(self, user: str) -> frozenset[str]:
        held = set()
        for role in ROLE_NAMES:
            for entry in getattr(self._policy.roles, role):
                if await self._holds(entry, user):
                    held.add(role)
                    break
        return frozenset(held)

    async def unresolved_emails(self) -> list[str]:
        """Each e-mail address in the roles that names nobody now, with why, e.g.
        ``alice@acme.com is not a Slack user (users.lookupByEmail: users_not_found)``."""
        problems = []
        seen: set[str] = set()
        for role in ROLE_NAMES:
            for entry in getattr(self._policy.roles, role):
                if not is_email(entry) or entry in seen:
                    continue
                seen.add(entry)
                found = await self._directory.user_by_email(entry)
                if found.user is None:
                    what = "could not be looked up" if found.transient else "is not a Slack user"
                    problems.append(f"{entry} {what} ({found.error})")
        return problems
