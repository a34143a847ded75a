"""``promptship init [DIR]``: a trial project, ready to push.

It writes a commented ``promptship.yaml`` (a single-person trial policy), an example prompt
with a passing suite (``prompts/customer-support.yaml``), a sample of production traffic
(``traffic-sample.jsonl``) and the ``.gitignore`` lines for promptship's local state.

It never overwrites without ``--force``: a file it would write that exists already is
refused (exit code 2, naming it). DIR may be missing (it is made), empty (hidden entries
such as ``.git`` or ``.venv`` do not count) or a git repository's root (a project adopting
promptship); any other folder with files in it is refused unless ``--force`` says to write
beside them.
"""

from __future__ import annotations

import json
import os
from datetime import timedelta
from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape

from promptship import scaffold
from promptship.cli.app import app
from promptship.cli.common import err, out, state
from promptship.durations import format_duration, parse_duration
from promptship.errors import BadInput


class Refused(Exception):
    """Bad input for init: the message is shown and the command exits 2."""


@app.command()
def init(
    directory: Annotated[
        Path, typer.Argument(help="Where to write the project (made if missing).")
    ] = Path("."),
    soak: Annotated[
        str,
        typer.Option(
            help="The staging soak to write, e.g. 30s for a trial (with a fitting interval)."
        ),
    ] = "24h",
    force: Annotated[
        bool,
        typer.Option(
            "--force", help="Overwrite the files init writes, and write into a non-empty folder."
        ),
    ] = False,
) -> None:
    """Start a project: a commented trial policy, an example prompt with a passing suite, a
    traffic sample, and .gitignore lines; prints the next three commands."""
    try:
        length = _soak(soak)
        written, added = _write(directory, length, force)
    except Refused as exc:
        if state.as_json:
            print(json.dumps({"error": "bad-input", "message": str(exc), "hint": None}))
        else:
            err.print(f"[bold red]error:[/] {escape(str(exc))}")
        raise typer.Exit(2) from None
    steps = next_steps(directory)
    if state.as_json:
        print(
            json.dumps(
                {
                    "directory": str(directory),
                    "written": written,
                    "gitignore_added": added,
                    "soak": scaffold.spell(length),
                    "soak_interval": scaffold.spell(scaffold.soak_interval(length)),
                    "next": steps,
                },
                indent=2,
            )
        )
        return
    where = "" if _is_here(directory) else f" in {directory}"
    out.print(f"wrote{escape(where)}: {', '.join(written)}", markup=False)
    if added:
        out.print(f".gitignore: added {' '.join(added)}", markup=False)
    out.print(
        f"the policy is a single-person trial (local_decisions: true, soak "
        f"{scaffold.spell(length)}); replace the placeholder people U01-U03 with your team's",
        markup=False,
    )
    out.print("next:", markup=False)
    for step in steps:
        out.print(f"  {step}", markup=False)


def next_steps(directory: Path) -> list[str]:
    """The three commands that follow, as they would be typed from the current folder."""
    if state.actor:
        who = f" --as {state.actor}"
    else:  # PROMPTSHIP_USER names the actor already; else a placeholder like the roles'
        who = "" if os.environ.get("PROMPTSHIP_USER", "").strip() else " --as U09"
    prefix = "" if _is_here(directory) else f"cd {_quoted(directory)} && "
    return [
        f"{prefix}promptship push prompts/{who}",
        f"promptship promote {scaffold.EXAMPLE_NAME} {scaffold.EXAMPLE_VERSION} staging{who}"
        "   # runs its suite: needs ANTHROPIC_API_KEY, or offline: "
        'eval "$(promptship doubles start)" first',
        "promptship serve   # soaks advance while it runs",
    ]


def _soak(text: str) -> timedelta:
    try:
        length = parse_duration(text)
    except BadInput as exc:
        raise Refused(f"--soak: {exc.message}; {exc.hint or 'e.g. 30s or 24h'}") from None
    if length < scaffold.MIN_SOAK:
        raise Refused(
            f"--soak: {text} is too short; a soak runs at least "
            f"{format_duration(scaffold.MIN_SOAK)} (three cycles of a second)"
        )
    return length


def _write(directory: Path, soak: timedelta, force: bool) -> tuple[list[str], list[str]]:
    """Write the project; return the files written and the .gitignore lines added."""
    files = {
        scaffold.POLICY_FILE: scaffold.policy_text(soak),
        scaffold.EXAMPLE_PROMPT: scaffold.example_prompt(),
        scaffold.TRAFFIC_SAMPLE: scaffold.traffic_sample(),
    }
    from promptship.config import parse_policy  # the server extra's (pydantic-settings)

    parse_policy(files[scaffold.POLICY_FILE])  # what init writes always loads
    _check_directory(directory, list(files), force)
    try:
        directory.mkdir(parents=True, exist_ok=True)
        for name, text in files.items():
            path = directory / name
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text, encoding="utf-8")
        ignore = directory / ".gitignore"
        existing = ignore.read_text(encoding="utf-8") if ignore.exists() else None
        merged, added = scaffold.merge_gitignore(existing)
        if added:
            ignore.write_text(merged, encoding="utf-8")
    except OSError as exc:
        where = exc.filename or directory
        raise Refused(f"{where}: cannot write: {exc.strerror or exc}") from None
    except UnicodeDecodeError:
        raise Refused(f"{directory / '.gitignore'}: not UTF-8 text; fix or remove it") from None
    written = list(files)
    if added:
        written.append(".gitignore")
    return written, added


def _check_directory(directory: Path, names: list[str], force: bool) -> None:
    if directory.exists() and not directory.is_dir():
        raise Refused(f"{directory} is a file, not a folder: name a folder to write into")
    if (directory / ".gitignore").is_dir():
        raise Refused(f"{directory / '.gitignore'} is a folder, not a file")
    if not directory.exists() or force:
        return
    clashes = [name for name in names if (directory / name).exists()]
    if clashes:
        listed = ", ".join(str(directory / name) for name in clashes)
        one = len(clashes) == 1
        raise Refused(
            f"{listed} already exist{'s' if one else ''}: init never overwrites (keep "
            f"{'it' if one else 'them'}, or pass --force to replace {'it' if one else 'them'} "
            "with init's version)"
        )
    visible = sorted(p.name for p in directory.iterdir() if not p.name.startswith("."))
    if visible and not (directory / ".git").exists():
        shown = ", ".join(visible[:3]) + (", …" if len(visible) > 3 else "")
        raise Refused(
            f"{directory} is not empty ({shown}) and not a git repository: run init in an "
            "empty folder or a repository's root, or pass --force to write beside those files"
        )


def _is_here(directory: Path) -> bool:
    try:
        return directory.resolve() == Path.cwd().resolve()
    except OSError:
        return False


def _quoted(directory: Path) -> str:
    text = os.fspath(directory)
    safe = all(c.isalnum() or c in "/._-~" for c in text)
    return text if safe else "'" + text.replace("'", "'\\''") + "'"
