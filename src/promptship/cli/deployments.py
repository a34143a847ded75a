"""The per-environment deployment file: export it, check a committed one (CI), apply it."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
import yaml
from rich.markup import escape

from promptship.cli.app import app
from promptship.cli.common import actor, emit, err, out, report, run_core, state
from promptship.cli.remote import Remote, ServerOption, TokenOption, run_remote
from promptship.domain.lifecycle import RunState
from promptship.domain.safe_load import load_yaml
from promptship.errors import BadInput
from promptship.services.views import ApplyChange, ApplyResult

if TYPE_CHECKING:  # the server extra's: imported where a local command uses it
    from promptship.services import Promptship


@app.command()
def export(
    output: Annotated[
        str, typer.Argument(help="File to write (or to compare with --check), or - for stdout.")
    ] = "deployment.yaml",
    check: Annotated[
        bool,
        typer.Option("--check", help="Compare the file with the live state; exit 1 if it differs."),
    ] = False,
    server: ServerOption = None,
    token: TokenOption = None,
) -> None:
    """Write the per-environment deployment file (version, model, who, when); with --check,
    fail when the committed file no longer matches what runs (for CI)."""

    data = (
        run_remote(server, token, lambda client: client.deployments())
        if server
        else run_core(lambda core: core.deployment_file())
    )
    text = yaml.safe_dump(data, sort_keys=False, allow_unicode=True)
    if check:
        path = Path(output)
        try:
            committed = load_yaml(path.read_text(encoding="utf-8"), output) or {}
        except OSError as exc:
            err.print(f"[bold red]error:[/] {escape(output)}: cannot read: {exc.strerror}")
            raise typer.Exit(2) from None
        except BadInput as exc:
            err.print(f"[bold red]error:[/] {escape(exc.message)}")
            raise typer.Exit(2) from None
        drift = _deployment_drift(committed, data)
        if state.as_json:
            print(json.dumps({"ok": not drift, "differences": drift}))
        elif drift:
            err.print(f"[bold red]{escape(output)} differs from the live state[/]:")
            for line in drift:
                err.print(f"  {escape(line)}")
            err.print(f"  run: promptship export {escape(output)}")
        else:
            out.print(f"{escape(output)} matches the live state")
        if drift:
            raise typer.Exit(1)
        return
    if output == "-":
        sys.stdout.write(text)
    else:
        Path(output).write_text(text, encoding="utf-8")
        if not state.as_json:
            count = f"{len(data)} prompt{'' if len(data) == 1 else 's'}"
            out.print(f"wrote {escape(output)} ({count})")


def _deployment_drift(committed: Any, live: dict[str, dict[str, dict[str, Any]]]) -> list[str]:
    """What differs between a deployment file and the live state, one line per place."""
    if not isinstance(committed, dict):
        return ["the file is not a mapping of prompts"]
    lines = []
    for name in sorted(set(committed) | set(live)):
        mine, theirs = committed.get(name) or {}, live.get(name) or {}
        if not isinstance(mine, dict):
            lines.append(f"{name}: not a mapping of environments")
            continue
        for env in sorted(set(mine) | set(theirs)):
            a, b = mine.get(env), theirs.get(env)
            if a is None and b is not None:
                lines.append(f"{name} {env}: live runs {b['prompt_version']}, the file has nothing")
            elif b is None and isinstance(a, dict):
                lines.append(
                    f"{name} {env}: the file says {a.get('prompt_version')}, nothing runs there"
                )
            elif not isinstance(a, dict) or b is None:
                lines.append(f"{name} {env}: not a mapping")
            else:
                for key in ("prompt_version", "content_hash", "model", "temperature", "max_tokens"):
                    if a.get(key) != b.get(key):
                        lines.append(
                            f"{name} {env}: {key} is {b.get(key)!r} live, {a.get(key)!r} in the file"
                        )
    return lines


@app.command()
def apply(
    file: Annotated[str, typer.Argument(help="The deployment file (what export writes).")],
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Print the plan; change nothing.")
    ] = False,
    no_wait: Annotated[
        bool, typer.Option("--no-wait", help="Queue staging tests and return; do not wait.")
    ] = False,
    server: ServerOption = None,
    token: TokenOption = None,
) -> None:
    """Make the file the desired state: dev moves at once, a newer staging version starts
    its promotion (tests run), a newer production version opens a request for approvers,
    an earlier or older version rolls back (on-call or approvers, deciding in person).
    Applying it again changes nothing. Exit 1 when a move was refused, 2 for a bad file."""
    try:
        content = Path(file).read_bytes()
    except OSError as exc:
        report(BadInput(f"{file}: cannot read: {exc.strerror}"))
        raise typer.Exit(2) from None

    async def local(core: Promptship) -> ApplyResult:
        result = await core.apply_deployments(content, file, actor(), dry_run=dry_run)
        if dry_run or no_wait:
            return result
        changes = [await _finish_tests(core, c) for c in result.changes]
        return result.model_copy(update={"changes": changes})

    async def remote(client: Remote) -> ApplyResult:
        return await client.apply(content, dry_run)

    result = run_remote(server, token, remote) if server else run_core(local)
    if not emit(result):
        _print_apply(result)
    if result.refused:
        raise typer.Exit(1)


async def _finish_tests(core: Promptship, change: ApplyChange) -> ApplyChange:
    """Here, as ``promote`` does: run a staging promotion's queued tests, then report how
    its request stands."""
    if change.action != "promote" or change.outcome != "opened" or change.request is None:
        return change
    from promptship.cli.promotions import wait_for_run

    latest = (await core.show(change.prompt, change.to_version)).latest_run
    if latest is not None and RunState(latest.state).active:
        await wait_for_run(core, latest.id)
    request = await core.request(int(change.request.removeprefix("req-")))
    if request.state == "promoted":
        return change.model_copy(update={"outcome": "done", "detail": None})
    if request.state != "open":
        why = request.close_reason or request.state
        return change.model_copy(update={"outcome": "refused", "detail": why})
    return change


def _print_apply(result: ApplyResult) -> None:
    if result.dry_run:
        out.print(f"plan for {escape(result.source)} (dry run: nothing changed)")
    for c in result.changes:
        was = c.from_version or "—"
        request = f" {c.request}" if c.request else ""
        line = f"{c.prompt} {c.environment}: {was} → {c.to_version}: {c.outcome}{request}"
        (err if c.outcome == "refused" else out).print(
            f"{'[bold red]' if c.outcome == 'refused' else ''}{escape(line)}"
            f"{'[/]' if c.outcome == 'refused' else ''} [dim](line {c.line}, {c.action})[/]"
        )
        if c.detail:
            (err if c.outcome == "refused" else out).print(f"  {escape(c.detail)}")
    if not result.changes:
        out.print(f"{escape(result.source)} names no environments")
