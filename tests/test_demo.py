"""``promptship demo`` end to end as a user runs it: a subprocess, the real server and the
doubles in processes of their own; then the store it leaves behind, ``--keep`` and Ctrl-C."""

from __future__ import annotations

import asyncio
import json
import os
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from promptship.config import load_policy
from promptship.services import Promptship
from promptship.store.db import Database
from promptship.testing.doubles import STATE_FILE, alive, load

ROOT = Path(__file__).parent.parent
NAME = "customer-support"
STEPS = [
    "start the doubles", "start promptship serve",
    "push customer-support 2.0.0", "test gate → staging", "request production",
    "shadow soak of 2.0.0", "U01 clicks Approve in Slack", "U02 clicks Approve in Slack",
    "production", "production traffic",
    "push customer-support 2.1.0", "shadow soak of 2.1.0", "production",
    "push customer-support 2.2.0", "test gate (a regressing version)",
    "push customer-support 2.3.0", "test gate → staging", "shadow soak of 2.3.0",
    "on-call U03 rolls production back from Slack", "audit verify",
]  # fmt: skip


def environ(**extra: str) -> dict[str, str]:
    base = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("PROMPTSHIP_", "SLACK_", "ANTHROPIC_", "OPENAI_"))
    }
    return {**base, "PYTHONPATH": f"{ROOT / 'src'}:{ROOT}", "COLUMNS": "200", **extra}


def promptship(*args: str, **popen: Any) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "promptship.cli", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        **popen,
    )


@pytest.fixture(scope="module")
def kept(tmp_path_factory: pytest.TempPathFactory) -> Any:
    """One ``promptship demo --keep`` for the module (it takes about a minute)."""
    folder = tmp_path_factory.mktemp("demo")
    proc = promptship("demo", "--dir", str(folder), "--keep", env=environ())
    output, _ = proc.communicate(timeout=300)
    yield proc.returncode, output, folder
    subprocess.run(
        [sys.executable, "-m", "promptship.cli", "doubles", "stop", "--dir", str(folder)],
        env=environ(),
        capture_output=True,
        timeout=60,
    )


def read_store(folder: Path) -> dict[str, Any]:
    async def go() -> dict[str, Any]:
        db = Database(f"sqlite+aiosqlite:///{folder / 'promptship.db'}")
        try:
            core = Promptship(db, load_policy(str(folder / "promptship.yaml")))
            versions = {v: await core.show(NAME, v) for v in ("2.0.0", "2.1.0", "2.2.0", "2.3.0")}
            events = await core.recent_events(200)
            return {
                "status": {v: d.status for v, d in versions.items()},
                "runs": {
                    v: d.latest_run.state if d.latest_run else None for v, d in versions.items()
                },
                "soaks": {s.version: s.state for s in await core.soak_status(NAME)},
                "approved": {
                    (e.actor, e.details.get("auth"))
                    for e in events
                    if e.action == "request.approved"
                },
                "rollbacks": [
                    (e.actor, e.details.get("auth"), e.details.get("from"), e.details.get("to"))
                    for e in events
                    if e.action == "deployment.changed" and e.details.get("move") == "rollback"
                ],
            }
        finally:
            await db.dispose()

    return asyncio.run(go())


@pytest.mark.slow
def test_the_demo_tells_the_whole_story_and_leaves_its_history(kept: Any) -> None:
    code, output, folder = kept
    assert code == 0, output
    assert "Traceback" not in output
    position = 0
    for step in STEPS:
        found = output.find(f"✓ {step}:", position)
        assert found >= 0, f"step {step!r} missing or out of order:\n{output}"
        position = found
    assert "cycle 1:" in output and "diverged" in output
    assert "audit log intact" in output
    assert str(folder / "promptship.db") in output and "promptship --json status" in output

    store = read_store(folder)
    assert store["status"]["2.0.0"] == "production"  # rolled back to
    assert store["status"]["2.1.0"] == "reverted"
    assert store["runs"]["2.2.0"] == "failed" and store["status"]["2.2.0"] == "draft"
    assert store["soaks"]["2.3.0"] == "failed"
    assert store["soaks"]["2.1.0"] == "passed"
    assert {("U01", "slack"), ("U02", "slack")} <= store["approved"]
    assert store["rollbacks"] == [("U03", "slack", "2.1.0", "2.0.0")]  # on-call, in Slack


@pytest.mark.slow
def test_keep_leaves_the_server_and_doubles_up_for_the_cli(kept: Any) -> None:
    code, output, folder = kept
    assert code == 0, output
    line = next(x for x in output.splitlines() if x.strip().startswith("export PROMPTSHIP_SERVER="))
    env = dict(word.split("=", 1) for word in shlex.split(line)[1:])
    assert {
        "PROMPTSHIP_DATABASE_URL",
        "PROMPTSHIP_TOKEN",
        "ANTHROPIC_BASE_URL",
        "SLACK_API_URL",
    } <= set(env)
    assert httpx.get(f"{env['PROMPTSHIP_SERVER']}/readyz", timeout=5).status_code == 200

    status = subprocess.run(
        [sys.executable, "-m", "promptship.cli", "--json", "status"],
        env=environ(**env), capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert status.returncode == 0, status.stderr
    assert "2.0.0" in status.stdout and NAME in status.stdout
    assert f"promptship doubles stop --dir {folder}" in output

    running = load(folder)
    assert running is not None and set(running.processes) == {"model", "slack", "server"}
    stop = subprocess.run(
        [sys.executable, "-m", "promptship.cli", "doubles", "stop", "--dir", str(folder)],
        env=environ(), capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert stop.returncode == 0 and "server" in stop.stderr
    assert not any(alive(p) for p in running.processes.values())


def test_ctrl_c_stops_every_child_and_exits_130(tmp_path: Path) -> None:
    proc = promptship("demo", "--dir", str(tmp_path), env=environ(), start_new_session=True)
    assert proc.stdout is not None
    seen = []
    for line in proc.stdout:  # wait for the doubles to run
        seen.append(line)
        if "✓ start the doubles" in line:
            break
    state = json.loads((tmp_path / STATE_FILE).read_text())
    pids = [p["pid"] for p in state["processes"].values()]
    time.sleep(0.5)  # Ctrl-C while the server starts, not between two lines
    os.killpg(proc.pid, signal.SIGINT)
    rest, _ = proc.communicate(timeout=60)
    output = "".join(seen) + rest
    assert proc.returncode == 130, output
    assert "interrupted" in output and "Traceback" not in output
    assert not (tmp_path / STATE_FILE).exists()
    for pid in pids:
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)
