"""``promptship import promptfoo FILE``: a promptfoo config's tests as a prompt file's cases.

It writes a new prompt file (``--name``, ``--version``; the system prompt and model taken
from the config) or adds the cases to one (``--into``), and prints what it did: cases
written, tests read, vars kept, cases per assertion type, what it dropped and why to review.
It never overwrites a file and never drops anything silently: what promptship cannot keep
is refused (exit 2, each test and what) unless ``--skip-unsupported`` says to drop it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.markup import escape

from promptship.cli.app import app
from promptship.cli.common import CommandGroup, out, report, state
from promptship.domain.promptfile import Provider
from promptship.errors import BadInput, PromptshipError

if TYPE_CHECKING:
    from promptship.importers.promptfoo import Imported

import_app = CommandGroup(
    help="Import test suites written for other tools into prompt files.", no_args_is_help=True
)
app.add_typer(import_app, name="import")


@import_app.command("promptfoo")
def import_promptfoo(
    file: Annotated[
        Path,
        typer.Argument(
            help="A promptfoo config (promptfooconfig.yaml), or a tests file "
            "(.yaml, .json, .jsonl, .csv)."
        ),
    ],
    into: Annotated[
        Path | None,
        typer.Option("--into", help="Add the cases to this prompt file (kept byte for byte)."),
    ] = None,
    name: Annotated[str | None, typer.Option("--name", help="A new file's prompt name.")] = None,
    version: Annotated[
        str | None, typer.Option("--version", help="A new file's version, e.g. 1.0.0.")
    ] = None,
    model: Annotated[
        str | None, typer.Option("--model", help="Default: the config's first provider's.")
    ] = None,
    provider: Annotated[
        Provider | None, typer.Option("--provider", help="Default: the config's first provider's.")
    ] = None,
    input_var: Annotated[
        str | None,
        typer.Option(
            "--input-var",
            help="The var that is the user's turn (default: the only var, or the one named "
            "input, query, question, prompt or message).",
        ),
    ] = None,
    prompt: Annotated[
        int | None,
        typer.Option("--prompt", help="Which of the config's prompts to take (1 is the first)."),
    ] = None,
    system_prompt: Annotated[
        str | None,
        typer.Option("--system-prompt", help="The system prompt, instead of the config's."),
    ] = None,
    skip_unsupported: Annotated[
        bool,
        typer.Option(
            "--skip-unsupported",
            help="Drop what promptship cannot keep (and count it) instead of refusing.",
        ),
    ] = False,
    out_path: Annotated[
        Path | None, typer.Option("--out", help="Where to write a new file (default NAME.yaml).")
    ] = None,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Print the report; write nothing.")
    ] = False,
) -> None:
    """Turn a promptfoo config's tests into promptship test cases: one case per assert,
    every var kept, nothing dropped without saying so."""
    try:
        if into is not None:
            given = [
                flag
                for flag, value in (
                    ("--name", name),
                    ("--version", version),
                    ("--model", model),
                    ("--provider", provider),
                    ("--prompt", prompt),
                    ("--system-prompt", system_prompt),
                    ("--out", out_path),
                )
                if value is not None
            ]
            if given:
                raise BadInput(
                    f"{', '.join(given)}: for a new prompt file; --into adds the cases to "
                    f"{into}, which keeps its own settings"
                )
            imported, target = _into(file, into, input_var, skip_unsupported, dry_run)
        else:
            imported, target = _new(
                file,
                _NewFile(name, version, model, provider, prompt, system_prompt, out_path),
                input_var,
                skip_unsupported,
                dry_run,
            )
    except PromptshipError as exc:
        report(exc)
        raise typer.Exit(exc.exit_code) from None
    _print(imported, target, into is not None, dry_run)


@dataclass(frozen=True)
class _NewFile:
    name: str | None
    version: str | None
    model: str | None
    provider: Provider | None
    prompt: int | None
    system_prompt: str | None
    out: Path | None


def _new(
    file: Path, new: _NewFile, input_var: str | None, skip: bool, dry_run: bool
) -> tuple[Imported, Path]:
    from promptship.domain.promptfile import check_name, check_version
    from promptship.importers import prompt_writer
    from promptship.importers.promptfoo import Options, import_promptfoo

    if not new.name or not new.version:
        raise BadInput(
            "a new prompt file needs --name and --version",
            hint="e.g. --name translate --version 1.0.0, or --into FILE to add the cases to one",
        )
    check_name(new.name)
    check_version(new.version)
    target = new.out or Path(f"{new.name}.yaml")
    if target.exists():
        raise BadInput(
            f"{target} exists: an import never overwrites",
            hint=f"pass --out NEW.yaml, or --into {target} to add the cases to it",
        )
    options = Options(
        input_var=input_var,
        prompt=new.prompt,
        skip_unsupported=skip,
        system_prompt=new.system_prompt,
    )
    imported = import_promptfoo(file, options)
    model = new.model or imported.parts.model
    if not model:
        raise BadInput(
            "which model? the config's first provider is not Anthropic's or OpenAI's chat API",
            hint="pass --model NAME (and --provider anthropic or openai-compatible)",
        )
    chosen = new.provider or imported.parts.provider or Provider.ANTHROPIC
    text = prompt_writer.new_file_text(
        imported, new.name, new.version, model, chosen.value, str(target)
    )
    if not dry_run:
        prompt_writer.write_new(target, text)
    return imported, target


def _into(
    file: Path, into: Path, input_var: str | None, skip: bool, dry_run: bool
) -> tuple[Imported, Path]:
    from promptship.domain.promptfile import parse_prompt
    from promptship.importers import prompt_writer
    from promptship.importers.promptfoo import Options, import_promptfoo

    try:
        existing = into.read_bytes().decode("utf-8")
    except OSError as exc:
        raise BadInput(f"{into}: cannot read: {exc.strerror or exc}") from None
    except UnicodeDecodeError:
        raise BadInput(f"{into}: not UTF-8 text") from None
    spec = parse_prompt(existing, str(into))
    options = Options(input_var=input_var, skip_unsupported=skip, into=spec, into_name=str(into))
    imported = import_promptfoo(file, options)
    if imported.cases:  # all duplicates: the file stays as it is
        text = prompt_writer.appended_text(existing, spec, imported, str(into))
        if not dry_run:
            prompt_writer.replace(into, text)
    return imported, into


def _print(imported: Imported, target: Path, into: bool, dry_run: bool) -> None:
    summary = {
        "file": str(target),
        "written": not dry_run,
        "added_to_existing": into,
        "cases": len(imported.cases),
        "tests_read": imported.tests_read,
        "input_var": imported.input_var,
        "vars_kept": imported.vars_kept,
        "types": imported.types,
        "skipped": dict(sorted(imported.skipped.items())),
        "duplicates_skipped": imported.duplicates,
        "notes": imported.notes,
    }
    if state.as_json:
        print(json.dumps(summary, indent=2))
        return
    verb = "would add" if dry_run else "added"
    if not into:
        verb = "would write" if dry_run else "wrote"
    where = f"to {target}" if into else str(target)
    out.print(
        f"{verb} {len(imported.cases)} case(s) {'' if into else 'in '}{escape(where)} "
        f"from {imported.tests_read} test(s) of {escape(imported.source)}"
        + (" (dry run: nothing written)" if dry_run else "")
    )
    kept = ", ".join(imported.vars_kept) or "none"
    out.print(f"  input var: {imported.input_var}; vars kept: {escape(kept)}", markup=False)
    out.print("  types: " + ", ".join(f"{k} {n}" for k, n in imported.types.items()), markup=False)
    if imported.skipped:
        skipped = ", ".join(f"{kind} {n}" for kind, n in sorted(imported.skipped.items()))
        out.print(f"  skipped: {skipped}", markup=False)
    if imported.duplicates:
        out.print(f"  duplicates skipped: {imported.duplicates}", markup=False)
    for note in imported.notes:
        out.print(f"  note: {note}", markup=False)
