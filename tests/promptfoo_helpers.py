"""What the ``promptship import promptfoo`` tests share: the fixtures' configs, the
command run in-process, a config written from parts."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

from typer.testing import CliRunner

from promptship.cli import app
from promptship.domain.promptfile import PromptSpec, load_prompt_file

FIXTURES = Path(__file__).parent / "fixtures" / "promptfoo"
#: promptfoo's assertion types and what promptship calls them
TYPES = {
    "equals": "exact",
    "contains": "contains",
    "icontains": "icontains",
    "not-contains": "not-contains",
    "starts-with": "starts-with",
    "llm-rubric": "llm-rubric",
    "icontains-any": "icontains-any",
    "similar": "score",
}


def run(*args: str | Path) -> tuple[int, str, str]:
    done = CliRunner().invoke(app, ["import", "promptfoo", *map(str, args)])
    return done.exit_code, done.stdout, done.stderr


def copy(name: str, tmp_path: Path) -> Path:
    """A fixture's folder, copied where the test may write beside it."""
    shutil.copytree(FIXTURES / name, tmp_path / name)
    return tmp_path / name / "promptfooconfig.yaml"


def new_file(name: str, tmp_path: Path, *extra: str) -> PromptSpec:
    config = copy(name, tmp_path)
    out = tmp_path / "out.yaml"
    code, stdout, stderr = run(
        config, "--name", "imported", "--version", "1.0.0", "--out", out, *extra
    )
    assert code == 0, stderr
    assert f"wrote {len(load_prompt_file(out).tests)} case(s) in {out}" in stdout
    return load_prompt_file(out)  # it pushes: parse_prompt takes it


def config_with(tmp_path: Path, asserts: Any, **test: Any) -> Path:
    config = tmp_path / "promptfooconfig.yaml"
    document = {
        "prompts": ["Answer the customer."],
        "providers": ["anthropic:messages:claude-haiku-4-5"],
        "tests": [{"vars": {"input": "hi"}, "assert": asserts, **test}],
    }
    config.write_text(json.dumps(document))
    return config
