"""Questions: what runs where, a prompt's audit trail, its soaks."""

from __future__ import annotations

import asyncio
import json
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
    print_check,
    print_request,
    print_table,
    report,
    run_core,
    state,
    table,
    when,
)
from promptship.domain.lifecycle import soak_next_steps
from promptship.durations import parse_duration
from promptship.errors import BadInput
from promptship.services.views import CheckView, RequestView

if TYPE_CHECKING:  # the server extra's: imported where a local command uses it
    from promptship.services import Promptship

#: how often ``request --wait`` reads the request again
WAIT_POLL_SECONDS = 1.0


@app.command()
def status(name: Annotated[str | None, typer.Argument()] = None) -> None:
    """What runs where, and the open requests with their gate checklist."""
    statuses = run_core(lambda core: core.status(name))
    if emit(statuses):
        return
    if not statuses:
        out.print("no prompts yet: promptship push FILE")
        return
    for s in statuses:
        grid = table(
            "environment",
            "version",
            "status",
            "deployed",
            "by",
            title=f"{s.name} (latest {s.latest_version})",
        )
        for d in s.environments:
            grid.add_row(
                d.environment, d.version, d.status, when(d.deployed_at), escape(d.deployed_by)
            )
        print_table(grid)
        for request in s.open_requests:
            print_request(request)


@app.command()
def request(
    code: Annotated[str, typer.Argument(help="The request: req-42 or 42.")],
    wait: Annotated[
        bool,
        typer.Option(
            "--wait",
            help="Wait until it closes, printing each gate as it changes; exit 0 when it "
            "promoted, 1 when it closed any other way.",
        ),
    ] = False,
    timeout: Annotated[
        str | None,
        typer.Option(help="With --wait: stop waiting after this long (e.g. 90s, 10m); exit 1."),
    ] = None,
) -> None:
    """A promotion request with its gate checklist and decisions; --wait follows it until it
    closes (a soak advances only while promptship serve runs)."""
    request_id = parse_code(code)
    limit = None
    if timeout is not None:
        try:
            limit = parse_duration(timeout)
        except BadInput as exc:
            report(BadInput(f"--timeout: {exc.message}", hint=exc.hint))
            raise typer.Exit(2) from None
        if not wait:
            report(
                BadInput(
                    "--timeout goes with --wait", hint="promptship request REQ --wait --timeout 30m"
                )
            )
            raise typer.Exit(2)

    async def follow(core: Promptship) -> tuple[RequestView, bool]:
        view = await core.request(request_id)
        if not wait or view.state != "open":
            return view, False
        if not state.as_json:
            print_request(view)
            err.print(
                f"waiting for {view.code} to close (a soak advances only while promptship "
                "serve runs; Ctrl-C stops waiting, the request goes on)"
            )
        deadline = None if limit is None else core.clock.now() + limit
        while view.state == "open":
            if deadline is not None and core.clock.now() >= deadline:
                return view, True
            await asyncio.sleep(WAIT_POLL_SECONDS)
            newer = await core.request(request_id)
            if not state.as_json and newer.state == "open":
                before = {_progress(c) for c in view.checks}
                for check in newer.checks:
                    if _progress(check) not in before:
                        print_check(check)
            view = newer
        return view, False

    view, timed_out = run_core(follow)
    if not emit(view):
        if timed_out:
            err.print(f"{view.code} is still open after {timeout}")
        else:
            print_request(view)
    if wait and view.state != "promoted":
        raise typer.Exit(1)


def _progress(check: CheckView) -> tuple[str, str, str]:
    """What is worth a line while waiting: a gate's state and detail (the soak's detail
    changes once a cycle, never with the clock)."""
    return check.gate, check.state, check.detail


@app.command()
def history(
    name: str,
    env: Annotated[str | None, typer.Option(help="Only this environment.")] = None,
    before: Annotated[int | None, typer.Option(help="Page: events older than this number.")] = None,
    limit: Annotated[int, typer.Option(min=1, max=200)] = 20,
) -> None:
    """The prompt's audit trail, newest first."""
    page = run_core(lambda core: core.history(name, env, before, limit))
    if emit(page):
        return
    grid = table("#", "when", "who", "what", "version", "env", "details", wrap=("details",))
    for e in page.events:
        details = ", ".join(f"{k}={v}" for k, v in e.details.items() if v not in (None, "", []))
        grid.add_row(
            str(e.seq),
            when(e.at),
            escape(e.actor),
            e.action,
            e.version or "",
            e.environment or "",
            escape(details),
        )
    print_table(grid)
    if page.next_before:
        out.print(f"older: promptship history {name} --before {page.next_before}")


@app.command()
def soak(
    name: Annotated[str, typer.Argument(help="The prompt, or `restart` followed by it.")],
    words: Annotated[
        list[str] | None, typer.Argument(help="restart: the prompt and [VERSION].")
    ] = None,
) -> None:
    """The prompt's soaks, newest first: state, cycles, next cycle, worst divergence.

    `promptship soak restart NAME [VERSION]` starts a fresh staging soak of the version
    staging runs (approvers only), e.g. after one failed or ran short of traffic."""
    if name == "restart":
        _restart(*(words or []))
        return
    if words:
        err.print(
            f"[bold red]error:[/] unexpected {escape(' '.join(words))}\n"
            "  usage: promptship soak NAME, or promptship soak restart NAME [VERSION]"
        )
        raise typer.Exit(2)
    soaks = run_core(lambda core: core.soak_status(name))
    if state.as_json:
        print(json.dumps([s.model_dump(mode="json") for s in soaks]))
        return
    if not soaks:
        out.print(f"{escape(name)} has no soaks yet: one starts when a version enters staging")
        return
    grid = table(
        "version", "kind", "state", "cycles", "next", "worst", "ends", "why", wrap=("why",)
    )
    for s in soaks:
        grid.add_row(
            s.version,
            s.kind,
            s.state,
            f"{s.cycles_done}/{s.cycles_total}",
            when(s.next_at) if s.next_at else "",
            "" if s.worst_divergence is None else f"{s.worst_divergence:.0%}",
            when(s.ends_at),
            escape(s.failure or ""),
        )
    print_table(grid)
    newest = soaks[0]
    failed = newest.state in ("failed", "insufficient-traffic")
    if failed and newest.kind == "staging-shadow" and "Next:" not in (newest.failure or ""):
        # a soak recorded before failures carried their next steps: the way on is still shown
        out.print(
            escape(
                soak_next_steps(
                    name, newest.version, insufficient=newest.state == "insufficient-traffic"
                )
            )
        )


def _restart(*words: str) -> None:
    if not 1 <= len(words) <= 2:
        what = "missing the prompt name" if not words else f"unexpected {' '.join(words[2:])}"
        err.print(
            f"[bold red]error:[/] {escape(what)}\n  usage: promptship soak restart NAME [VERSION]"
        )
        raise typer.Exit(2)
    name, version = words[0], (words[1] if len(words) > 1 else None)
    started = run_core(lambda core: core.restart_soak(name, actor(), version))
    if not emit(started):
        out.print(
            f"restarted the staging soak of {escape(name)} {escape(started.version)}: "
            f"{started.cycles_total} cycle(s), ends {when(started.ends_at)} UTC; "
            f"watch it with promptship soak {escape(name)}"
        )
