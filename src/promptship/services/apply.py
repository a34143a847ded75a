"""GitOps: a committed deployment file as the desired state.

:func:`plan` reads the file's entries against the store (read-only) and says, per prompt and
environment, what would bring it there: nothing; dev pointed at once; a staging promotion
(its tests run); a production request people approve; or a rollback, to an older version
that ran there before and was not rolled back itself (a newer one that ran there before is a
promotion, with its gates; a rolled-back one is refused). A rollback is a decision: it is planned only for an
authenticated person holding on-call or approvers (a service, such as CI, never rolls back;
the local CLI only under ``local_decisions``), and refused for anyone else with the command
a person can run instead. The facade performs the plan one move at a time, through the
same service calls as ``promote`` and ``rollback``; applying the same file twice changes
nothing the second time (an open request for the same move is waited on, not repeated; one
a person rejected or cancelled is reported ``refused``, not reopened: that takes a promote).
"""

from __future__ import annotations

import difflib
from collections.abc import Sequence
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from promptship.domain.deployfile import Desired, problem_list
from promptship.domain.identity import Actor
from promptship.domain.lifecycle import RequestKind, RequestState, VersionStatus
from promptship.domain.promptfile import semver_key
from promptship.errors import BadInput, Forbidden
from promptship.services import deployments, identities, registry, rollbacks
from promptship.services.deps import Deps, request_code
from promptship.services.roles import ROLLBACK_ROLES
from promptship.services.views import ApplyChange
from promptship.store.models import DeploymentHistory, PromotionRequest, Prompt, PromptVersion

#: a request closed so by a person is not reopened by applying the same file again
CLOSED_BY_A_PERSON = frozenset({RequestState.REJECTED.value, RequestState.CANCELLED.value})


async def plan(
    session: AsyncSession,
    deps: Deps,
    source: str,
    entries: Sequence[Desired],
    actor: Actor,
    roles: frozenset[str],
    *,
    may_decide: bool = True,
) -> list[ApplyChange]:
    """One change per entry, dev before staging before production within each prompt, each
    ``planned`` (or ``unchanged``, ``waiting``, ``refused``). BadInput naming every unknown
    prompt or version, and every pinned setting that is not the version's, with its line."""
    problems: list[str] = []
    found: list[tuple[Desired, Prompt, PromptVersion]] = []
    wanted = sorted({e.prompt for e in entries})
    prompts = {  # one query for every prompt the file names (at most MAX_PROMPTS)
        p.name: p
        for p in (await session.execute(select(Prompt).where(Prompt.name.in_(wanted)))).scalars()
    }
    names: list[str] | None = None  # every prompt's name, read once (for suggestions)
    for entry in entries:
        prompt = prompts.get(entry.prompt)
        if prompt is None:
            if names is None:
                names = list(
                    (await session.execute(select(Prompt.name).limit(10_000))).scalars().all()
                )
            problems.append(_unknown_prompt(names, source, entry))
            continue
        version = await _version(session, prompt, entry.version)
        if version is None:
            known = [v.version for v in await registry.versions_of(session, prompt.id)]
            problems.append(
                f"{source}: line {entry.version_line}: {entry.prompt} has no version "
                f"{entry.version} (its versions: {', '.join(known[-5:]) or 'none'})"
            )
            continue
        problems.extend(_pinned_problems(source, entry, version))
        found.append((entry, prompt, version))
    if problems:
        raise BadInput(problem_list(problems), hint="fix the file; nothing was changed")
    order = {name: i for i, name in enumerate(deps.policy.environments.names)}
    first_seen = {e.prompt: i for i, e in reversed(list(enumerate(entries)))}
    found.sort(key=lambda f: (first_seen[f[0].prompt], order[f[0].environment]))
    if not may_decide:
        roles = frozenset()  # the token does not decide, whatever its holder's roles
    return [await _change(session, deps, e, p, v, actor, roles) for e, p, v in found]


def _unknown_prompt(names: Sequence[str], source: str, entry: Desired) -> str:
    close = difflib.get_close_matches(entry.prompt, names, n=3)
    hint = f" (did you mean {', '.join(close)}?)" if close else " (push it first)"
    return f"{source}: line {entry.prompt_line}: no prompt named {entry.prompt!r}{hint}"


async def _version(session: AsyncSession, prompt: Prompt, version: str) -> PromptVersion | None:
    return (
        await session.execute(
            select(PromptVersion).where(
                PromptVersion.prompt_id == prompt.id, PromptVersion.version == version
            )
        )
    ).scalar_one_or_none()


def _pinned_problems(source: str, entry: Desired, version: PromptVersion) -> list[str]:
    problems = []
    for key, (given, line) in entry.pinned.items():
        actual: Any = getattr(version, key)
        same = (
            isinstance(given, int | float) and not isinstance(given, bool) and given == actual
            if key in ("temperature", "max_tokens")
            else given == actual
        )
        if not same:
            problems.append(
                f"{source}: line {line}: {entry.prompt}.{entry.environment}.{key} is "
                f"{given!r}, but {entry.prompt} {entry.version} has {actual!r}: a version's "
                "settings are part of it (push a new version to change them)"
            )
    return problems


async def _change(
    session: AsyncSession,
    deps: Deps,
    entry: Desired,
    prompt: Prompt,
    version: PromptVersion,
    actor: Actor,
    roles: frozenset[str],
) -> ApplyChange:
    envs = deps.policy.environments
    env = entry.environment
    current = await deployments.live_version(session, prompt.id, env)

    def change(action: str, outcome: str, detail: str | None = None, **kw: Any) -> ApplyChange:
        return ApplyChange(
            prompt=prompt.name,
            environment=env,
            line=entry.line,
            from_version=current.version if current else None,
            to_version=version.version,
            action=action,
            outcome=outcome,
            detail=detail,
            **kw,
        )

    if current is not None and current.id == version.id:
        return change("none", "unchanged", f"{env} runs {version.version}")
    if env == envs.dev:
        return change("point", "planned", f"point {env} at {version.version} at once")
    ran_there = await session.scalar(
        select(DeploymentHistory.id)
        .where(
            DeploymentHistory.prompt_id == prompt.id,
            DeploymentHistory.environment == env,
            DeploymentHistory.version_id == version.id,
        )
        .limit(1)
    )
    older = current is not None and semver_key(version.version) < semver_key(current.version)
    if ran_there is None and older:
        assert current is not None
        return change(
            "rollback",
            "refused",
            f"{version.version} is older than {current.version} and never ran in {env}, so "
            f"it is no rollback target (push a newer version to move {env} forward)",
        )
    not_target = None
    if ran_there is not None and current is not None:
        replaced = await rollbacks.breakglass_replaced_in(session, prompt.id, env, current)
        not_target = rollbacks.target_refusal(
            env, current, version, breakglass_replaced=version.id == replaced
        )
    if not_target is not None and version.status in (
        VersionStatus.REVERTED.value,
        VersionStatus.ARCHIVED.value,
    ):  # no request can bring it back either
        return change("rollback", "refused", f"{not_target}; push a fixed version to move {env} on")
    if ran_there is not None and not_target is None:
        refusal = _rollback_refusal(deps, actor, roles, prompt.name, env, version.version)
        if refusal is not None:
            return change("rollback", "refused", refusal)
        return change("rollback", "planned", f"roll {env} back to {version.version}")
    action = "request" if env == envs.production else "promote"
    newest = await session.scalar(
        select(PromotionRequest)
        .where(
            PromotionRequest.version_id == version.id,
            PromotionRequest.environment == env,
            PromotionRequest.kind == RequestKind.NORMAL.value,
        )
        .order_by(PromotionRequest.id.desc())
        .limit(1)
    )
    if newest is not None and newest.state == RequestState.OPEN.value:
        code = request_code(newest.id)
        return change(action, "waiting", f"{code} is open and waits on its gates", request=code)
    if newest is not None and newest.state in CLOSED_BY_A_PERSON:
        # a person said no: the same file applied again must not reopen it and ping anyone
        code = request_code(newest.id)
        by = f" by {newest.closed_by}" if newest.closed_by else ""
        why = f": {newest.close_reason}" if newest.close_reason else ""
        return change(
            action,
            "refused",
            f"{code} for {version.version} was {newest.state}{by}{why}; to ask again, "
            f"promote it explicitly: promptship promote {prompt.name} {version.version} {env}",
            request=code,
        )
    what = (
        "open a promotion request for approvers"
        if action == "request"
        else f"promote to {env} (its tests run first)"
    )
    return change(action, "planned", what)


def _rollback_refusal(
    deps: Deps, actor: Actor, roles: frozenset[str], name: str, env: str, version: str
) -> str | None:
    """Why ``actor`` may not roll ``env`` back from a deployment file, or None: a rollback is
    a decision, made by an authenticated person with on-call or approver rights."""
    instead = f"/prompt rollback {name} {env} {version}"
    if actor.proxy:
        return (
            f"no one decides on behalf of {actor.id} ({actor.proxy} acts for them); "
            f"{actor.id} can, in Slack: {instead}"
        )
    try:
        identities.check_decider(deps.policy, actor, f"roll back {env}")
    except Forbidden as exc:
        return f"{exc.message}; a person on-call or an approver can: {instead}"
    if not roles & ROLLBACK_ROLES:
        return (
            f"only on-call or approvers can roll back {env}, with a deciding token or in Slack "
            f"({actor.id} here is neither); one of them can: {instead}"
        )
    return None
