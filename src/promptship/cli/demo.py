"""``promptship demo``: the whole path, offline, with no keys, narrated (about a minute)."""

from __future__ import annotations

import shlex
import tempfile
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.markup import escape

from promptship.cli.app import app


@app.command("demo")
def demo(
    directory: Annotated[
        Path | None,
        typer.Option("--dir", help="Where the demo's database, policy and logs go (created)."),
    ] = None,
    keep: Annotated[
        bool,
        typer.Option(
            "--keep", help="Leave the server and the doubles running, to explore with the CLI."
        ),
    ] = False,
) -> None:
    """Run promptship end to end on this machine, offline: push, test gate, staging, soak,
    approvals by button in (a double of) Slack, production, a regressing and a divergent
    version stopped, an on-call rollback, audit verify. Exit code 0 when every step
    happened as told, 1 when one did not (named, with the server's log)."""
    from promptship.demo.narrate import Narrator, StepFailed
    from promptship.demo.run import Demo, run_path
    from promptship.testing.doubles import DoublesError, tail

    console = Console(highlight=False, soft_wrap=True)
    if directory is None:
        folder = Path(tempfile.mkdtemp(prefix="promptship-demo-"))
    else:
        folder = directory.resolve()
        if (folder / "promptship.db").exists():
            console.print(
                f"error: {escape(str(folder))} already holds a demo database; "
                "pick another --dir (or delete it)",
                markup=False,
            )
            raise typer.Exit(2)
        try:
            folder.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            console.print(f"error: cannot create {folder}: {exc.strerror}", markup=False)
            raise typer.Exit(2) from None
    narrator = Narrator(console)
    console.print(
        f"[bold]promptship demo[/]: everything runs on this machine, offline, in "
        f"{escape(str(folder))}"
    )
    session = Demo(folder, narrator)
    succeeded = False
    try:
        run_path(session)
        succeeded = True
    except KeyboardInterrupt:
        console.print("\ninterrupted: stopping the server and the doubles", markup=False)
        session.close(stop=True)
        raise typer.Exit(130) from None
    except (StepFailed, DoublesError) as exc:
        step = exc.step if isinstance(exc, StepFailed) else narrator.current or "start-up"
        console.print(f"[red]✗ {escape(step)}[/]: {escape(str(exc))}")
        if session.server_log.exists():
            console.print(f"the server's log ({escape(str(session.server_log))}), last lines:")
            for line in tail(session.server_log, 15).splitlines():
                console.print(line[:400], markup=False, soft_wrap=True)
    finally:
        if not succeeded:
            session.close(stop=True)
    if not succeeded:
        raise typer.Exit(1)
    took = narrator.elapsed()
    console.print(
        f"\n[bold green]Done in {took:.0f} s.[/] The database: {escape(str(session.db_path))}"
    )
    env = session.env()
    explore = {
        "PROMPTSHIP_DATABASE_URL": env["PROMPTSHIP_DATABASE_URL"],
        "PROMPTSHIP_CONFIG": env["PROMPTSHIP_CONFIG"],
    }
    line = " ".join(f"{k}={shlex.quote(v)}" for k, v in explore.items())
    console.print("Explore what happened:", markup=False)
    console.print(f"  export {line}", markup=False)
    for command in (
        "promptship --json status",
        "promptship history customer-support",
        "promptship soak customer-support",
        "promptship audit verify",
    ):
        console.print(f"  {command}", markup=False)
    if not keep:
        session.close(stop=True)
        console.print("The server and the doubles are stopped; run with --keep to leave them up.")
        return
    session.close(stop=False)
    server = {
        "PROMPTSHIP_SERVER": session.server_url,
        "PROMPTSHIP_TOKEN": session.ci_token,
        **{k: v for k, v in env.items() if k != "PROMPTSHIP_API_TOKENS"},
    }
    console.print(
        f"\nStill running (--keep): promptship serve {session.server_url}, "
        "the model and Slack doubles. Point the CLI at them:",
        markup=False,
    )
    console.print(
        "  export " + " ".join(f"{k}={shlex.quote(v)}" for k, v in server.items()), markup=False
    )
    console.print(
        "  (PROMPTSHIP_TOKEN is the CI's write token: push and request through the server)",
        markup=False,
    )
    pid = session.doubles.processes["server"].pid if session.doubles else "?"
    console.print(
        f"Stop them with: promptship doubles stop --dir {shlex.quote(str(folder))}   "
        f"(or kill the server, pid {pid})",
        markup=False,
    )
