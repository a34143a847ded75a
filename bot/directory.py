"""The people behind the policy's roles, from Slack: user-group members
(``usergroups.users.list``) and the user with an e-mail address (``users.lookupByEmail``),
both cached."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

from slack_sdk.errors import SlackApiError
from slack_sdk.web.async_client import AsyncWebClient

from promptship.services.roles import EmailLookup

#: Slack's answers that mean "no such user" (cached like a found user); anything else
#: (rate limits, an outage) is transient
_NOBODY = frozenset({"users_not_found", "user_not_found", "account_inactive"})


class SlackGroupDirectory:
    """Resolves ``S...`` groups and e-mail addresses for the policy's roles.

    Groups (a Tier 2 method) are cached for ``ttl`` seconds. An address is looked up once per
    process and refreshed after ``email_ttl`` (``users.lookupByEmail`` is Tier 3 and people
    rarely change address), an unknown one after ``missing_ttl``; one lookup per address runs at a time, however many decisions
    arrive together. A transient failure serves the last good answer, or nobody (fail
    closed) for ``retry_after`` seconds before Slack is asked again.
    """

    def __init__(
        self,
        client: AsyncWebClient,
        ttl: float = 300.0,
        email_ttl: float = 6 * 3600.0,
        missing_ttl: float = 3600.0,
        retry_after: float = 60.0,
        now: Callable[[], float] = time.monotonic,
    ) -> None:
        self._client = client
        self._ttl = ttl
        self._email_ttl = email_ttl
        self._missing_ttl = missing_ttl
        self._retry_after = retry_after
        self._now = now
        self._cache: dict[str, tuple[float, frozenset[str]]] = {}
        #: address → (when to ask again, the answer)
        self._emails: dict[str, tuple[float, EmailLookup]] = {}
        self._email_locks: dict[str, asyncio.Lock] = {}

    async def members(self, group_id: str) -> frozenset[str]:
        cached = self._cache.get(group_id)
        now = self._now()
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

    async def user_by_email(self, email: str) -> EmailLookup:
        email = email.strip().lower()
        cached = self._emails.get(email)
        if cached and self._now() < cached[0]:
            return cached[1]
        lock = self._email_locks.setdefault(email, asyncio.Lock())
        async with lock:
            cached = self._emails.get(email)  # another caller may have just looked it up
            if cached and self._now() < cached[0]:
                return cached[1]
            found = await self._lookup(email, cached[1] if cached else None)
        return found

    async def _lookup(self, email: str, last: EmailLookup | None) -> EmailLookup:
        try:
            response = await self._client.users_lookupByEmail(email=email)
            user = (response.get("user") or {}).get("id")
            found = EmailLookup(str(user)) if user else EmailLookup(None, "no user ID in answer")
            self._emails[email] = (self._now() + self._email_ttl, found)
            return found
        except SlackApiError as exc:
            error = str(exc.response.get("error") or "unknown_error")
            if error in _NOBODY:
                answer = EmailLookup(None, f"users.lookupByEmail: {error}")
                self._emails[email] = (self._now() + self._missing_ttl, answer)
                return answer
            answer = EmailLookup(None, f"users.lookupByEmail: {error}", transient=True)
        except Exception as exc:  # the network: transient like a 5xx
            answer = EmailLookup(None, f"users.lookupByEmail: {type(exc).__name__}", transient=True)
        if last is not None and last.user is not None:
            answer = last  # Slack is unavailable: keep the last good answer
        self._emails[email] = (self._now() + self._retry_after, answer)
        return answer
