"""Prompts and their immutable versions: register, look up, show, diff."""

from __future__ import annotations

import difflib
import json
from typing import Any

from sqlalchemy import select
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.ext.asyncio import AsyncSession

from promptship.domain import linediff
from promptship.domain.identity import Actor
from promptship.domain.lifecycle import VersionStatus
from promptship.domain.promptfile import (
    PromptSpec,
    case_identity,
    check_name,
    check_version,
    content_hash,
    semver_key,
)
from promptship.domain.template import template_text
from promptship.errors import Conflict, NotFound
from promptship.services import identities
from promptship.services.deps import Deps
from promptship.services.views import (
    PushResult,
    RunView,
    SettingChange,
    VersionDetail,
    VersionDiff,
    VersionSummary,
)
from promptship.store.models import Deployment, Prompt, PromptVersion, ValidationRun


def dialect_insert(session: AsyncSession) -> Any:
    """The INSERT construct of the session's dialect, for ``on_conflict_do_nothing``."""
    return pg_insert if session.get_bind().dialect.name == "postgresql" else sqlite_insert


async def find_prompt(session: AsyncSession, name: str) -> Prompt | None:
    return (await session.execute(select(Prompt).where(Prompt.name == name))).scalar_one_or_none()


async def get_prompt(session: AsyncSession, name: str) -> Prompt:
    check_name(name)
    prompt = await find_prompt(session, name)
    if prompt is None:
        names = (await session.execute(select(Prompt.name).limit(10_000))).scalars().all()
        close = difflib.get_close_matches(name, names, n=3)
        hint = (
            f"did you mean {', '.join(close)}?" if close else "push it first: promptship push FILE"
        )
        raise NotFound(f"no prompt named {name!r}", hint=hint)
    return prompt


async def lock_prompt(session: AsyncSession, prompt_id: int) -> Prompt:
    """Lock the prompt's row: every state change of a prompt's versions holds this lock."""
    return (
        await session.execute(
            select(Prompt)
            .where(Prompt.id == prompt_id)
            .with_for_update()
            .execution_options(populate_existing=True)
        )
    ).scalar_one()


async def versions_of(session: AsyncSession, prompt_id: int) -> list[PromptVersion]:
    rows = (
        (await session.execute(select(PromptVersion).where(PromptVersion.prompt_id == prompt_id)))
        .scalars()
        .all()
    )
    return sorted(rows, key=lambda v: semver_key(v.version))


async def get_version(
    session: AsyncSession, name: str, version: str
) -> tuple[Prompt, PromptVersion]:
    prompt = await get_prompt(session, name)
    check_version(version)
    found = (
        await session.execute(
            select(PromptVersion).where(
                PromptVersion.prompt_id == prompt.id, PromptVersion.version == version
            )
        )
    ).scalar_one_or_none()
    if found is None:
        known = [v.version for v in await versions_of(session, prompt.id)]
        hint = f"its versions: {', '.join(known[-5:])}" if known else "it has no versions yet"
        raise NotFound(f"{name} has no version {version}", hint=hint)
    return prompt, found


async def get_prompt_by_id(session: AsyncSession, prompt_id: int) -> Prompt:
    return (await session.execute(select(Prompt).where(Prompt.id == prompt_id))).scalar_one()


async def get_version_by_id(session: AsyncSession, version_id: int) -> PromptVersion:
    return (
        await session.execute(select(PromptVersion).where(PromptVersion.id == version_id))
    ).scalar_one()


async def push(session: AsyncSession, deps: Deps, spec: PromptSpec, actor: Actor) -> PushResult:
    """Register a version. Identical content again is a no-op; other content is refused."""
    now = deps.clock.now()
    # a service pushing for a person (github:alice) makes that person the author
    author = identities.person_of(deps.policy, actor.id)
    insert = dialect_insert(session)
    await session.execute(
        insert(Prompt)
        .values(name=spec.name, created_at=now, created_by=author)
        .on_conflict_do_nothing(index_elements=["name"])
    )
    prompt = await get_prompt(session, spec.name)
    digest = spec.content_hash
    content = spec.content()
    result = await session.execute(
        insert(PromptVersion)
        .values(
            prompt_id=prompt.id,
            version=spec.version,
            status=VersionStatus.DRAFT.value,
            content_hash=digest,
            author=author,
            pushed_by=actor.proxy,
            created_at=now,
            model=spec.model,
            provider=spec.provider.value,
            temperature=spec.temperature,
            max_tokens=spec.max_tokens,
            system_prompt=spec.system_prompt,
            content=content,
        )
        .on_conflict_do_nothing(index_elements=["prompt_id", "version"])
    )
    _, version = await get_version(session, spec.name, spec.version)
    if result.rowcount == 0:  # type: ignore[attr-defined]
        if version.content_hash != digest:
            raise Conflict(
                f"{spec.name} {spec.version} is already registered with other content "
                f"(stored {version.content_hash[:12]}, pushed {digest[:12]})",
                hint="versions are immutable: bump the version number",
            )
        return PushResult(
            name=spec.name,
            version=spec.version,
            content_hash=digest,
            created=False,
            status=version.status,
        )
    await identities.record(
        session,
        deps.clock,
        actor,
        action="version.registered",
        prompt=spec.name,
        version=spec.version,
        # the author rule reads these from here: no hash covers the row's author columns
        details={
            "content_hash": digest,
            "model": spec.model,
            "tests": len(spec.tests),
            "author": author,
        },
    )
    return PushResult(
        name=spec.name,
        version=spec.version,
        content_hash=digest,
        created=True,
        status=version.status,
    )


def served_content_hash(version: PromptVersion) -> str:
    """The content hash of what the version's row would serve now, computed as push
    computes it: equal to ``content_hash`` unless the row was edited after push."""
    return content_hash(
        {
            **version.content,
            "model": version.model,
            "provider": version.provider,
            "temperature": version.temperature,
            "max_tokens": version.max_tokens,
            "system_prompt": version.system_prompt,
        }
    )


def summary(prompt: Prompt, version: PromptVersion) -> VersionSummary:
    return VersionSummary(
        name=prompt.name,
        version=version.version,
        status=version.status,
        content_hash=version.content_hash,
        author=version.author,
        created_at=version.created_at,
    )


def run_view(run: ValidationRun) -> RunView:
    return RunView(
        id=run.id,
        state=run.state,
        total=run.total,
        passed=run.passed,
        failed=run.failed,
        errored=run.errored,
        pass_rate=run.pass_rate,
        started_at=run.started_at,
        finished_at=run.finished_at,
        regressions=list(run.regressions),
        regression_override=run.regression_override,
        error=run.error,
        notes=list(run.notes or []),
    )


async def latest_run(session: AsyncSession, version: PromptVersion) -> ValidationRun | None:
    """The newest validation run of exactly this version's content."""
    return (
        await session.execute(
            select(ValidationRun)
            .where(
                ValidationRun.version_id == version.id,
                ValidationRun.content_hash == version.content_hash,
            )
            .order_by(ValidationRun.id.desc())
            .limit(1)
        )
    ).scalar_one_or_none()


async def detail(session: AsyncSession, prompt: Prompt, version: PromptVersion) -> VersionDetail:
    envs = (
        (
            await session.execute(
                select(Deployment.environment).where(Deployment.version_id == version.id)
            )
        )
        .scalars()
        .all()
    )
    run = await latest_run(session, version)
    return VersionDetail(
        **summary(prompt, version).model_dump(),
        model=version.model,
        provider=version.provider,
        temperature=version.temperature,
        max_tokens=version.max_tokens,
        system_prompt=version.system_prompt,
        description=version.content.get("description"),
        tests=list(version.content.get("tests", [])),
        environments=sorted(envs),
        variables=dict(version.content.get("variables") or {}),
        messages=list(version.content.get("messages") or []),
        latest_run=run_view(run) if run else None,
    )


_SETTINGS = ("model", "provider", "temperature", "max_tokens", "description")


def reviewed_text(version: PromptVersion) -> str:
    """What a reviewer reads of a version's prompt: the system template, then its few-shot
    turns and its variables when it has them, as lines a diff can compare."""
    return template_text(
        version.system_prompt, version.content.get("messages"), version.content.get("variables")
    )


def _case_label(case: dict[str, Any]) -> str:
    given = f" with vars {json.dumps(case['vars'], ensure_ascii=False)}" if case.get("vars") else ""
    bar = f" (threshold {case['threshold']:g})" if case.get("threshold") is not None else ""
    return f"{case.get('type')}: {case.get('input')!r}{given} → {case.get('expected')!r}{bar}"


def diff(name: str, old: PromptVersion, new: PromptVersion) -> VersionDiff:
    """Settings changes, a unified diff of the system prompts, and the tests added/removed."""
    settings = [
        SettingChange(key=key, old=old.content.get(key), new=new.content.get(key))
        for key in _SETTINGS
        if old.content.get(key) != new.content.get(key)
    ]
    text = "".join(
        linediff.unified(  # bounded: difflib's own diff is cubic on repeated lines
            reviewed_text(old).splitlines(),
            reviewed_text(new).splitlines(),
            fromfile=f"{name} {old.version}",
            tofile=f"{name} {new.version}",
        )
    )
    if text and not text.endswith("\n"):
        text += "\n"
    old_cases = {case_identity(c): c for c in old.content.get("tests", [])}
    new_cases = {case_identity(c): c for c in new.content.get("tests", [])}
    return VersionDiff(
        name=name,
        old_version=old.version,
        new_version=new.version,
        settings=settings,
        system_prompt_diff=text,
        tests_added=[_case_label(c) for k, c in new_cases.items() if k not in old_cases],
        tests_removed=[_case_label(c) for k, c in old_cases.items() if k not in new_cases],
    )
