"""What every part of the facade shares: the database, policy, clock, deps and roles."""

from __future__ import annotations

from promptship.clock import Clock, SystemClock
from promptship.config import Policy
from promptship.domain.identity import Actor
from promptship.errors import BadInput
from promptship.services.deps import Deps
from promptship.services.roles import GroupDirectory, RoleResolver
from promptship.store.db import Database


class UseCaseBase:
    """Bound to a database, a policy, a clock and a group directory; every facade mixin
    builds on it."""

    def __init__(
        self,
        db: Database,
        policy: Policy | None = None,
        clock: Clock | None = None,
        directory: GroupDirectory | None = None,
    ) -> None:
        self.db = db
        self.policy = policy or Policy()
        self.clock = clock or SystemClock()
        self.deps = Deps(clock=self.clock, policy=self.policy)
        self.roles = RoleResolver(self.policy, directory)

    @staticmethod
    def _acting(actor: Actor) -> Actor:
        """``actor``, refused with BadInput when it names nobody."""
        if not actor.id.strip():
            raise BadInput("who is acting? pass --as USER or set PROMPTSHIP_USER")
        return actor
