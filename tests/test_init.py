"""`promptship init`: a newcomer's first command writes a project that loads, pushes and
imports, and never overwrites anything without being told to."""

from __future__ import annotations

import json
import tomllib
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest
from typer.testing import CliRunner

from promptship import scaffold
from promptship.cli import app
from promptship.config import Policy, load_policy
from promptship.domain.promptfile import load_prompt_file
from promptship.domain.safe_load import load_yaml

ROOT = Path(__file__).parent.parent


@pytest.fixture
def here(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("PROMPTSHIP_USER", raising=False)
    monkeypatch.delenv("PROMPTSHIP_CONFIG", raising=False)
    monkeypatch.setenv("PROMPTSHIP_DATABASE_URL", f"sqlite+aiosqlite:///{tmp_path / 'p.db'}")
    yield tmp_path


def run(*args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(app, list(args))
    return result.exit_code, result.stdout, result.stderr


def test_init_writes_a_project_that_loads_and_says_what_comes_next(here: Path) -> None:
    code, stdout, _ = run("init")
    assert code == 0
    assert "wrote: promptship.yaml, prompts/customer-support.yaml, traffic-sample.jsonl" in stdout
    assert "next:\n  promptship push prompts/ --as U09\n" in stdout
    assert "promptship promote customer-support 2.1.0 staging --as U09" in stdout
    assert "  promptship serve" in stdout

    policy = load_policy(here / "promptship.yaml")  # the real loader: every key accepted
    assert policy.channel == "C0PROMPTOPS"
    assert policy.roles.approvers == ["U01", "U02"] and policy.roles.oncall == ["U03"]
    assert policy.environments.staging_policy.min_pass_rate == 0.8
    production = policy.environments.production_policy
    assert production.approvals == 2 and production.soak == timedelta(hours=24)
    assert production.soak_interval == timedelta(hours=1)
    assert production.max_divergence == 0.10 and production.soak_min_samples == 20
    assert policy.breakglass.approvals == 3
    assert policy.local_decisions is True
    text = (here / "promptship.yaml").read_text()
    assert "soak: 24h" in text
    assert "PLACEHOLDERS" in text and "SINGLE-PERSON TRIAL ONLY" in text
    assert "Security model" in text
    # every key the file sets is one the policy model defines (no key the loader ignores)
    raw = load_yaml(text, "promptship.yaml")
    assert set(raw) <= set(Policy.model_fields)

    spec = load_prompt_file(here / "prompts" / "customer-support.yaml")
    assert (spec.name, spec.version, len(spec.tests)) == ("customer-support", "2.1.0", 5)
    samples = [
        json.loads(line) for line in (here / "traffic-sample.jsonl").read_text().splitlines()
    ]
    assert len(samples) >= production.soak_min_samples
    assert {(s["prompt"], s["environment"]) for s in samples} == {
        ("customer-support", "production")
    }


def test_the_example_prompt_is_the_repositorys_example(here: Path) -> None:
    shipped = scaffold.example_prompt()
    assert shipped == (ROOT / "examples" / "prompts" / "customer-support.yaml").read_text()
    # and it ships in the package: package data lists the scaffold's files
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    data = pyproject["tool"]["setuptools"]["package-data"]["promptship"]
    assert {"scaffold/*.yaml", "scaffold/*.jsonl"} <= set(data)


def test_the_written_project_pushes_and_imports_its_traffic_sample(here: Path) -> None:
    assert run("init")[0] == 0
    code, stdout, _ = run("push", "prompts/", "--as", "U09")
    assert code == 0, stdout
    assert "customer-support 2.1.0" in stdout
    code, stdout, stderr = run("traffic", "import", "traffic-sample.jsonl")
    assert code == 0, stderr
    assert "stored 24 traffic sample(s)" in stdout


def test_a_short_soak_comes_with_a_fitting_interval(here: Path) -> None:
    code, stdout, _ = run("init", "--soak", "30s", "--json")
    assert code == 0
    report = json.loads(stdout)
    assert (report["soak"], report["soak_interval"]) == ("30s", "10s")
    production = load_policy(here / "promptship.yaml").environments.production_policy
    assert (production.soak, production.soak_interval) == (
        timedelta(seconds=30),
        timedelta(seconds=10),
    )
    assert "shortened for a trial" in (here / "promptship.yaml").read_text()
    assert scaffold.soak_interval(timedelta(hours=2)) == timedelta(minutes=40)
    assert scaffold.soak_interval(timedelta(days=3)) == timedelta(hours=1)


@pytest.mark.parametrize(
    ("soak", "message"),
    [("1s", "too short"), ("soon", "not a duration"), ("-5", "not a duration")],
)
def test_a_bad_soak_is_refused(here: Path, soak: str, message: str) -> None:
    code, _, stderr = run("init", "--soak", soak)
    assert code == 2 and message in stderr
    assert not (here / "promptship.yaml").exists()


def test_an_existing_policy_is_never_overwritten_without_force(here: Path) -> None:
    (here / "promptship.yaml").write_text("channel: C0MINE\n")
    code, _, stderr = run("init")
    assert code == 2
    assert "promptship.yaml already exists: init never overwrites" in stderr
    assert "--force" in stderr and "Traceback" not in stderr
    assert (here / "promptship.yaml").read_text() == "channel: C0MINE\n"
    assert not (here / "prompts").exists()

    code, stdout, _ = run("init", "--force", "--json")
    assert code == 0 and "promptship.yaml" in json.loads(stdout)["written"]
    assert load_policy(here / "promptship.yaml").local_decisions is True


def test_a_folder_with_other_files_is_refused_unless_it_is_a_repository(here: Path) -> None:
    (here / "notes.txt").write_text("mine")
    code, _, stderr = run("init")
    assert code == 2
    assert "is not empty (notes.txt) and not a git repository" in stderr

    (here / ".git").mkdir()  # a project adopting promptship: written beside its files
    code, _, _ = run("init")
    assert code == 0 and (here / "promptship.yaml").exists()
    assert (here / "notes.txt").read_text() == "mine"


def test_hidden_entries_do_not_make_a_folder_non_empty(here: Path) -> None:
    (here / ".venv").mkdir()
    assert run("init")[0] == 0


def test_a_file_for_dir_is_bad_input(here: Path) -> None:
    (here / "afile").write_text("x")
    code, stdout, _ = run("init", "afile", "--json")
    assert code == 2
    assert (
        json.loads(stdout)["message"]
        == "afile is a file, not a folder: name a folder to write into"
    )


def test_dir_is_made_and_the_next_commands_start_there(here: Path) -> None:
    code, stdout, _ = run("init", "trial/one", "--as", "U07")
    assert code == 0
    assert (here / "trial" / "one" / "promptship.yaml").exists()
    assert "wrote in trial/one:" in stdout
    assert "  cd trial/one && promptship push prompts/ --as U07\n" in stdout


def test_with_promptship_user_set_the_next_commands_need_no_as(
    here: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PROMPTSHIP_USER", "U09")
    code, stdout, _ = run("init")
    assert code == 0 and "  promptship push prompts/\n" in stdout


def test_gitignore_lines_are_appended_once(here: Path) -> None:
    (here / ".git").mkdir()
    (here / ".gitignore").write_text("node_modules/\n*.audit-key")  # no final newline
    code, stdout, _ = run("init")
    assert code == 0
    lines = (here / ".gitignore").read_text().splitlines()
    assert lines[:2] == ["node_modules/", "*.audit-key"]
    for entry in scaffold.GITIGNORE_LINES:
        assert lines.count(entry) == 1, entry
    assert ".gitignore: added promptship.db promptship.db-wal" in stdout

    (here / "promptship.yaml").unlink()
    before = (here / ".gitignore").read_text()
    code, stdout, _ = run("init", "--force")
    assert code == 0
    assert (here / ".gitignore").read_text() == before  # nothing missing: left alone
    assert ".gitignore" not in stdout.split("\n")[0]
