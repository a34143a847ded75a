"""The registry: push prompt files, list prompts, show a version, diff two versions."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.markup import escape
from rich.syntax import Syntax

from promptship.cli.app import app
from promptship.cli.common import actor, emit, out, print_table, run_core, table, when
from promptship.cli.remote import Remote, ServerOption, TokenOption, run_remote
from promptship.domain.promptfile import find_prompt_files, load_prompt_file
from promptship.errors import BadInput
from promptship.services.views import PromptStatus

if TYPE_CHECKING:
    from promptship.services import Promptship


@app.command()
def push(
    paths: Annotated[list[Path], typer.Argument(help="Prompt files, or directories of them.")],
    server: ServerOption = None,
    token: TokenOption = None,
) -> None:
    """Register prompt versions. Pushing an identical version again is a no-op."""

    def checked() -> list[Path]:
        files = find_prompt_files(paths)
        if not files:
            raise BadInput("no prompt files (*.yaml, *.yml) found in " + ", ".join(map(str, paths)))
        for f in files:  # every file is checked before any push
            load_prompt_file(f)
        return files

    async def use(core: Promptship) -> list[Any]:
        files = checked()
        who = actor()
        return [await core.push(load_prompt_file(f), who) for f in files]

    async def remote(client: Remote) -> list[Any]:
        files = checked()
        return [await client.push(f.read_bytes(), prefix=f"{f}: ") for f in files]

    results = run_remote(server, token, remote) if server else run_core(use)
    if emit(results):
        return
    for result in results:
        verb = "[green]registered[/]" if result.created else "[dim]unchanged[/]"
        out.print(
            f"{verb} {result.name} {result.version} ({result.content_hash[:12]}, {result.status})"
        )


@app.command("list")
def list_prompts() -> None:
    """Every prompt with its latest version and what runs where."""

    async def use(core: Promptship) -> tuple[tuple[str, ...], list[PromptStatus]]:
        return core.policy.environments.names, await core.status()

    env_names, statuses = run_core(use)
    if emit(statuses):
        return
    grid = table("prompt", "latest", "versions", *env_names, "open requests")
    for s in statuses:
        envs = {d.environment: d.version for d in s.environments}
        grid.add_row(
            s.name,
            s.latest_version or "",
            str(s.versions),
            *(envs.get(name, "—") for name in env_names),
            ", ".join(r.code for r in s.open_requests),
        )
    if statuses:
        print_table(grid)
    else:
        out.print("no prompts yet: promptship push FILE")


@app.command()
def show(name: str, version: Annotated[str | None, typer.Argument()] = None) -> None:
    """A version's settings, system prompt, tests and latest run (default: the newest)."""
    detail = run_core(lambda core: core.show(name, version))
    if emit(detail):
        return
    out.print(
        f"[bold]{detail.name} {detail.version}[/]  [{detail.status}]  {detail.content_hash[:12]}"
    )
    out.print(
        f"model {detail.model} ({detail.provider}), temperature {detail.temperature}, "
        f"max_tokens {detail.max_tokens}; by {detail.author} at {when(detail.created_at)}"
    )
    if detail.environments:
        out.print("active in: " + ", ".join(detail.environments))
    if detail.latest_run:
        run = detail.latest_run
        rate = "" if run.pass_rate is None else f" pass rate {run.pass_rate:.0%}"
        out.print(
            f"latest run {run.id}: {run.state}{rate} ({run.passed} passed, {run.failed} failed, "
            f"{run.errored} errored)"
        )
    out.print("\n[bold]system prompt[/]")
    out.print(detail.system_prompt, markup=False)
    if detail.messages:
        out.print(f"\n[bold]messages[/] ({len(detail.messages)}, before the user's)")
        for turn in detail.messages:
            out.print(f"  [{turn['role']}] {turn['content']}", markup=False)
    if detail.variables:
        out.print("\n[bold]variables[/]")
        for name, default in sorted(detail.variables.items()):  # JSONB keeps no order
            shown = "required" if default is None else f"default {default!r}"
            out.print(f"  {name}: {shown}", markup=False)
    out.print(f"\n[bold]tests[/] ({len(detail.tests)})")
    for case in detail.tests:
        given = f" with {case['vars']!r}" if case.get("vars") else ""
        out.print(
            f"  {case['type']}: {case['input']!r}{given} → {case.get('expected')!r}", markup=False
        )


@app.command()
def diff(name: str, v1: str, v2: str) -> None:
    """What changed between two versions: settings, system prompt, tests."""
    result = run_core(lambda core: core.diff(name, v1, v2))
    if emit(result):
        return
    if result.identical:
        out.print(f"{name} {v1} and {v2} have the same content")
        return
    for change in result.settings:
        out.print(f"{change.key}: {change.old!r} → {change.new!r}", markup=False)
    if result.system_prompt_diff:
        out.print(
            Syntax(result.system_prompt_diff, "diff", theme="ansi_dark", background_color="default")
        )
    for case in result.tests_removed:
        out.print(f"[red]- test[/] {escape(case)}")
    for case in result.tests_added:
        out.print(f"[green]+ test[/] {escape(case)}")
