"""The command line, as a user runs it: exit codes, messages, --json, files."""

from __future__ import annotations

import asyncio
import json
import re
import signal
import threading
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from promptship import services
from promptship.cli import app, common
from promptship.clock import Clock, ManualClock, SystemClock
from promptship.services import Promptship
from promptship.services.views import RunDetail
from promptship.store.db import Database
from promptship.testing.model_double import ModelDouble
from tests.conftest import TEST_POLICY, make_policy, prompt_yaml
from tests.helpers import case_results, slack

EXAMPLES = Path(__file__).parent.parent / "examples" / "prompts"


@pytest.fixture
def env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    url = f"sqlite+aiosqlite:///{tmp_path / 'cli.db'}"
    policy = tmp_path / "promptship.yaml"
    policy.write_text(TEST_POLICY)
    monkeypatch.setenv("PROMPTSHIP_DATABASE_URL", url)
    monkeypatch.setenv("PROMPTSHIP_CONFIG", str(policy))
    monkeypatch.delenv("PROMPTSHIP_USER", raising=False)
    monkeypatch.chdir(tmp_path)
    yield tmp_path


def run(*args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(app, list(args))
    return result.exit_code, result.stdout, result.stderr


def core_call(tmp: Path, use, clock: Clock | None = None):  # type: ignore[no-untyped-def]
    async def go():  # type: ignore[no-untyped-def]
        db = Database(f"sqlite+aiosqlite:///{tmp / 'cli.db'}")
        try:
            return await use(Promptship(db, make_policy(), clock or SystemClock()))
        finally:
            await db.dispose()

    return asyncio.run(go())


def test_push_a_directory_then_again_is_a_no_op(env: Path) -> None:
    code, out, _ = run("--as", "U09", "push", str(EXAMPLES))
    assert code == 0
    assert "registered customer-support 2.1.0" in out and "registered sql-assistant 1.4.0" in out
    code, out, _ = run("--as", "U09", "push", str(EXAMPLES))
    assert code == 0 and out.count("unchanged") == 2


def test_a_bad_file_is_refused_before_anything_is_pushed(env: Path) -> None:
    good = env / "good.yaml"
    good.write_text(prompt_yaml("good-prompt", "1.0.0"))
    bad = env / "bad.yaml"
    bad.write_text(prompt_yaml("bad-prompt", "1.0.0", temprature=0.2))
    code, _, err = run("--as", "U09", "push", str(good), str(bad))
    assert code == 2
    assert "bad.yaml: temprature: unknown key" in err
    code, out, _ = run("--json", "list")
    assert json.loads(out) == []


def test_pushing_changed_content_under_the_same_version_exits_2(env: Path) -> None:
    (env / "p.yaml").write_text(prompt_yaml("p", "1.0.0"))
    assert run("--as", "U09", "push", "p.yaml")[0] == 0
    (env / "p.yaml").write_text(prompt_yaml("p", "1.0.0", system_prompt="changed"))
    code, _, err = run("--as", "U09", "push", "p.yaml")
    assert (
        code == 2 and "already registered with other content" in err and "bump the version" in err
    )


def test_missing_actor_is_bad_input(env: Path) -> None:
    code, _, err = run("push", str(EXAMPLES))
    assert code == 2 and "pass --as USER or set PROMPTSHIP_USER" in err


def test_gate_refusal_exits_1_with_the_reason(env: Path) -> None:
    run("--as", "U09", "push", str(EXAMPLES))
    code, _, err = run("--as", "U04", "promote", "customer-support", "2.1.0", "production")
    assert code == 1
    assert "customer-support 2.1.0 is draft: it cannot move to production by promote" in err
    assert "break-glass" in err


def test_full_promotion_by_cli_with_json(env: Path) -> None:
    # a single-person trial: the local CLI may decide (see tests/test_identity.py for without)
    (env / "promptship.yaml").write_text(TEST_POLICY + "local_decisions: true\n")
    run("--as", "U09", "push", str(EXAMPLES))

    async def tested(core: Promptship) -> None:
        await core.record_validation_run("customer-support", "2.1.0", case_results(5), slack("U04"))

    core_call(env, tested)
    code, out, _ = run("--json", "--as", "U04", "promote", "customer-support", "2.1.0", "staging")
    assert code == 0 and json.loads(out)["state"] == "promoted"
    code, out, _ = run(
        "--json",
        "--as",
        "U04",
        "promote",
        "customer-support",
        "2.1.0",
        "production",
        "--reason",
        "Q3 tone",
    )
    request = json.loads(out)
    assert request["state"] == "open" and request["required_approvals"] == 2
    code, _, err = run("--as", "U04", "approve", request["code"])
    assert code == 1 and "you requested" in err
    code, out, _ = run("--as", "U01", "approve", request["code"], "--comment", "ok")
    assert code == 0 and "1/2 approvals" in out
    code, out, _ = run("--as", "U02", "approve", str(request["id"]))
    assert code == 0 and "is now in production" in out
    code, out, _ = run("--json", "status", "customer-support")
    envs = {d["environment"]: d["version"] for d in json.loads(out)[0]["environments"]}
    assert envs == {"staging": "2.1.0", "production": "2.1.0"}

    code, out, _ = run("export", "deployment.yaml")
    assert code == 0 and "wrote deployment.yaml (1 prompt)" in out
    exported = yaml.safe_load((env / "deployment.yaml").read_text())
    prod = exported["customer-support"]["production"]
    assert prod["prompt_version"] == "2.1.0" and prod["model"] == "claude-sonnet-4-5"
    assert prod["temperature"] == 0.3 and prod["updated_by"] == "U02" and prod["promoted_at"]

    code, out, _ = run("export", "deployment.yaml", "--check")
    assert code == 0 and "matches the live state" in out

    code, out, _ = run("history", "customer-support", "--env", "production")
    assert code == 0 and "deployment.changed" in out

    code, out, _ = run("--as", "U08", "rollback", "customer-support", "production")
    assert code == 1

    # the committed file and the live state part ways: CI's check fails and says where
    exported["customer-support"]["production"]["prompt_version"] = "9.9.9"
    del exported["customer-support"]["staging"]
    (env / "deployment.yaml").write_text(yaml.safe_dump(exported))
    code, _, err = run("export", "deployment.yaml", "--check")
    assert "customer-support staging: live runs 2.1.0, the file has nothing" in err
    assert code == 1 and "differs from the live state" in err
    assert "customer-support production: prompt_version is '2.1.0' live, '9.9.9' in the file" in err
    code, _, err = run("export", "missing.yaml", "--check")
    assert code == 2 and "missing.yaml: cannot read" in err


def test_reject_needs_a_reason_and_bad_request_ids_exit_2(env: Path) -> None:
    code, _, err = run("--as", "U01", "approve", "req-abc")
    assert code == 2 and "request ids look like req-42" in err
    code, _, err = run("--as", "U01", "reject", "req-1")
    assert code == 2 and "--reason" in err
    code, _, err = run("--as", "U01", "approve", "req-77")
    assert code == 2 and "no promotion request req-77" in err


def test_show_and_diff(env: Path) -> None:
    (env / "a.yaml").write_text(prompt_yaml("p", "1.0.0", system_prompt="Be brief.\nBe kind.\n"))
    (env / "b.yaml").write_text(
        prompt_yaml("p", "1.1.0", system_prompt="Be brief.\nBe exact.\n", temperature=0.2)
    )
    run("--as", "U09", "push", "a.yaml", "b.yaml")
    code, out, _ = run("show", "p")
    assert code == 0 and "p 1.1.0" in out and "Be exact." in out
    code, out, _ = run("diff", "p", "1.0.0", "1.1.0")
    assert (
        code == 0 and "-Be kind." in out and "+Be exact." in out and "temperature: 0.7 → 0.2" in out
    )
    code, out, _ = run("--json", "diff", "p", "1.0.0", "1.1.0")
    assert json.loads(out)["settings"] == [{"key": "temperature", "old": 0.7, "new": 0.2}]


def test_audit_verify_and_export(env: Path) -> None:
    run("--as", "U09", "push", str(EXAMPLES))
    code, out, _ = run("audit", "verify")
    assert code == 0 and "2 events verified" in out
    code, out, _ = run("audit", "export", "--format", "jsonl")
    lines = [json.loads(line) for line in out.splitlines()]
    assert [e["seq"] for e in lines] == [1, 2] and lines[1]["prev_hash"] == lines[0]["hash"]
    code, out, _ = run("audit", "export", "--format", "csv", "-o", "audit.csv")
    assert code == 0 and (env / "audit.csv").read_text().startswith("seq,at,actor,action")
    code, _, err = run("audit", "export", "--format", "xml")
    assert code == 2 and "jsonl" in err

    import sqlite3

    with sqlite3.connect(env / "cli.db") as conn:
        conn.execute("UPDATE audit_events SET actor = 'someone-else' WHERE seq = 1")
    code, _, err = run("audit", "verify")
    assert code == 1 and "event 1 was edited" in err


def test_db_upgrade_and_a_bad_policy_file(env: Path) -> None:
    code, out, _ = run("db", "upgrade")
    head = Database(f"sqlite+aiosqlite:///{env / 'cli.db'}").head_revision()
    assert code == 0 and f"database at revision {head}" in out
    (env / "promptship.yaml").write_text("roles:\n  approvers: U01\n")
    code, _, err = run("status")
    assert code == 2 and "promptship.yaml: roles.approvers" in err


@pytest.fixture
def model(monkeypatch: pytest.MonkeyPatch) -> Iterator[ModelDouble]:
    answers = {
        "How many projects can I have on the Team plan?": "The Team plan has 25 projects.",
        "I was double charged, can I get my money back?": "Billing reviews it within 2 business days.",
        "What's my password? I forgot it.": "Please open a ticket at support.acme.example.",
        "How do I move my projects to another region?": "Open a ticket and support will migrate your projects.",
    }
    with ModelDouble(responder=lambda system, user, m: answers.get(user, "no idea")) as server:
        monkeypatch.setenv("ANTHROPIC_API_KEY", "test-key")
        monkeypatch.setenv("ANTHROPIC_BASE_URL", server.url)
        yield server


def test_test_command_runs_the_suite_and_reports(env: Path, model: ModelDouble) -> None:
    run("--as", "U09", "push", str(EXAMPLES))
    code, out, _ = run("--as", "U04", "test", "customer-support", "2.1.0")
    assert code == 0, out
    assert (
        "pass rate 100% (5 passed, 0 failed, 0 errored)" in out and "passes the staging gate" in out
    )
    assert model.request_count == 4  # 5 cases, 4 inputs: the two refund cases share one answer

    model.responder = lambda system, user, m: "no idea"
    code, out, _ = run("--json", "--as", "U04", "test", "customer-support", "2.1.0")
    result = json.loads(out)
    assert code == 1 and result["state"] == "failed" and result["passed"] == 1  # not-contains holds
    assert {r["type"] for r in result["results"] if not r["passed"]} == {
        "contains",
        "regex",
        "score",
    }


def test_promote_to_staging_runs_the_tests_first(env: Path, model: ModelDouble) -> None:
    run("--as", "U09", "push", str(EXAMPLES))
    code, out, err = run("--as", "U04", "promote", "customer-support", "2.1.0", "staging")
    assert code == 0, err
    assert "promoted" in out
    code, out, _ = run("--json", "status", "customer-support")
    assert {d["environment"]: d["version"] for d in json.loads(out)[0]["environments"]} == {
        "staging": "2.1.0"
    }


def test_promote_without_a_provider_key_fails_with_the_reason(
    env: Path, model: ModelDouble, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("ANTHROPIC_API_KEY")
    run("--as", "U09", "push", str(EXAMPLES))
    code, out, _ = run("--as", "U04", "promote", "customer-support", "2.1.0", "staging")
    assert code == 1
    assert "failed" in out and "the test run could not start: ANTHROPIC_API_KEY is not set" in out
    code, out, _ = run("--json", "show", "customer-support", "2.1.0")
    assert "ANTHROPIC_API_KEY is not set" in json.loads(out)["latest_run"]["error"]


def test_traffic_import_stores_batches_and_names_a_bad_line(env: Path) -> None:
    run("--as", "U09", "push", str(EXAMPLES))
    name = yaml.safe_load(next(EXAMPLES.glob("*.yaml")).read_text())["name"]
    good = [
        json.dumps({"prompt": name, "environment": "production", "input": f"q{i}"})
        for i in range(1500)
    ]
    (env / "traffic.jsonl").write_text("\n".join(good) + "\n")
    code, out, _ = run("traffic", "import", "traffic.jsonl")
    assert code == 0 and "stored 1500 traffic sample(s)" in out

    (env / "bad.jsonl").write_text(good[0] + "\n{not json\n")
    code, _, err = run("traffic", "import", "bad.jsonl")
    assert code == 2 and "bad.jsonl:2: not JSON" in err
    too_long = json.dumps({"prompt": name, "environment": "production", "input": "x" * 40_000})
    (env / "long.jsonl").write_text(too_long + "\n")
    code, _, err = run("traffic", "import", "long.jsonl")
    assert code == 2 and "input is 40,000 characters; the limit is 32,000" in err
    code, _, err = run("traffic", "import", "missing.jsonl")
    assert code == 2 and "missing.jsonl: cannot read" in err
    with_vars = json.dumps(
        {"prompt": name, "environment": "production", "input": "q", "vars": {"plan": "pro"}}
    )
    bad_vars = json.dumps(
        {"prompt": name, "environment": "production", "input": "q", "vars": {"the plan": 1}}
    )
    (env / "vars.jsonl").write_text(f"{with_vars}\n\n{bad_vars}\n")
    code, _, err = run("traffic", "import", "vars.jsonl")
    assert code == 2, err
    assert "vars.jsonl:3: vars: 'the plan' is not a variable name" in " ".join(err.split())
    (env / "vars.jsonl").write_text(f"{with_vars}\n")
    code, out, _ = run("traffic", "import", "vars.jsonl")
    assert code == 0 and "stored 1 traffic sample(s)" in out


def test_soak_shows_progress(env: Path) -> None:
    run("--as", "U09", "push", str(EXAMPLES))
    name = yaml.safe_load(next(EXAMPLES.glob("*.yaml")).read_text())["name"]
    code, out, _ = run("soak", name)
    assert code == 0 and "no soaks yet" in out
    code, _, err = run("soak", "nope")
    assert code == 2 and "no prompt named 'nope'" in err


def test_global_options_work_before_or_after_the_command(env: Path) -> None:
    code, out, err = run("--as", "U09", "push", str(EXAMPLES), "--json")
    assert code == 0, err
    assert {r["name"] for r in json.loads(out)} == {"customer-support", "sql-assistant"}
    code, before, _ = run("--json", "list")
    assert code == 0
    code, after, _ = run("list", "--json")
    assert code == 0 and json.loads(after) == json.loads(before)
    assert {p["name"] for p in json.loads(after)} == {"customer-support", "sql-assistant"}

    (env / "p.yaml").write_text(prompt_yaml("p", "1.0.0"))
    code, _, err = run("push", "p.yaml", "--as", "U07")
    assert code == 0, err
    code, out, _ = run("history", "p", "--json")
    assert [e["actor"] for e in json.loads(out)["events"]] == ["U07"]
    code, _, err = run("audit", "verify", "--json")
    assert code == 0 and err == ""


def test_every_command_lists_the_global_options_in_its_help(env: Path) -> None:
    for command in (["list"], ["push"], ["audit", "verify"], ["db", "upgrade"], ["serve"]):
        code, out, _ = run(*command, "--help")
        assert code == 0 and "--json" in out and "--as" in out, command


def test_version(env: Path) -> None:
    from importlib.metadata import version

    code, out, _ = run("--version")
    assert code == 0 and out.strip() == f"promptship {version('promptship')}"


@pytest.mark.parametrize(("failed", "exit_code", "outcome"), [(0, 0, "promoted"), (4, 1, "failed")])
def test_promote_follows_a_run_another_worker_took_and_reports_its_outcome(
    env: Path, monkeypatch: pytest.MonkeyPatch, failed: int, exit_code: int, outcome: str
) -> None:
    run("--as", "U09", "push", str(EXAMPLES))
    code, out, err = run(
        "--as", "U04", "promote", "customer-support", "2.1.0", "staging", "--no-wait"
    )
    assert code == 0, err
    queued = re.search(r"tests queued as run (\d+)", out)
    assert queued and "open" in out
    run_id = int(queued.group(1))
    # the server's worker claims it first
    assert core_call(env, lambda core: core.claim_validation_run("server-1", run_id)) == run_id

    seen_running = threading.Event()
    read_run = Promptship.validation_run

    async def watched(self: Promptship, wanted: int) -> RunDetail:
        detail = await read_run(self, wanted)
        if detail.state == "running":
            seen_running.set()
        return detail

    monkeypatch.setattr(Promptship, "validation_run", watched)

    def server_worker() -> None:  # finishes the run once the CLI is following it
        assert seen_running.wait(60)
        core_call(
            env,
            lambda core: core.finish_validation_run(
                run_id, case_results(5 - failed, failed), owner="server-1"
            ),
        )

    worker = threading.Thread(target=server_worker)
    worker.start()
    code, out, err = run("--as", "U04", "promote", "customer-support", "2.1.0", "staging")
    worker.join(60)
    assert code == exit_code, (out, err)
    assert f"validation run {run_id} is being executed by another worker" in err
    assert "taken by another worker" not in err
    request = out.splitlines()[0]
    assert request.startswith("req-") and request.endswith(outcome), out
    assert f"tests: run {run_id} {'failed' if failed else 'passed'}" in out


def test_ctrl_c_while_following_stops_following_and_leaves_the_run_going(
    env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    run("--as", "U09", "push", str(EXAMPLES))
    code, out, _ = run(
        "--as", "U04", "promote", "customer-support", "2.1.0", "staging", "--no-wait"
    )
    queued = re.search(r"tests queued as run (\d+)", out)
    assert code == 0 and queued
    run_id = int(queued.group(1))
    # the claim and the command read one instant: the worker never looks stopped (a run goes
    # stale a minute after its last report), however long the command takes
    frozen = ManualClock(datetime.now(UTC))
    # the CLI imports the service layer when a local command runs (light installs)
    monkeypatch.setattr(
        services, "Promptship", lambda db, policy: Promptship(db, policy, frozen), raising=False
    )
    claim = core_call(env, lambda core: core.claim_validation_run("server-1", run_id), frozen)
    assert claim == run_id
    read_run = Promptship.validation_run

    async def ctrl_c_once_following(self: Promptship, wanted: int) -> RunDetail:
        detail = await read_run(self, wanted)
        if detail.state == "running":
            signal.raise_signal(signal.SIGINT)  # the person presses Ctrl-C
        return detail

    monkeypatch.setattr(Promptship, "validation_run", ctrl_c_once_following)
    code, _, err = run("--as", "U04", "promote", "customer-support", "2.1.0", "staging")
    monkeypatch.setattr(Promptship, "validation_run", read_run)
    assert code == 130
    assert f"stopped following validation run {run_id}; it goes on" in err
    still = core_call(env, lambda core: core.validation_run(run_id))
    assert still.state == "running"


def test_tables_keep_ids_versions_and_times_whole_at_80_columns_and_piped(
    env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("COLUMNS", "80")
    monkeypatch.setattr(common.out, "_width", 80)  # the console was made at import
    soaking = TEST_POLICY.replace(
        "production: {approvals: 2, soak: 0s}",
        "production: {approvals: 2, soak: 1h, soak_interval: 10m, soak_sample: 50}",
    )
    assert soaking != TEST_POLICY
    (env / "promptship.yaml").write_text(soaking + "local_decisions: true\n")
    long_version = "2.10.0-rc.12+build.20261126"
    (env / "p.yaml").write_text(prompt_yaml("customer-support-escalations", long_version))
    run("--as", "U0ABCDEFGHIJK", "push", "p.yaml")
    name = "customer-support-escalations"

    async def tested(core: Promptship) -> None:
        await core.record_validation_run(name, long_version, case_results(5), slack("U04"))

    core_call(env, tested)
    assert run("--as", "U0ABCDEFGHIJK", "promote", name, long_version, "staging")[0] == 0
    code, out, _ = run(
        "--as", "U0ABCDEFGHIJK", "--json", "promote", name, long_version, "production"
    )
    request_code = json.loads(out)["code"]
    code, out, _ = run("--as", "U0ABCDEFGHIJK", "token", "create", "--user", "U0ABCDEFGHIJK")
    assert code == 0
    code, out, _ = run("--json", "history", name)
    events = json.loads(out)["events"]
    times = {e["at"][:16].replace("T", " ") for e in events}

    def whole(*args: str) -> str:
        code, out, err = run(*args)
        assert code == 0, err
        # rich marks a shortened cell with "…" right after its text ("2026-1…"); a token's
        # prefix (psk_…) is shown shortened on purpose
        assert not re.search(r"\w…", re.sub(r"psk_[\w-]+…", "", out)), out
        return out

    listed = whole("list")
    assert long_version in listed and request_code in listed and name in listed
    status = whole("status", name)
    assert long_version in status and "U0ABCDEFGHIJK" in status
    assert any(t in status for t in times)
    history = whole("history", name)
    assert long_version in history and "U0ABCDEFGHIJK" in history
    assert all(t in history for t in times) and "request.created" in history, history
    soaks = whole("soak", name)
    assert long_version in soaks and "staging-shadow" in soaks, soaks
    assert re.search(r"20\d\d-\d\d-\d\d \d\d:\d\d", soaks)  # next cycle and end, whole
    tokens = whole("token", "list")
    assert "U0ABCDEFGHIJK" in tokens and any(t in tokens for t in times)
    assert run("audit", "checkpoint")[0] == 0
    checkpoints = whole("audit", "checkpoints")
    assert f"event {len(events) + 1:>8}" in checkpoints or f"event {len(events):>8}" in checkpoints
    assert any(t in checkpoints for t in times), checkpoints
