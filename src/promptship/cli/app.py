"""The root ``promptship`` command and its global options."""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version
from typing import Annotated

import typer

from promptship.cli.common import AsOption, CommandGroup, JsonOption, out, state

app = CommandGroup(
    name="promptship",
    help="Ship LLM prompts like software: dev → staging → production, with gates, approvals and rollback.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


def _print_version(asked: bool) -> None:
    if asked:
        try:
            number = version("promptship")
        except PackageNotFoundError:
            number = "unknown (not installed)"
        out.print(f"promptship {number}", markup=False)
        raise typer.Exit()


@app.callback()
def main_options(
    as_user: AsOption = None,
    as_json: JsonOption = False,
    show_version: Annotated[
        bool,
        typer.Option(
            "--version", is_eager=True, callback=_print_version, help="Print the version and exit."
        ),
    ] = False,
) -> None:
    # every invocation starts from the options given before the command; the command's own
    # --as/--json are merged in when it runs
    state.actor = as_user
    state.as_json = as_json
