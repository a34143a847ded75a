"""``promptship audit``: verify and export the hash-chained audit log."""

from __future__ import annotations

import json
import sys
from typing import Annotated

import typer
from rich.markup import escape

from promptship.cli.app import app
from promptship.cli.common import CommandGroup, err, out, run_core, state
from promptship.services import Promptship

audit_app = CommandGroup(help="The hash-chained audit log.", no_args_is_help=True)
app.add_typer(audit_app, name="audit")


@audit_app.command("verify")
def audit_verify() -> None:
    """Recompute the hash chain; exit 1 if any event was edited, deleted or inserted."""
    result = run_core(lambda core: core.verify_audit())
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

    run_core(use)
