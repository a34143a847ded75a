"""The prompt registry: pushing versions and reading them back."""

from __future__ import annotations

from promptship.domain.identity import Actor
from promptship.domain.promptfile import PromptSpec
from promptship.errors import BadInput
from promptship.services import dev, queries, registry
from promptship.services.facade.base import UseCaseBase
from promptship.services.views import PushResult, VersionDetail, VersionDiff, VersionSummary


class RegistryUseCases(UseCaseBase):
    """Prompts and their versions."""

    async def push(self, spec: PromptSpec, actor: Actor) -> PushResult:
        """Register a version; with ``environments.dev.follow_latest``, a new newest version
        goes live in dev in the same transaction."""
        async with self.db.transaction() as session:
            result = await registry.push(session, self.deps, spec, self._acting(actor))
            if result.created:
                await dev.follow_latest(session, self.deps, spec.name, spec.version, actor)
            return result

    async def show(self, name: str, version: str | None = None) -> VersionDetail:
        async with self.db.reader() as session:
            if version is None:
                prompt = await registry.get_prompt(session, name)
                versions = await registry.versions_of(session, prompt.id)
                if not versions:
                    raise BadInput(f"{name} has no versions")
                version = versions[-1].version
            prompt, found = await registry.get_version(session, name, version)
            return await registry.detail(session, prompt, found)

    async def versions(self, name: str) -> list[VersionSummary]:
        async with self.db.reader() as session:
            return await queries.list_versions(session, name)

    async def diff(self, name: str, old: str, new: str) -> VersionDiff:
        async with self.db.reader() as session:
            _, a = await registry.get_version(session, name, old)
            _, b = await registry.get_version(session, name, new)
            return registry.diff(name, a, b)
