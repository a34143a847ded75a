"""``promptship traffic``: real queries for soaks to replay."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.markup import escape

from promptship.cli.app import app
from promptship.cli.common import CommandGroup, out, run_core, state
from promptship.domain.safe_load import load_json
from promptship.errors import BadInput, PromptshipError

if TYPE_CHECKING:
    from promptship.services import Promptship

traffic_app = CommandGroup(help="Real queries for soaks to replay.", no_args_is_help=True)
app.add_typer(traffic_app, name="traffic")


@traffic_app.command("import")
def traffic_import(
    file: Annotated[
        Path,
        typer.Argument(help="JSONL: {prompt, environment, input, output?, version?, at?, vars?}"),
    ],
) -> None:
    """Store production queries from a JSONL file, 1,000 a batch; a bad line stops the
    import before its batch is stored and names the line."""
    from promptship.services.traffic import MAX_BATCH

    async def go(core: Promptship) -> int:
        try:
            lines = file.read_text(encoding="utf-8").splitlines()
        except OSError as exc:
            raise BadInput(f"{file}: cannot read: {exc.strerror}") from None
        samples: list[Any] = []
        numbers: list[int] = []  # the file line of each sample
        for number, line in enumerate(lines, 1):
            if line.strip():
                samples.append(load_json(line, f"{file}:{number}"))
                numbers.append(number)
        stored = 0
        for start in range(0, len(samples), MAX_BATCH):
            try:
                stored += (await core.ingest_traffic(samples[start : start + MAX_BATCH])).stored
            except PromptshipError as exc:
                before = f"; {stored} stored before it" if stored else ""
                # "sample N: ..." counts within the batch: name the file line instead
                one = re.fullmatch(r"sample (\d+): (.*)", exc.message, re.DOTALL)
                if one and start + int(one[1]) <= len(numbers):
                    where, what = f"{file}:{numbers[start + int(one[1]) - 1]}", one[2]
                else:
                    where, what = (
                        f"{file}: in the batch starting at sample {start + 1}",
                        exc.message,
                    )
                raise BadInput(f"{where}: {what}{before}", hint=exc.hint) from None
        return stored

    stored = run_core(go)
    if state.as_json:
        print(json.dumps({"stored": stored}))
    else:
        out.print(f"stored {stored} traffic sample(s) from {escape(str(file))}")
