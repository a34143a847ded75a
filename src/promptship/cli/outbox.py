"""``promptship outbox``: notifications set aside after failing for good (dead letters)."""

from __future__ import annotations

import json
from dataclasses import asdict
from typing import TYPE_CHECKING, Annotated

import typer
from rich.markup import escape

from promptship.cli.app import app
from promptship.cli.common import CommandGroup, actor, err, out, run_core, state

if TYPE_CHECKING:
    from promptship.services.outbox import DeadLetter

outbox_app = CommandGroup(
    help="Notifications Slack refused for good or that kept failing (dead letters).",
    no_args_is_help=True,
)
app.add_typer(outbox_app, name="outbox")


def _print_json(letters: list[DeadLetter]) -> None:
    print(json.dumps([asdict(d) for d in letters], indent=2))


@outbox_app.command("list")
def outbox_list() -> None:
    """The dead letters: id, topic, channel, tries, the last error and when it gave up."""
    letters = run_core(lambda core: core.outbox_dead_letters())
    if state.as_json:
        _print_json(letters)
        return
    if not letters:
        out.print("no dead letters: every notification was delivered or is on its way")
        return
    for d in letters:
        out.print(
            f"[bold]{d.id}[/] {escape(d.topic)} → {escape(d.channel or '-')}"
            f" · {d.attempts} tries · {d.dead_at[:16].replace('T', ' ')} UTC"
            f" · [red]{escape(d.error)}[/]"
        )
    out.print("put one back in line: promptship outbox retry ID (or --all); discard: drop ID")


@outbox_app.command("retry")
def outbox_retry(
    id: Annotated[int | None, typer.Argument(help="The dead letter's id (outbox list).")] = None,
    every: Annotated[bool, typer.Option("--all", help="Retry every dead letter.")] = False,
) -> None:
    """Put a dead letter (or all) back in its channel's line, with a fresh count of tries."""
    if (id is None) == (not every):
        err.print("[bold red]error:[/] give a dead letter's ID or --all, not both or neither")
        err.print("  promptship outbox retry ID | promptship outbox retry --all")
        raise typer.Exit(2)
    ids = None if every else [id] if id is not None else []
    letters = run_core(lambda core: core.retry_dead_letters(ids, actor()))
    if state.as_json:
        _print_json(letters)
    elif not letters:
        out.print("no dead letters to retry")
    else:
        out.print(
            f"{len(letters)} notification(s) back in line: {', '.join(str(d.id) for d in letters)}"
        )


@outbox_app.command("drop")
def outbox_drop(
    id: Annotated[int, typer.Argument(help="The dead letter's id (outbox list).")],
) -> None:
    """Discard a dead letter for good; the audit log records what it was and who dropped it."""
    letter = run_core(lambda core: core.drop_dead_letter(id, actor()))
    if state.as_json:
        print(json.dumps(asdict(letter), indent=2))
    else:
        out.print(f"dropped {letter.id} ({escape(letter.topic)} to {escape(letter.channel or '')})")
