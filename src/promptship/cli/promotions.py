"""Promotions: request, test, approve, reject, cancel, break-glass, roll back, archive.

A validation run started here executes in this process with a live progress bar on stderr.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Annotated

import typer
from rich.markup import escape

from promptship.cli.app import app
from promptship.cli.common import (
    actor,
    emit,
    err,
    out,
    parse_code,
    print_move,
    print_request,
    print_table,
    run_core,
    state,
    table,
)
from promptship.cli.remote import Remote, ServerOption, TokenOption, run_remote
from promptship.domain.lifecycle import RunState
from promptship.services.views import DeploymentMove, RequestView, RunDetail

if TYPE_CHECKING:
    from promptship.services import Promptship
    from promptship.validation.runner import Progress as RunProgress
    from promptship.validation.runner import SuiteRunner


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
    run_id: Annotated[
        int | None,
        typer.Option(
            min=1,
            help="The test run whose regressions --override-regressions accepts (see "
            "promptship show); refused when a later run replaced it. Needed once the tests "
            "finished more than once.",
        ),
    ] = None,
    no_wait: Annotated[
        bool, typer.Option("--no-wait", help="Queue the tests and return; do not wait for them.")
    ] = False,
    server: ServerOption = None,
    token: TokenOption = None,
) -> None:
    """Request a promotion; it happens the moment every gate passes. Dev has no gates:
    promoting to dev points it at the version at once.

    Promoting to staging runs the version's tests first when no passing run exists: here,
    or, when a server's worker took the run, by following that worker until it ends
    (Ctrl-C stops following; the run goes on). With --server the server's workers run them.
    """
    if run_id is not None and not override_regressions:
        raise typer.BadParameter("--run-id goes with --override-regressions", param_hint="--run-id")
    waited: list[RunDetail] = []
    queued: list[int] = []
    following: set[int] = set()

    async def use(core: Promptship) -> RequestView | DeploymentMove:
        who = actor()
        if override_regressions:
            await core.override_regressions(name, version, override_regressions, who, run_id=run_id)
        request = await core.promote(name, version, env, who, reason, queue_tests=True)
        if isinstance(request, DeploymentMove):
            return request
        latest = (await core.show(name, version)).latest_run
        if request.state != "open" or latest is None or not RunState(latest.state).active:
            return request
        if no_wait:
            queued.append(latest.id)
            return request
        waited.append(await wait_for_run(core, latest.id, following))
        return await core.request(request.id)

    async def remote(client: Remote) -> RequestView | DeploymentMove:
        if override_regressions:
            await client.override_regressions(name, version, override_regressions, run_id)
        return await client.request_promotion(name, version, env, reason)

    try:
        request = run_remote(server, token, remote) if server else run_core(use)
    except KeyboardInterrupt:
        if not following:
            raise
        err.print(
            f"stopped following validation run {min(following)}; it goes on: "
            f"promptship show {escape(name)} {escape(version)}"
        )
        raise typer.Exit(130) from None
    if isinstance(request, DeploymentMove):
        if not emit(request):
            print_move(request)
        return
    if not emit(request):
        print_request(request)
        for run in waited:
            out.print(
                f"tests: run {run.id} {run.state} ({run.passed} passed, {run.failed} failed, "
                f"{run.errored} errored)"
            )
        for run_id in queued:
            out.print(f"tests queued as run {run_id}")
    if request.state not in ("open", "promoted"):
        raise typer.Exit(1)


#: how often a run another worker executes is read back while following it
FOLLOW_POLL_SECONDS = 0.5
#: every this many reads, a run whose worker stopped reporting is recovered (re-queued,
#: then run here) rather than followed for ever
RECOVER_EVERY_POLLS = 20


async def wait_for_run(
    core: Promptship, run_id: int, following: set[int] | None = None
) -> RunDetail:
    """Wait for a queued or running run to end, whichever process has it: claim and execute
    it here when it is still queued, else follow the worker that claimed it (reading its
    counts from the store) with the same progress bar. ``following`` holds the run while
    this process only follows it (so Ctrl-C then leaves it running elsewhere)."""
    following = set() if following is None else following
    from promptship.validation.runner import SuiteRunner

    runner = SuiteRunner(core)
    announced = False
    with run_progress() as show:
        polls = 0
        while True:
            polls += 1
            if polls % RECOVER_EVERY_POLLS == 0:
                await core.recover_interrupted_runs()
            run = await core.validation_run(run_id)
            if run.state == RunState.QUEUED:
                if await core.claim_validation_run(runner.owner, run_id) is not None:
                    following.discard(run_id)  # ours now: Ctrl-C cancels it
                    async with runner:
                        await runner.execute(run_id, on_progress=show_progress(show))
                    return await core.validation_run(run_id)
            elif not RunState(run.state).active:
                return run
            else:
                if not announced:
                    announced = True
                    if not state.as_json:
                        err.print(
                            f"validation run {run_id} is being executed by another worker "
                            "(a promptship server, say); following it (Ctrl-C stops following, "
                            "the run goes on)"
                        )
                following.add(run_id)
                show(run.total, run.passed, run.failed, run.errored)
            await asyncio.sleep(FOLLOW_POLL_SECONDS)


ShowCounts = Callable[[int, int, int, int], None]


def show_progress(show: ShowCounts) -> Callable[[RunProgress], None]:
    return lambda p: show(p.total, p.passed, p.failed, p.errored)


@contextmanager
def run_progress() -> Iterator[ShowCounts]:
    """A live progress bar on stderr; yields ``show(total, passed, failed, errored)``."""
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

        def show(total: int, passed: int, failed: int, errored: int) -> None:
            bar.update(
                task,
                total=total,
                completed=passed + failed + errored,
                passed=passed,
                failed=failed,
                errored=errored,
            )

        yield show


async def execute_run_with(core: Promptship, runner: SuiteRunner, run_id: int) -> RunDetail:
    """Execute a run this process owns, with a live progress bar."""
    with run_progress() as show:
        await runner.execute(run_id, on_progress=show_progress(show))
    return await core.validation_run(run_id)


@app.command()
def test(
    name: str,
    version: str,
    concurrency: Annotated[int, typer.Option(min=1, max=256, help="Cases in flight.")] = 8,
    timeout: Annotated[float, typer.Option(min=1, help="Seconds per model call.")] = 60.0,
) -> None:
    """Run a version's suite against its model; exit 1 when the staging gate would refuse."""
    from promptship.validation.runner import RunnerSettings, SuiteRunner

    async def use(core: Promptship) -> tuple[RunDetail, float]:
        settings = RunnerSettings(concurrency=concurrency, timeout=timeout)
        async with SuiteRunner(core, settings=settings) as runner:
            run_id = await runner.start(name, version, actor())
            runner_run = await execute_run_with(core, runner, run_id)
        return runner_run, core.policy.environments.staging_policy.min_pass_rate

    run, minimum = run_core(use)
    gate_ok = run.state == "passed" and (not run.regressions or bool(run.regression_override))
    if not emit(run):
        print_run(run, minimum)
    if not gate_ok:
        raise typer.Exit(1)


def print_run(run: RunDetail, minimum: float) -> None:
    if run.error:
        err.print(f"[bold red]run failed:[/] {escape(run.error)}")
    failures = [r for r in run.results if not r.get("passed") or r.get("error")]
    if failures:
        grid = table(
            "#",
            "type",
            "input",
            "expected",
            "got / why",
            wrap=("input", "expected", "got / why"),
            title=f"{len(failures)} not passed",
        )
        for i, r in enumerate(failures[:25], 1):
            why = r.get("error") or r.get("detail") or ""
            got = r.get("got") or ""
            grid.add_row(
                str(i),
                "[yellow]errored[/]" if r.get("error") else str(r.get("type")),
                escape(str(r.get("input"))[:80]),
                escape(str(r.get("expected"))[:60]),
                escape((f"{got[:80]!r} — " if got else "") + str(why)),
            )
        print_table(grid)
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
    for note in run.notes:
        out.print(f"[yellow]note:[/] {escape(note)}")
    if run.regressions:
        label = "overridden" if run.regression_override else "[red]block the gate[/]"
        out.print(f"{len(run.regressions)} regression(s) against production ({label}):")
        for case in run.regressions[:10]:
            out.print(f"  - {escape(case)}")


@app.command()
def approve(
    request: str,
    comment: Annotated[str | None, typer.Option(help="A note for the audit log.")] = None,
    server: ServerOption = None,
    token: TokenOption = None,
) -> None:
    """Approve a promotion request (approvers role; never your own request or version)."""
    code = parse_code(request)
    outcome = (
        run_remote(server, token, lambda client: client.approve(code, comment))
        if server
        else run_core(lambda core: core.approve(code, actor(), comment))
    )
    if not emit(outcome):
        out.print(outcome.message)
        print_request(outcome.request)


@app.command()
def reject(
    request: str,
    reason: Annotated[str, typer.Option(help="Why (required).")],
    server: ServerOption = None,
    token: TokenOption = None,
) -> None:
    """Reject a promotion request; this closes it."""
    code = parse_code(request)
    outcome = (
        run_remote(server, token, lambda client: client.reject(code, reason))
        if server
        else run_core(lambda core: core.reject(code, actor(), reason))
    )
    if not emit(outcome):
        out.print(outcome.message)
        print_request(outcome.request)


@app.command()
def cancel(request: str, server: ServerOption = None, token: TokenOption = None) -> None:
    """Cancel an open promotion request (its requester or an approver)."""
    code = parse_code(request)
    result = (
        run_remote(server, token, lambda client: client.cancel(code))
        if server
        else run_core(lambda core: core.cancel(code, actor()))
    )
    if not emit(result):
        print_request(result)


@app.command()
def breakglass(
    name: str,
    version: str,
    reason: Annotated[str, typer.Option(help="Why this cannot wait (required).")],
    server: ServerOption = None,
    token: TokenOption = None,
) -> None:
    """Emergency promotion to production: passing tests, a reason and 3 approvals."""
    request = (
        run_remote(server, token, lambda client: client.breakglass(name, version, reason))
        if server
        else run_core(lambda core: core.breakglass(name, version, actor(), reason))
    )
    if isinstance(request, DeploymentMove):
        if not emit(request):
            print_move(request)
        return
    if not emit(request):
        print_request(request)


@app.command()
def rollback(
    name: str,
    env: str,
    version: Annotated[str | None, typer.Argument(help="Default: the previous version.")] = None,
    reason: Annotated[str | None, typer.Option()] = None,
    server: ServerOption = None,
    token: TokenOption = None,
) -> None:
    """Point an environment back at an earlier version, now (on-call or approvers)."""
    result = (
        run_remote(server, token, lambda client: client.rollback(name, env, version, reason))
        if server
        else run_core(lambda core: core.rollback(name, env, actor(), version, reason))
    )
    if not emit(result):
        out.print(
            f"rolled back {result.prompt} {result.environment}: {result.from_version} → {result.to_version}"
        )


@app.command()
def archive(name: str, version: str) -> None:
    """Retire a deprecated or reverted version for good."""
    status = run_core(lambda core: core.archive(name, version, actor()))
    if not emit({"name": name, "version": version, "status": status}):
        out.print(f"{name} {version} is {status}")
