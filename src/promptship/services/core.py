"""``Promptship``: the use cases, each in one transaction. Slack, CLI and API call these.

The methods live in :mod:`promptship.services.facade`, one module per noun; this class
composes them so callers see one object.
"""

from __future__ import annotations

from promptship.services.facade.audit import AuditUseCases
from promptship.services.facade.gitops import GitOpsUseCases
from promptship.services.facade.identity import IdentityUseCases
from promptship.services.facade.notifications import NotificationUseCases
from promptship.services.facade.promotions import PromotionUseCases
from promptship.services.facade.queries import QueryUseCases
from promptship.services.facade.registry import RegistryUseCases
from promptship.services.facade.runs import RunUseCases


class Promptship(
    IdentityUseCases,
    RunUseCases,  # before RegistryUseCases, which it builds on
    RegistryUseCases,
    GitOpsUseCases,  # before PromotionUseCases, which it builds on
    PromotionUseCases,
    NotificationUseCases,
    QueryUseCases,
    AuditUseCases,
):
    """The core, bound to a database, a policy, a clock and a group directory
    (``Promptship(db, policy=None, clock=None, directory=None)``)."""
