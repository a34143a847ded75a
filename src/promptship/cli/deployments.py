"""The per-environment deployment file: export it, or check a committed one (CI)."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated, Any

import typer
import yaml
from rich.markup import escape

from promptship.cli.app import app
from promptship.cli.common import err, out, run_core, state
from promptship.cli.remote import ServerOption, TokenOption, run_remote
from promptship.domain.safe_load import load_yaml
from promptship.errors import BadInput


@app.command()
def export(
    output: Annotated[
        str, typer.Argument(help="File to write (or to compare with --check), or - for stdout.")
    ] = "deployment.yaml",
    check: Annotated[
        bool,
        typer.Option("--check", help="Compare the file with the live state; exit 1 if it differs."),
    ] = False,
    server: ServerOption = None,
    token: TokenOption = None,
) -> None:
    """Write the per-environment deployment file (version, model, who, when); with --check,
    fail when the committed file no longer matches what runs (for CI)."""

    data = (
        run_remote(server, token, lambda client: client.deployments())
        if server
        else run_core(lambda core: core.deployment_file())
    )
    text = yaml.safe_dump(data, sort_keys=False, allow_unicode=True)
    if check:
        path = Path(output)
        try:
            committed = load_yaml(path.read_text(encoding="utf-8"), output) or {}
        except OSError as exc:
            err.print(f"[bold red]error:[/] {escape(output)}: cannot read: {exc.strerror}")
            raise typer.Exit(2) from None
        except BadInput as exc:
            err.print(f"[bold red]error:[/] {escape(exc.message)}")
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
                lines.append(f"{name} {env}: live runs {b['prompt_version']}, the file has nothing")
            elif b is None and isinstance(a, dict):
                lines.append(f"{name} {env}: the file says {a.get('prompt_version')}, nothing runs there")
            elif not isinstance(a, dict) or b is None:
                lines.append(f"{name} {env}: not a mapping")
            else:
                for key in ("prompt_version", "content_hash", "model", "temperature", "max_tokens"):
                    if a.get(key) != b.get(key):
                        lines.append(
                            f"{name} {env}: {key} is {b.get(key)!r} live, {a.get(key)!r} in the file"
                        )
    return lines
