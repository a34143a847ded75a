"""``promptship doubles``: the offline model and Slack doubles, for trying promptship
without keys or a workspace.

    eval "$(promptship doubles start)"     # prints only the export line on stdout
    promptship serve &                      # uses them: the suites run against the model double
    promptship doubles stop
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from promptship.cli.app import app
from promptship.cli.common import CommandGroup, err, state

if TYPE_CHECKING:  # the server extra's (the doubles serve HTTP)
    from promptship.testing.doubles import Doubles

doubles_app = CommandGroup(
    help="Offline doubles of the model APIs and Slack, for trying promptship without keys.",
    no_args_is_help=True,
)
app.add_typer(doubles_app, name="doubles")

DirOption = Annotated[
    Path | None,
    typer.Option(
        "--dir",
        help="Where the doubles' state file and logs live.",
        show_default="the current directory",
    ),
]


def _directory(directory: Path | None) -> Path:
    folder = (directory or Path.cwd()).resolve()
    if not folder.is_dir():
        err.print(f"error: {folder} is not a directory", markup=False)
        raise typer.Exit(2)
    return folder


def _explain(doubles: object, started: bool) -> None:
    from promptship.testing.doubles import Doubles

    assert isinstance(doubles, Doubles)
    verb = "started" if started else "already running"
    model, slack = doubles.processes["model"], doubles.processes["slack"]
    err.print(
        f"promptship doubles {verb}:\n"
        f"  model double  {model.url}  (pid {model.pid}, answers from its answer book; log {model.log})\n"
        f"  Slack double  {slack.url}  (pid {slack.pid}; log {slack.log})\n"
        'Use them with: eval "$(promptship doubles start)"   then: promptship serve\n'
        "Stop them with: promptship doubles stop",
        markup=False,
    )


@doubles_app.command("start")
def doubles_start(directory: DirOption = None) -> None:
    """Start the model and Slack doubles in the background (or find them running) and
    print the shell line that points promptship at them, for ``eval``."""
    from promptship.testing import doubles

    folder = _directory(directory)
    try:
        running, started = doubles.start(folder)
    except doubles.DoublesError as exc:
        err.print(f"error: {exc}", markup=False)
        raise typer.Exit(1) from None
    if state.as_json:
        print(json.dumps({**doubles.describe(running), "started": started}))
    else:
        _explain(running, started)
        print(running.exports())


def _recorded(folder: Path) -> Doubles | None:
    """The doubles recorded in ``folder`` (None when none are); an unreadable record: exit 1."""
    from promptship.testing import doubles

    try:
        return doubles.load(folder)
    except doubles.DoublesError as exc:
        err.print(f"error: {exc}", markup=False)
        raise typer.Exit(1) from None


@doubles_app.command("stop")
def doubles_stop(directory: DirOption = None) -> None:
    """Stop the doubles (and anything else recorded with them) and forget them."""
    from promptship.testing import doubles

    folder = _directory(directory)
    found = _recorded(folder)
    if found is None:
        message = (
            f"no doubles are running here (no {doubles.STATE_FILE} in {folder}): nothing to stop"
        )
        if state.as_json:
            print(json.dumps({"stopped": []}))
        err.print(message, markup=False)
        return
    stopped = doubles.stop(found)
    if state.as_json:
        print(json.dumps({"stopped": stopped}))
    else:
        names = ", ".join(stopped) if stopped else "none was still running"
        err.print(f"stopped: {names}; removed {doubles.state_path(folder)}", markup=False)


@doubles_app.command("status")
def doubles_status(directory: DirOption = None) -> None:
    """Whether the doubles run here (exit code 0) or not (1), with their URLs and pids."""
    from promptship.testing import doubles

    folder = _directory(directory)
    found = _recorded(folder)
    if found is None:
        if state.as_json:
            print(json.dumps({"running": False, "processes": {}}))
        else:
            print(
                f"no doubles here (no {doubles.STATE_FILE} in {folder}); start them with "
                "promptship doubles start"
            )
        raise typer.Exit(1)
    info = doubles.describe(found)
    up = all(p["running"] for p in info["processes"].values())
    if state.as_json:
        print(json.dumps({**info, "running": up}))
    else:
        for name, p in info["processes"].items():
            print(
                f"{name:<7} {'running' if p['running'] else 'STOPPED':<8} pid {p['pid']:<8} {p['url']}  log {p['log']}"
            )
        if not up:
            print("some have stopped: promptship doubles start starts them again")
    if not up:
        raise typer.Exit(1)
