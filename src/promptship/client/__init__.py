"""The client apps use to run the live prompt, and to log the traffic soaks replay.

    from promptship.client import PromptClient

    prompts = PromptClient("https://promptship.internal", token="app-token")
    prompt = prompts.get("customer-support", "production")
    rendered = prompt.render(customer_name="Ada", plan="pro")
    answer = call_model(rendered.system, rendered.conversation(user_text))
    prompts.log_traffic(
        "customer-support", "production", user_text, answer,
        version=prompt.version, vars={"customer_name": "Ada", "plan": "pro"},
    )
    # or, when the version has no few-shot messages, the system text in one call:
    system = prompts.get_system_prompt("customer-support", "production", customer_name="Ada")

A version's ``system_prompt`` and ``messages`` are Jinja2 templates over the ``variables`` it
declares (name -> default; None: the app must pass it). ``render(**vars)`` fills them in the
same sandbox the validation runs and soaks use, so the app sends what was tested: variables
the version does not declare are ignored (pass the same superset to every version), and a
required one that is missing raises ``MissingVariable`` naming it. Log the vars with the
query (``log_traffic(..., vars=...)``) and a soak renders both versions with them.

``get`` answers from memory. The first call for a prompt fetches it and starts a watch: a
long-poll (``?wait=30`` with ``If-None-Match``) that the server answers the moment the
environment's pointer moves, so a promotion or a rollback reaches the app in about a second,
not after a cache TTL. If the watch cannot reach the server, the TTL takes over (a fetch
when the copy is older than ``ttl``), and the last good prompt keeps serving while the
server is down (stale-if-error, with a warning). ``log_traffic`` never blocks: samples are
queued and sent in batches of up to 1,000 in the background. ``AsyncPromptClient`` is the
same for asyncio apps.
"""

from __future__ import annotations

from promptship.client._async import AsyncPromptClient
from promptship.client._shared import BATCH, BATCH_BYTES, Prompt, PromptUnavailable, _by_size
from promptship.client._sync import PromptClient
from promptship.domain.template import MissingVariable, Rendered, RenderError

__all__ = [
    "BATCH",
    "BATCH_BYTES",
    "AsyncPromptClient",
    "MissingVariable",
    "Prompt",
    "PromptClient",
    "PromptUnavailable",
    "RenderError",
    "Rendered",
    "_by_size",
]
