"""Clearing a request held back by regressions: an approver accepts them with a reason, or
the requester (or an approver) runs the tests again — from Slack, the API or the CLI.

Re-running is no decision (a new run must pass the same gates), so the requester may ask
for it too; anyone else is refused, so a request's gate is not churned by bystanders. A
request's tests run again at most ``MAX_RERUNS`` times: past that, the version needs a fix.
"""

from __future__ import annotations

from sqlalchemy.ext.asyncio import AsyncSession

from promptship.domain.identity import Actor
from promptship.domain.lifecycle import RequestKind
from promptship.errors import BadInput, Conflict, Forbidden, GateRefused
from promptship.services import evidence, findings, gates, identities, requests, runs
from promptship.services.deps import Deps, request_code
from promptship.services.views import RequestView
from promptship.store.models import PromotionRequest, Prompt, PromptVersion


async def _open_request(
    session: AsyncSession, deps: Deps, request_id: int, content_hash: str | None
) -> tuple[Prompt, PromptVersion, PromotionRequest]:
    prompt, version, request = await requests.load_request(session, request_id)
    if content_hash is not None and not request.content_hash.startswith(content_hash or "-"):
        raise Conflict(
            f"{request_code(request.id)} is for other content than the message you clicked showed",
            hint=f"see /prompt show {prompt.name} {version.version}",
        )
    await requests.ensure_open(session, deps, prompt, version, request)
    return prompt, version, request


async def override(
    session: AsyncSession,
    deps: Deps,
    request_id: int,
    reason: str,
    actor: Actor,
    roles: frozenset[str],
    content_hash: str | None = None,
    run_id: int | None = None,
) -> RequestView:
    """Accept the regressions holding the request, with a recorded reason (an authenticated
    approver's decision); the request promotes at once when nothing else holds it.

    The override binds to the run the approver saw: ``run_id`` (the message's
    ``evidence.tests.run_id``) must still be the version's latest run, or it is refused
    (Conflict), so regressions of a later re-run are never accepted unseen. It may be left
    out only while the version has a single finished run (nothing to confuse it with)."""
    code = request_code(request_id)
    findings.check_override(deps, actor, roles, f"{code}")
    if not reason.strip():
        raise BadInput("overriding regressions needs a reason")
    # load_request takes the prompt lock: no run can be recorded between check and override
    prompt, version, request = await _open_request(session, deps, request_id, content_hash)
    run = await findings.run_to_override(
        session,
        prompt,
        version,
        run_id,
        code,
        "the message you answered",
        "the request's evidence.tests.run_id",
    )
    await findings.accept_regressions(session, deps, prompt, version, reason, actor, run)
    return await gates.view(session, deps, request, prompt, version)


async def rerun_tests(
    session: AsyncSession,
    deps: Deps,
    request_id: int,
    actor: Actor,
    roles: frozenset[str],
    content_hash: str | None = None,
) -> RequestView:
    """Queue a fresh run of the version's suite for a request whose gate reads the tests;
    the request waits for it and is judged on its result. At most ``MAX_RERUNS`` times per
    request: a version that keeps failing needs a fixed version, not another run."""
    prompt, version, request = await _open_request(session, deps, request_id, content_hash)
    code = request_code(request.id)
    requester = identities.person_of(deps.policy, request.requester)
    if identities.person_of(deps.policy, actor.id) != requester and "approvers" not in roles:
        raise Forbidden(
            f"only the requester or an approver can re-run the tests of {code}",
            hint=f"anyone with write access can run them outside the request: "
            f"/prompt test {prompt.name} {version.version}",
        )
    tested = request.environment == deps.policy.environments.staging or (
        request.kind == RequestKind.BREAKGLASS
    )
    if not tested:
        raise BadInput(
            f"{code} does not wait on tests: {request.environment} is gated by "
            "approvals and the staging soak",
            hint=f"/prompt test {prompt.name} {version.version} runs them anyway",
        )
    done = await evidence.reruns_of(session, request.id)
    if done >= evidence.MAX_RERUNS:
        raise GateRefused(
            f"the tests of {code} were run {1 + done} times, the most a request allows "
            f"(its first run and {evidence.MAX_RERUNS} re-runs)",
            hint=f"push a fixed version of {prompt.name} and promote it, or an approver "
            "overrides the regressions with a reason",
        )
    await runs.start_run(
        session,
        deps,
        prompt.name,
        version.version,
        actor,
        queued=True,
    )
    await identities.record(
        session,
        deps.clock,
        actor,
        action=evidence.RERUN_ACTION,
        prompt=prompt.name,
        version=version.version,
        environment=request.environment,
        request_id=request.id,
        details={"rerun": done + 1, "max_reruns": evidence.MAX_RERUNS},
    )
    await session.refresh(version)
    view = await gates.view(session, deps, request, prompt, version)
    await requests.notify(session, deps, "request.updated", view)
    return view
