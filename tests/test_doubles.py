"""``promptship doubles``: the offline doubles as background processes, for
``eval "$(promptship doubles start)"``; a suite run through its exports passes."""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from promptship.testing.doubles import STATE_FILE, load

ROOT = Path(__file__).parent.parent


def promptship(
    *args: str, cwd: Path, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith(("PROMPTSHIP_", "SLACK_"))}
    base["PYTHONPATH"] = f"{ROOT / 'src'}:{ROOT}"
    return subprocess.run(
        [sys.executable, "-m", "promptship.cli", *args],
        cwd=cwd,
        env={**base, **(env or {})},
        capture_output=True,
        text=True,
        timeout=120,
    )


def exported(line: str) -> dict[str, str]:
    words = shlex.split(line)
    assert words[0] == "export"
    return dict(word.split("=", 1) for word in words[1:])


@pytest.fixture
def here(tmp_path: Path) -> Iterator[Path]:
    yield tmp_path
    promptship("doubles", "stop", cwd=tmp_path)


def test_start_exports_a_working_setup_and_stop_ends_it(here: Path) -> None:
    started = promptship("doubles", "start", cwd=here)
    assert started.returncode == 0, started.stderr
    assert started.stdout.count("\n") == 1  # only the export line: eval-able
    assert "model double" in started.stderr and "promptship doubles stop" in started.stderr
    env = exported(started.stdout)
    assert set(env) == {
        "ANTHROPIC_BASE_URL", "ANTHROPIC_API_KEY", "OPENAI_BASE_URL", "OPENAI_API_KEY",
        "SLACK_API_URL", "SLACK_BOT_TOKEN", "SLACK_SIGNING_SECRET",
    }  # fmt: skip
    state = json.loads((here / STATE_FILE).read_text())
    assert set(state["processes"]) == {"model", "slack"}

    # the example suite passes against the model double, through the exports
    db = {"PROMPTSHIP_DATABASE_URL": f"sqlite+aiosqlite:///{here / 'p.db'}"}
    pushed = promptship(
        "--as", "U09", "push", str(ROOT / "examples" / "prompts"), cwd=here, env={**env, **db}
    )
    assert pushed.returncode == 0, pushed.stderr
    tested = promptship(
        "--as", "U04", "test", "customer-support", "2.1.0", cwd=here, env={**env, **db}
    )
    assert tested.returncode == 0, tested.stdout + tested.stderr
    assert "pass rate 100%" in tested.stdout
    # the Slack double takes the exported bot token
    auth = httpx.post(
        f"{env['SLACK_API_URL']}auth.test",
        headers={"Authorization": f"Bearer {env['SLACK_BOT_TOKEN']}"},
    )
    assert auth.json()["ok"] is True

    # a second start finds them running: the same exports, nothing new started
    again = promptship("doubles", "start", cwd=here)
    assert again.returncode == 0 and exported(again.stdout) == env
    assert "already running" in again.stderr

    doubles = load(here)
    assert doubles is not None
    stopped = promptship("doubles", "stop", cwd=here)
    assert stopped.returncode == 0 and "stopped: model, slack" in stopped.stderr
    assert not (here / STATE_FILE).exists()
    with pytest.raises(httpx.ConnectError):
        httpx.get(doubles.model_url, timeout=2)


def test_a_dead_double_is_restarted(here: Path) -> None:
    first = promptship("doubles", "start", cwd=here)
    doubles = load(here)
    assert first.returncode == 0 and doubles is not None
    os.kill(doubles.processes["model"].pid, 9)  # the model double dies
    status = promptship("--json", "doubles", "status", cwd=here)
    assert status.returncode == 1
    assert json.loads(status.stdout)["processes"]["model"]["running"] is False
    second = promptship("doubles", "start", cwd=here)
    assert second.returncode == 0, second.stderr
    assert "started" in second.stderr and exported(second.stdout) != exported(first.stdout)


def test_nothing_to_stop_and_bad_input(tmp_path: Path) -> None:
    nothing = promptship("doubles", "stop", cwd=tmp_path)
    assert nothing.returncode == 0 and "nothing to stop" in nothing.stderr
    status = promptship("doubles", "status", cwd=tmp_path)
    assert status.returncode == 1 and "no doubles here" in status.stdout
    result = promptship("doubles", "start", "--dir", str(tmp_path / "missing"), cwd=tmp_path)
    assert result.returncode == 2 and "is not a directory" in result.stderr
    assert "Traceback" not in result.stderr
