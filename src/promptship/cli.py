"""The ``promptship`` command line: the same services as Slack and the API.

Exit codes: 0 ok, 1 refused (a gate, a permission, a closed request), 2 bad input
(a bad file or argument, an unknown name, a conflict). ``--json`` prints machine-readable
output for scripts.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
from collections.abc import Awaitable, Callable, Coroutine
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, TypeVar

import httpx
import typer
import yaml
from pydantic import BaseModel
from rich.console import Console
from rich.markup import escape
from rich.syntax import Syntax
from rich.table import Table

from promptship.config import Settings
from promptship.domain.promptfile import find_prompt_files, load_prompt_file
from promptship.errors import BadInput, PromptshipError
from promptship.services import Promptship
from promptship.services.deps import parse_request_code
from promptship.services.views import PromptStatus, RequestView, RunDetail
from promptship.store.db import Database

if TYPE_CHECKING:
    from promptship.validation.runner import Progress as RunProgress
    from promptship.validation.runner import SuiteRunner

T = TypeVar("T")

app = typer.Typer(
    name="promptship",
    help="Ship LLM prompts like software: dev → staging → production, with gates, approvals and rollback.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
db_app = typer.Typer(help="Database schema.", no_args_is_help=True)
audit_app = typer.Typer(help="The hash-chained audit log.", no_args_is_help=True)
app.add_typer(db_app, name="db")
app.add_typer(audit_app, name="audit")
traffic_app = typer.Typer(help="Real queries for soaks to replay.", no_args_is_help=True)
app.add_typer(traffic_app, name="traffic")

out = Console(highlight=False, soft_wrap=True)
err = Console(stderr=True, highlight=False, soft_wrap=True)


class State:
    actor: str | None = None
    as_json: bool = False
    settings: Settings | None = None


state = State()

AsOption = Annotated[
    str | None,
    typer.Option(
        "--as", help="Acting user (a Slack user ID such as U01); default $PROMPTSHIP_USER."
    ),
]


@app.callback()
def main_options(
    as_user: AsOption = None,
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable JSON output.")] = False,
) -> None:
    state.actor = as_user
    state.as_json = as_json


def _settings() -> Settings:
    if state.settings is None:
        state.settings = Settings()
    return state.settings


async def _open_core() -> Promptship:
    settings = _settings()
    policy = settings.policy()
    db = Database(settings.database_url)
    if not await db.is_up_to_date():
        if db.is_sqlite:
            await db.upgrade()  # the embedded database keeps itself current
        else:
            await db.dispose()
            raise BadInput(
                "the database schema is not up to date", hint="run: promptship db upgrade"
            )
    return Promptship(db, policy)


def _run(use: Callable[[Promptship], Coroutine[Any, Any, T]]) -> T:
    """Open the core, run one use case, close, and render errors once."""

    async def go() -> T:
        core = await _open_core()
        try:
            return await use(core)
        finally:
            await core.db.dispose()

    return _guard(go)


def _guard(make: Callable[[], Awaitable[T]]) -> T:
    try:
        return asyncio.run(make())  # type: ignore[arg-type]
    except PromptshipError as exc:
        if state.as_json:
            print(json.dumps({"error": exc.kind, "message": exc.message, "hint": exc.hint}))
        else:
            err.print(f"[bold red]error:[/] {escape(exc.message)}")
            if exc.hint:
                err.print(f"  {escape(exc.hint)}")
        raise typer.Exit(exc.exit_code) from None


def _actor() -> str:
    actor = state.actor or _settings().user
    if not actor:
        raise BadInput("who is acting? pass --as USER or set PROMPTSHIP_USER")
    return actor


def _emit(value: Any) -> bool:
    """Print JSON when asked; return True if done."""
    if not state.as_json:
        return False
    if isinstance(value, BaseModel):
        print(value.model_dump_json(indent=2))
    elif isinstance(value, list):
        print(
            json.dumps(
                [v.model_dump(mode="json") if isinstance(v, BaseModel) else v for v in value],
                indent=2,
            )
        )
    else:
        print(json.dumps(value, indent=2, default=str))
    return True


def _when(at: datetime | None) -> str:
    return "" if at is None else at.strftime("%Y-%m-%d %H:%M")


def _mark(state_: str) -> str:
    return {"passed": "[green]✓[/]", "waiting": "[yellow]…[/]", "failed": "[red]✗[/]"}.get(
        state_, "?"
    )


def _print_request(request: RequestView) -> None:
    out.print(
        f"[bold]{request.code}[/] {request.prompt} {request.version} → {request.environment}"
        f" ({request.kind}): [bold]{request.state}[/]"
    )
    for check in request.checks:
        out.print(f"  {_mark(check.state)} {check.gate}: {escape(check.detail)}")
    if request.close_reason:
        out.print(f"  reason: {escape(request.close_reason)}")


def _parse_code(text: str) -> int:
    try:
        return parse_request_code(text)
    except BadInput as exc:
        err.print(f"[bold red]error:[/] {escape(exc.message)}")
        if exc.hint:
            err.print(f"  {escape(exc.hint)}")
        raise typer.Exit(2) from None


# -- registry -----------------------------------------------------------------------------


@app.command()
def push(
    paths: Annotated[list[Path], typer.Argument(help="Prompt files, or directories of them.")],
    as_user: AsOption = None,
    server: Annotated[
        str | None,
        typer.Option(envvar="PROMPTSHIP_SERVER", help="Push through this server's API (CI)."),
    ] = None,
    token: Annotated[
        str | None,
        typer.Option(envvar="PROMPTSHIP_TOKEN", help="Bearer token (write) for --server."),
    ] = None,
) -> None:
    """Register prompt versions. Pushing an identical version again is a no-op."""
    if as_user:
        state.actor = as_user

    def checked() -> list[Path]:
        files = find_prompt_files(paths)
        if not files:
            raise BadInput("no prompt files (*.yaml, *.yml) found in " + ", ".join(map(str, paths)))
        for f in files:  # every file is checked before any push
            load_prompt_file(f)
        return files

    async def use(core: Promptship) -> list[Any]:
        files = checked()
        actor = _actor()
        return [await core.push(load_prompt_file(f), actor) for f in files]

    async def remote() -> list[Any]:
        from promptship.services.views import PushResult

        files = checked()
        actor = _actor()
        headers = {"Content-Type": "application/yaml", "X-Promptship-User": actor}
        if token:
            headers["Authorization"] = f"Bearer {token}"
        results = []
        async with httpx.AsyncClient(base_url=(server or "").rstrip("/"), timeout=60) as http:
            for f in files:
                try:
                    response = await http.post(
                        "/v1/prompts", content=f.read_bytes(), headers=headers
                    )
                except httpx.HTTPError as exc:
                    raise BadInput(f"cannot reach {server}: {exc}") from None
                if response.status_code not in (200, 201):
                    try:
                        detail = response.json().get("detail", response.text)
                    except ValueError:
                        detail = response.text
                    raise BadInput(f"{f}: the server refused it ({response.status_code}): {detail}")
                results.append(PushResult.model_validate(response.json()))
        return results

    results = _guard(remote) if server else _run(use)
    if _emit(results):
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
        return core.policy.environments.names[1:], await core.status()

    env_names, statuses = _run(use)
    if _emit(statuses):
        return
    table = Table("prompt", "latest", "versions", *env_names, "open requests")
    for s in statuses:
        envs = {d.environment: d.version for d in s.environments}
        table.add_row(
            s.name,
            s.latest_version or "",
            str(s.versions),
            *(envs.get(name, "—") for name in env_names),
            ", ".join(r.code for r in s.open_requests),
        )
    out.print(table if statuses else "no prompts yet: promptship push FILE")


@app.command()
def show(name: str, version: Annotated[str | None, typer.Argument()] = None) -> None:
    """A version's settings, system prompt, tests and latest run (default: the newest)."""
    detail = _run(lambda core: core.show(name, version))
    if _emit(detail):
        return
    out.print(
        f"[bold]{detail.name} {detail.version}[/]  [{detail.status}]  {detail.content_hash[:12]}"
    )
    out.print(
        f"model {detail.model} ({detail.provider}), temperature {detail.temperature}, "
        f"max_tokens {detail.max_tokens}; by {detail.author} at {_when(detail.created_at)}"
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
    out.print(f"\n[bold]tests[/] ({len(detail.tests)})")
    for case in detail.tests:
        out.print(f"  {case['type']}: {case['input']!r} → {case['expected']!r}", markup=False)


@app.command()
def diff(name: str, v1: str, v2: str) -> None:
    """What changed between two versions: settings, system prompt, tests."""
    result = _run(lambda core: core.diff(name, v1, v2))
    if _emit(result):
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


# -- promotions ---------------------------------------------------------------------------


@app.command()
def promote(
    name: str,
    version: str,
    env: str,
    reason: Annotated[str | None, typer.Option(help="Why (recorded in the audit log).")] = None,
    override_regressions: Annotated[
        str | None,
        typer.Option(help="Accept the listed regressions, with this reason (audited)."),
    ] = None,
    as_user: AsOption = None,
) -> None:
    """Request a promotion; it happens the moment every gate passes.

    Promoting to staging runs the version's tests first when no passing run exists.
    """
    if as_user:
        state.actor = as_user

    async def use(core: Promptship) -> RequestView:
        actor = _actor()
        if override_regressions:
            await core.override_regressions(name, version, override_regressions, actor)
        request = await core.request_promotion(name, version, env, actor, reason, queue_tests=True)
        latest = (await core.show(name, version)).latest_run
        if request.state == "open" and latest is not None and latest.state == "queued":
            await _execute_run(core, latest.id, claim=True)
            request = await core.request(request.id)
        return request

    request = _run(use)
    if not _emit(request):
        _print_request(request)
    if request.state not in ("open", "promoted"):
        raise typer.Exit(1)


async def _execute_run(core: Promptship, run_id: int, *, claim: bool = False) -> RunDetail:
    """Claim a queued run and execute it in this process, with a live progress bar."""
    from promptship.validation.runner import SuiteRunner

    runner = SuiteRunner(core)
    if claim and await core.claim_validation_run(runner.owner, run_id) is None:
        raise BadInput(f"validation run {run_id} was taken by another worker")
    return await _execute_run_with(core, runner, run_id)


async def _execute_run_with(core: Promptship, runner: SuiteRunner, run_id: int) -> RunDetail:
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    columns = (
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn(
            "[green]{task.fields[passed]} passed[/] [red]{task.fields[failed]} failed[/] "
            "[yellow]{task.fields[errored]} errored[/]"
        ),
        TimeElapsedColumn(),
        TextColumn("ETA"),
        TimeRemainingColumn(),
    )
    with Progress(*columns, console=err, transient=state.as_json, disable=state.as_json) as bar:
        task = bar.add_task("testing", total=None, passed=0, failed=0, errored=0)

        def show(p: RunProgress) -> None:
            bar.update(
                task,
                total=p.total,
                completed=p.done,
                passed=p.passed,
                failed=p.failed,
                errored=p.errored,
            )

        await runner.execute(run_id, on_progress=show)
    return await core.validation_run(run_id)


@app.command()
def test(
    name: str,
    version: str,
    concurrency: Annotated[int, typer.Option(min=1, max=256, help="Cases in flight.")] = 8,
    timeout: Annotated[float, typer.Option(min=1, help="Seconds per model call.")] = 60.0,
    as_user: AsOption = None,
) -> None:
    """Run a version's suite against its model; exit 1 when the staging gate would refuse."""
    from promptship.validation.runner import RunnerSettings, SuiteRunner

    if as_user:
        state.actor = as_user

    async def use(core: Promptship) -> tuple[RunDetail, float]:
        runner = SuiteRunner(
            core, settings=RunnerSettings(concurrency=concurrency, timeout=timeout)
        )
        run_id = await runner.start(name, version, _actor())
        runner_run = await _execute_run_with(core, runner, run_id)
        return runner_run, core.policy.environments.staging_policy.min_pass_rate

    run, minimum = _run(use)
    gate_ok = run.state == "passed" and (not run.regressions or bool(run.regression_override))
    if not _emit(run):
        _print_run(run, minimum)
    if not gate_ok:
        raise typer.Exit(1)


def _print_run(run: RunDetail, minimum: float) -> None:
    if run.error:
        err.print(f"[bold red]run failed:[/] {escape(run.error)}")
    failures = [r for r in run.results if not r.get("passed") or r.get("error")]
    if failures:
        table = Table(
            "#", "type", "input", "expected", "got / why", title=f"{len(failures)} not passed"
        )
        for i, r in enumerate(failures[:25], 1):
            why = r.get("error") or r.get("detail") or ""
            got = r.get("got") or ""
            table.add_row(
                str(i),
                "[yellow]errored[/]" if r.get("error") else str(r.get("type")),
                escape(str(r.get("input"))[:80]),
                escape(str(r.get("expected"))[:60]),
                escape((f"{got[:80]!r} — " if got else "") + str(why)),
            )
        out.print(table)
        if len(failures) > 25:
            out.print(
                f"… and {len(failures) - 25} more: promptship --json show {run.prompt} {run.version}"
            )
    rate = run.pass_rate or 0.0
    verdict = "[green]passes[/]" if rate >= minimum and run.total else "[red]fails[/]"
    out.print(
        f"{run.prompt} {run.version}: pass rate {rate:.0%} ({run.passed} passed, {run.failed} failed, "
        f"{run.errored} errored) — {verdict} the staging gate (≥ {minimum:.0%})"
    )
    if run.regressions:
        label = "overridden" if run.regression_override else "[red]block the gate[/]"
        out.print(f"{len(run.regressions)} regression(s) against production ({label}):")
        for case in run.regressions[:10]:
            out.print(f"  - {escape(case)}")


@app.command()
def approve(
    request: str,
    comment: Annotated[str | None, typer.Option(help="A note for the audit log.")] = None,
    as_user: AsOption = None,
) -> None:
    """Approve a promotion request (approvers role; never your own request or version)."""
    if as_user:
        state.actor = as_user
    code = _parse_code(request)
    outcome = _run(lambda core: core.approve(code, _actor(), comment))
    if not _emit(outcome):
        out.print(outcome.message)
        _print_request(outcome.request)


@app.command()
def reject(
    request: str,
    reason: Annotated[str, typer.Option(help="Why (required).")],
    as_user: AsOption = None,
) -> None:
    """Reject a promotion request; this closes it."""
    if as_user:
        state.actor = as_user
    code = _parse_code(request)
    outcome = _run(lambda core: core.reject(code, _actor(), reason))
    if not _emit(outcome):
        out.print(outcome.message)
        _print_request(outcome.request)


@app.command()
def cancel(request: str, as_user: AsOption = None) -> None:
    """Cancel an open promotion request (its requester or an approver)."""
    if as_user:
        state.actor = as_user
    code = _parse_code(request)
    result = _run(lambda core: core.cancel(code, _actor()))
    if not _emit(result):
        _print_request(result)


@app.command()
def breakglass(
    name: str,
    version: str,
    reason: Annotated[str, typer.Option(help="Why this cannot wait (required).")],
    as_user: AsOption = None,
) -> None:
    """Emergency promotion to production: passing tests, a reason and 3 approvals."""
    if as_user:
        state.actor = as_user
    request = _run(lambda core: core.breakglass(name, version, _actor(), reason))
    if not _emit(request):
        _print_request(request)


@app.command()
def rollback(
    name: str,
    env: str,
    version: Annotated[str | None, typer.Argument(help="Default: the previous version.")] = None,
    reason: Annotated[str | None, typer.Option()] = None,
    as_user: AsOption = None,
) -> None:
    """Point an environment back at an earlier version, now (on-call or approvers)."""
    if as_user:
        state.actor = as_user
    result = _run(lambda core: core.rollback(name, env, _actor(), version, reason))
    if not _emit(result):
        out.print(
            f"rolled back {result.prompt} {result.environment}: {result.from_version} → {result.to_version}"
        )


@app.command()
def archive(name: str, version: str, as_user: AsOption = None) -> None:
    """Retire a deprecated or reverted version for good."""
    if as_user:
        state.actor = as_user
    status = _run(lambda core: core.archive(name, version, _actor()))
    if not _emit({"name": name, "version": version, "status": status}):
        out.print(f"{name} {version} is {status}")


# -- questions ----------------------------------------------------------------------------


@app.command()
def status(name: Annotated[str | None, typer.Argument()] = None) -> None:
    """What runs where, and the open requests with their gate checklist."""
    statuses = _run(lambda core: core.status(name))
    if _emit(statuses):
        return
    if not statuses:
        out.print("no prompts yet: promptship push FILE")
        return
    for s in statuses:
        table = Table(
            "environment",
            "version",
            "status",
            "deployed",
            "by",
            title=f"{s.name} (latest {s.latest_version})",
        )
        for d in s.environments:
            table.add_row(
                d.environment, d.version, d.status, _when(d.deployed_at), escape(d.deployed_by)
            )
        out.print(table)
        for request in s.open_requests:
            _print_request(request)


@app.command()
def history(
    name: str,
    env: Annotated[str | None, typer.Option(help="Only this environment.")] = None,
    before: Annotated[int | None, typer.Option(help="Page: events older than this number.")] = None,
    limit: Annotated[int, typer.Option(min=1, max=200)] = 20,
) -> None:
    """The prompt's audit trail, newest first."""
    page = _run(lambda core: core.history(name, env, before, limit))
    if _emit(page):
        return
    table = Table()
    for column in ("#", "when", "who", "what", "version", "env", "details"):
        table.add_column(column, no_wrap=column == "what")
    for e in page.events:
        details = ", ".join(f"{k}={v}" for k, v in e.details.items() if v not in (None, "", []))
        table.add_row(
            str(e.seq),
            _when(e.at),
            escape(e.actor),
            e.action,
            e.version or "",
            e.environment or "",
            escape(details),
        )
    out.print(table)
    if page.next_before:
        out.print(f"older: promptship history {name} --before {page.next_before}")


@app.command()
def soak(name: str) -> None:
    """The prompt's soaks, newest first: state, cycles, next cycle, worst divergence."""
    soaks = _run(lambda core: core.soak_status(name))
    if state.as_json:
        print(json.dumps([s.model_dump(mode="json") for s in soaks]))
        return
    if not soaks:
        out.print(f"{escape(name)} has no soaks yet: one starts when a version enters staging")
        return
    table = Table()
    for column in ("version", "kind", "state", "cycles", "next", "worst", "ends", "why"):
        table.add_column(column)
    for s in soaks:
        table.add_row(
            s.version,
            s.kind,
            s.state,
            f"{s.cycles_done}/{s.cycles_total}",
            _when(s.next_at) if s.next_at else "",
            "" if s.worst_divergence is None else f"{s.worst_divergence:.0%}",
            _when(s.ends_at),
            escape(s.failure or ""),
        )
    out.print(table)


@app.command()
def export(
    output: Annotated[
        str, typer.Argument(help="File to write (or to compare with --check), or - for stdout.")
    ] = "deployment.yaml",
    check: Annotated[
        bool,
        typer.Option("--check", help="Compare the file with the live state; exit 1 if it differs."),
    ] = False,
    server: Annotated[
        str | None,
        typer.Option(envvar="PROMPTSHIP_SERVER", help="Read the live state from this server (CI)."),
    ] = None,
    token: Annotated[
        str | None, typer.Option(envvar="PROMPTSHIP_TOKEN", help="Bearer token for --server.")
    ] = None,
) -> None:
    """Write the per-environment deployment file (version, model, who, when); with --check,
    fail when the committed file no longer matches what runs (for CI)."""

    async def remote() -> dict[str, dict[str, dict[str, Any]]]:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        try:
            async with httpx.AsyncClient(timeout=30) as http:
                response = await http.get(
                    f"{(server or '').rstrip('/')}/v1/deployments", headers=headers
                )
        except httpx.HTTPError as exc:
            raise BadInput(f"cannot reach {server}: {exc}") from None
        if response.status_code != 200:
            raise BadInput(f"the server answered {response.status_code}: {response.text[:300]}")
        data: dict[str, dict[str, dict[str, Any]]] = response.json()
        return data

    data = _guard(remote) if server else _run(lambda core: core.deployment_file())
    text = yaml.safe_dump(data, sort_keys=False, allow_unicode=True)
    if check:
        path = Path(output)
        try:
            committed = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        except OSError as exc:
            err.print(f"[bold red]error:[/] {escape(output)}: cannot read: {exc.strerror}")
            raise typer.Exit(2) from None
        except yaml.YAMLError as exc:
            err.print(f"[bold red]error:[/] {escape(output)}: not valid YAML: {escape(str(exc))}")
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
            out.print(f"wrote {output} ({len(data)} prompts)")


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
                lines.append(f"{name} {env}: live runs {b['version']}, the file has nothing")
            elif b is None and isinstance(a, dict):
                lines.append(f"{name} {env}: the file says {a.get('version')}, nothing runs there")
            elif not isinstance(a, dict) or b is None:
                lines.append(f"{name} {env}: not a mapping")
            else:
                for key in ("version", "content_hash", "model", "temperature", "max_tokens"):
                    if a.get(key) != b.get(key):
                        lines.append(
                            f"{name} {env}: {key} is {b.get(key)!r} live, {a.get(key)!r} in the file"
                        )
    return lines


# -- database and audit -------------------------------------------------------------------


@db_app.command("upgrade")
def db_upgrade() -> None:
    """Apply the schema migrations (serve does this on start)."""

    async def go() -> str | None:
        db = Database(_settings().database_url)
        try:
            await db.upgrade()
            return await db.current_revision()
        finally:
            await db.dispose()

    revision = _guard(go)
    out.print(f"database at revision {revision}")


@traffic_app.command("import")
def traffic_import(
    file: Annotated[
        Path, typer.Argument(help="JSONL: {prompt, environment, input, output?, version?, at?}")
    ],
) -> None:
    """Store production queries from a JSONL file, 1,000 a batch; a bad line stops the
    import before its batch is stored and names the line."""
    from promptship.services.traffic import MAX_BATCH

    async def go(core: Promptship) -> int:
        try:
            lines = file.read_text(encoding="utf-8").splitlines()
        except OSError as exc:
            raise BadInput(f"{file}: cannot read: {exc.strerror}") from None
        samples: list[Any] = []
        for number, line in enumerate(lines, 1):
            if line.strip():
                try:
                    samples.append(json.loads(line))
                except json.JSONDecodeError as exc:
                    raise BadInput(f"{file}:{number}: not JSON: {exc.msg}") from None
        stored = 0
        for start in range(0, len(samples), MAX_BATCH):
            try:
                stored += (await core.ingest_traffic(samples[start : start + MAX_BATCH])).stored
            except PromptshipError as exc:
                before = f"; {stored} stored before it" if stored else ""
                raise BadInput(
                    f"{file}: in the batch starting at sample {start + 1}: {exc.message}{before}",
                    hint=exc.hint,
                ) from None
        return stored

    stored = _run(go)
    if state.as_json:
        print(json.dumps({"stored": stored}))
    else:
        out.print(f"stored {stored} traffic sample(s) from {escape(str(file))}")


@audit_app.command("verify")
def audit_verify() -> None:
    """Recompute the hash chain; exit 1 if any event was edited, deleted or inserted."""
    result = _run(lambda core: core.verify_audit())
    if state.as_json:
        print(json.dumps({"ok": result.ok, "checked": result.checked, "problems": result.problems}))
    elif result.ok:
        out.print(f"[green]audit log intact[/]: {result.checked} events verified")
    else:
        err.print(
            f"[bold red]audit log tampered[/]: {len(result.problems)} problem(s) in {result.checked} events"
        )
        for problem in result.problems:
            err.print(f"  {escape(problem)}")
    if not result.ok:
        raise typer.Exit(1)


@audit_app.command("export")
def audit_export(
    fmt: Annotated[str, typer.Option("--format", help="jsonl or csv.")] = "jsonl",
    output: Annotated[str, typer.Option("--output", "-o", help="File, or - for stdout.")] = "-",
) -> None:
    """Export every audit event with its hashes, oldest first."""
    if fmt not in ("jsonl", "csv"):
        err.print(
            f"[bold red]error:[/] unknown format {fmt!r}\n  use --format jsonl or --format csv"
        )
        raise typer.Exit(2)

    async def use(core: Promptship) -> None:
        sink = sys.stdout if output == "-" else open(output, "w", encoding="utf-8", newline="")  # noqa: ASYNC230 - a CLI may block
        try:
            async for chunk in core.export_audit(fmt):
                sink.write(chunk)
        finally:
            if sink is not sys.stdout:
                sink.close()

    _run(use)


@app.command()
def serve(
    host: Annotated[str, typer.Option(help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to listen on.")] = 8000,
) -> None:
    """Run the server: Slack endpoint, HTTP API, health checks (migrates on start)."""
    import uvicorn

    from promptship import logs
    from promptship.server import create_app

    settings = _settings()
    secrets = [
        value.get_secret_value()
        for value in (
            settings.slack_bot_token,
            settings.slack_signing_secret,
            settings.slack_app_token,
        )
        if value is not None
    ]
    if settings.api_tokens is not None:
        secrets += [
            part.split(":")[-1] for part in settings.api_tokens.get_secret_value().split(",")
        ]
    secrets += [os.environ.get(k, "") for k in ("ANTHROPIC_API_KEY", "OPENAI_API_KEY")]
    logs.configure(secrets, os.environ.get("PROMPTSHIP_LOG_LEVEL", "INFO"))
    try:
        application = create_app(settings)
    except PromptshipError as exc:
        err.print(f"[bold red]error:[/] {escape(str(exc))}")
        raise typer.Exit(exc.exit_code) from None
    # open long-polls (up to a minute) must not hold a restart up: after 10 s they are cut
    # and their clients reconnect to another replica, or to this one once it is back
    uvicorn.run(
        application,
        host=host,
        port=port,
        log_config=None,  # our JSON handler, set up above
        access_log=False,  # the request-id middleware logs each request
        timeout_graceful_shutdown=10,
    )


def main() -> None:
    app()


if __name__ == "__main__":
    main()
