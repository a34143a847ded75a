"""``promptship audit``: verify and export the keyed audit log, its signed checkpoints, and
making a key."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.markup import escape

from promptship.cli.app import app
from promptship.cli.common import CommandGroup, emit, err, out, run_core, settings, state
from promptship.errors import BadInput

if TYPE_CHECKING:  # the server extra's: imported where a command uses them
    from slack_sdk.web.async_client import AsyncWebClient

    from promptship.services import Promptship
    from promptship.services.audit import Verification
    from promptship.services.checkpoints import Checkpoint

audit_app = CommandGroup(help="The keyed, hash-chained audit log.", no_args_is_help=True)
app.add_typer(audit_app, name="audit")

#: a checkpoints file is read whole; bigger than this is not one promptship wrote
MAX_CHECKPOINT_FILE = 64 * 2**20
#: how far back ``--from-slack`` reads the channel (pages of 200 messages)
MAX_HISTORY_PAGES = 500


def _read_checkpoints(path: Path) -> list[Checkpoint]:
    try:
        size = path.stat().st_size
        if size > MAX_CHECKPOINT_FILE:
            raise BadInput(f"{path}: {size:,} bytes is too big for a checkpoints file")
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise BadInput(f"{path}: cannot read: {exc.strerror}") from None
    except UnicodeDecodeError:
        raise BadInput(f"{path}: not UTF-8 text") from None
    from promptship.services.checkpoints import parse_file

    return parse_file(text, str(path))


async def fetch_checkpoints(client: AsyncWebClient, channel: str) -> list[Checkpoint]:
    """Every checkpoint posted in ``channel``, read back with ``conversations.history``."""
    from slack_sdk.errors import SlackApiError

    from promptship.services.checkpoints import find_line

    found: list[Checkpoint] = []
    cursor = None
    try:
        for _ in range(MAX_HISTORY_PAGES):
            page = await client.conversations_history(channel=channel, limit=200, cursor=cursor)
            for message in page.get("messages") or []:
                checkpoint = find_line(str(message.get("text") or ""))
                if checkpoint is not None:
                    found.append(checkpoint)
            cursor = (page.get("response_metadata") or {}).get("next_cursor")
            if not page.get("has_more") or not cursor:
                break
    except SlackApiError as exc:
        error = exc.response.get("error") if exc.response is not None else exc
        raise BadInput(f"Slack refused to read {channel}'s history: {error}") from None
    return found


async def _slack_checkpoints(channel: str | None) -> list[Checkpoint]:
    config = settings()
    channel = channel or config.policy().channel
    if not channel:
        raise BadInput(
            "which channel holds the checkpoints?",
            hint="pass --channel or set channel: in the policy",
        )
    if config.slack_bot_token is None:
        raise BadInput("--from-slack needs SLACK_BOT_TOKEN (with the channels:history scope)")
    from slack_sdk.web.async_client import AsyncWebClient

    client = AsyncWebClient(
        token=config.slack_bot_token.get_secret_value(), base_url=config.slack_api_url
    )
    return await fetch_checkpoints(client, channel)


@audit_app.command("verify")
def audit_verify(
    checkpoints: Annotated[
        Path | None,
        typer.Option(
            "--checkpoints", help="Checkpoints to compare with (as `audit checkpoints` writes)."
        ),
    ] = None,
    from_slack: Annotated[
        bool, typer.Option("--from-slack", help="Compare with the checkpoints in the channel.")
    ] = False,
    channel: Annotated[
        str | None, typer.Option(help="The channel for --from-slack (default: the policy's).")
    ] = None,
    start: Annotated[
        int | None,
        typer.Option(
            "--from", help="Check the chain from event SEQ on only.", min=1, metavar="SEQ"
        ),
    ] = None,
    since_checkpoint: Annotated[
        bool,
        typer.Option(
            "--since-checkpoint",
            help="Check the chain from the newest genuine stored checkpoint on only.",
        ),
    ] = False,
) -> None:
    """Check the chain's HMACs and the signed checkpoints, and that approvals, deployments
    and closed requests match their events; exit 1 on any problem. With --from or
    --since-checkpoint, only that part of the chain (and no table)."""
    if start is not None and since_checkpoint:
        err.print("[bold red]error:[/] --from and --since-checkpoint choose the start twice")
        raise typer.Exit(2)

    async def use(core: Promptship) -> tuple[Verification, int]:
        given = _read_checkpoints(checkpoints) if checkpoints else []
        if from_slack:
            given += await _slack_checkpoints(channel)
        found = await core.verify_audit(given, start=start, since_checkpoint=since_checkpoint)
        return found, len(given)

    result, given = run_core(use)
    resumed = result.resumed_from
    if state.as_json:
        print(
            json.dumps(
                {
                    "ok": result.ok,
                    "checked": result.checked,
                    "start": result.start,
                    "end": result.end,
                    "whole": result.whole,
                    "resumed_from": resumed.as_json() if resumed else None,
                    "unkeyed": result.unkeyed,
                    "checkpoints": result.checkpoints,
                    "newest_checkpoint": result.newest_checkpoint,
                    "problems": result.problems,
                }
            )
        )
    elif result.ok:
        if result.whole:
            anchored = (
                f", up to event {result.newest_checkpoint} matched {result.checkpoints} signed "
                "checkpoint(s)"
                if result.newest_checkpoint
                else ", no signed checkpoint yet"
            )
            out.print(f"[green]audit log intact[/]: {result.checked} events verified{anchored}")
        else:
            out.print(f"[green]audit log intact[/]: {_range(result)} verified")
        if since_checkpoint and resumed is None:
            out.print("  no genuine checkpoint is stored yet: the whole chain was checked")
        if result.unkeyed:
            out.print(
                f"  {result.unkeyed} event(s) predate keyed audit (plain SHA-256): only "
                "checkpoints vouch for those"
            )
        if not given and result.whole:
            out.print(
                "  compared with the database's own checkpoints only: pass --checkpoints FILE "
                "or --from-slack to catch deleted newest events"
            )
    else:
        where = f"{result.checked} events" if result.whole else _range(result)
        err.print(f"[bold red]audit log tampered[/]: {len(result.problems)} problem(s) in {where}")
        for problem in result.problems:
            err.print(f"  {escape(problem)}")
    if not result.whole and not state.as_json:
        out.print(
            "  the tables' cross-checks and the events before the range are checked by "
            "promptship audit verify (the whole chain)"
        )
    if not result.ok:
        raise typer.Exit(1)


def _range(result: Verification) -> str:
    """Which events a range verification checked, and what vouches for those before."""
    span = (
        f"events {result.start}..{result.end} ({result.checked})"
        if result.end >= result.start
        else f"no event from {result.start} on"
    )
    resumed = result.resumed_from
    if resumed is not None:
        return (
            f"{span}, from the checkpoint of event {resumed.seq} made {resumed.when}, which "
            "vouches for the events before it"
        )
    return f"{span}, from event {result.start} on"


@audit_app.command("checkpoints")
def audit_checkpoints(
    output: Annotated[
        Path | None,
        typer.Option("--output", "-o", help="Write them all as JSON lines to this file."),
    ] = None,
    limit: Annotated[int, typer.Option(help="Show the newest N.", min=1)] = 20,
) -> None:
    """The signed checkpoints of the chain (newest last); keep a copy with --output."""
    found = run_core(lambda core: core.audit_checkpoints(None if output else limit))
    if output is not None:
        lines = "".join(json.dumps(c.as_json()) + "\n" for c in found)
        try:
            output.write_text(lines, encoding="utf-8")
        except OSError as exc:
            err.print(f"[bold red]error:[/] {output}: cannot write: {escape(str(exc.strerror))}")
            raise typer.Exit(2) from None
        if not emit({"written": len(found), "file": str(output)}):
            out.print(f"wrote {len(found)} checkpoint(s) to {escape(str(output))}")
        return
    if emit([c.as_json() for c in found]):
        return
    if not found:
        out.print("no checkpoints yet (one is made hourly and after every production change)")
    for c in found:
        out.print(f"event {c.seq:>8}  {c.when}  key {c.key_id}  {c.reason or 'requested'}")
        out.print(f"  {c.line()}", style="dim")


@audit_app.command("checkpoint")
def audit_checkpoint() -> None:
    """Sign the chain's head now and post it to the channel."""
    made = run_core(lambda core: core.checkpoint_audit("requested"))
    if emit(made.as_json() if made else None):
        return
    out.print(made.line() if made else "the audit log is empty: nothing to sign")


@audit_app.command("keygen")
def audit_keygen(
    key_id: Annotated[str, typer.Option("--id", help="The new key's id.")] = "k1",
) -> None:
    """Print a fresh random key for PROMPTSHIP_AUDIT_KEY. To rotate, put the new key first
    and keep the old one listed after it: ``k2:NEW,k1:OLD``."""
    from promptship.auditkeys import generate_key

    try:
        key = generate_key(key_id)
    except BadInput as exc:
        err.print(f"[bold red]error:[/] {escape(exc.message)}\n  {escape(exc.hint or '')}")
        raise typer.Exit(2) from None
    if not emit({"key": key}):
        print(key)
        print(
            "set PROMPTSHIP_AUDIT_KEY to this (keep it out of the database and of git); to "
            "rotate, list it first and keep the old key after it: new,old",
            file=sys.stderr,
        )


@audit_app.command("export")
def audit_export(
    fmt: Annotated[str, typer.Option("--format", help="jsonl or csv.")] = "jsonl",
    output: Annotated[str, typer.Option("--output", "-o", help="File, or - for stdout.")] = "-",
) -> None:
    """Export every audit event with its hashes and key ids, oldest first."""
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

    run_core(use)
