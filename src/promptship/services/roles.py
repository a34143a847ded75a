"""Who holds which role: policy lists of Slack user IDs and user-group IDs (``S...``)."""

from __future__ import annotations

from typing import Protocol

from promptship.config import Policy

ROLE_NAMES = ("approvers", "oncall", "stakeholders")


class GroupDirectory(Protocol):
    """Resolves a user group to its members. The Slack layer provides a live one."""

    async def members(self, group_id: str) -> frozenset[str]: ...


class StaticGroupDirectory:
    """Group membership from the policy file's ``groups:`` mapping (CLI, tests)."""

    def __init__(self, groups: dict[str, list[str]] | None = None) -> None:
        self._groups = {g: frozenset(users) for g, users in (groups or {}).items()}

    async def members(self, group_id: str) -> frozenset[str]:
        return self._groups.get(group_id, frozenset())


class RoleResolver:
    def __init__(self, policy: Policy, directory: GroupDirectory | None = None) -> None:
        self._policy = policy
        self._directory = directory or StaticGroupDirectory(policy.groups)

    async def roles_of(self, user: str) -> frozenset[str]:
        held = set()
        for role in ROLE_NAMES:
            for entry in getattr(self._policy.roles, role):
                if entry == user or (
                    entry.startswith("S") and user in await self._directory.members(entry)
                ):
                    held.add(role)
                    break
        return frozenset(held)
