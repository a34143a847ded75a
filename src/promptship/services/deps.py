"""What the service functions need besides a session, handed in explicitly."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from promptship.clock import Clock
from promptship.domain.lifecycle import VersionStatus
from promptship.errors import BadInput

if TYPE_CHECKING:  # the settings need the server extra; request codes do not
    from promptship.config import Policy


@dataclass(frozen=True)
class Deps:
    clock: Clock
    policy: Policy

    def env_status(self, environment: str) -> VersionStatus:
        """The version status that being active in ``environment`` means."""
        envs = self.policy.environments
        if environment == envs.staging:
            return VersionStatus.STAGING
        if environment == envs.production:
            return VersionStatus.PRODUCTION
        if environment == envs.dev:
            return VersionStatus.DRAFT
        raise BadInput(
            f"unknown environment {environment!r}", hint=f"use one of: {', '.join(envs.names)}"
        )


def request_code(request_id: int) -> str:
    return f"req-{request_id}"


def parse_request_code(text: str) -> int:
    """Accept ``req-42``, ``req_42``, ``#42`` or ``42``."""
    raw = text.strip().lower().removeprefix("#")
    for prefix in ("req-", "req_", "req"):
        if raw.startswith(prefix):
            raw = raw[len(prefix) :]
            break
    if not (raw.isascii() and raw.isdigit()) or len(raw) > 12 or int(raw) <= 0:
        raise BadInput(f"not a request id: {text!r}", hint="request ids look like req-42")
    return int(raw)
