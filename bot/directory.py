"""User-group membership from Slack (``usergroups.users.list``), cached."""

from __future__ import annotations

import time

from slack_sdk.errors import SlackApiError
from slack_sdk.web.async_client import AsyncWebClient


class SlackGroupDirectory:
    """Resolves ``S...`` groups for the policy's roles; Tier 2 method, so members are cached."""

    def __init__(self, client: AsyncWebClient, ttl: float = 300.0) -> None:
        self._client = client
        self._ttl = ttl
        self._cache: dict[str, tuple[float, frozenset[str]]] = {}

    async def members(self, group_id: str) -> frozenset[str]:
        cached = self._cache.get(group_id)
        now = time.monotonic()
        if cached and now - cached[0] < self._ttl:
            return cached[1]
        try:
            response = await self._client.usergroups_users_list(usergroup=group_id)
            users = frozenset(response.get("users") or [])
        except SlackApiError:
            # fail closed: nobody holds a role through a group we cannot read,
            # but keep serving the last good answer while Slack is unavailable
            return cached[1] if cached else frozenset()
        self._cache[group_id] = (now, users)
        return users
