"""The README's walk-through, run as written: its ``sh`` blocks, in order, in one bash process
on a fresh folder, offline, and the output each step shows in the README appears.

Conventions the README follows (and this test reads):

- a comment line ``#   TEXT`` (a hash and three or more spaces) under a command is output the
  command prints: TEXT must appear in what that command wrote (stdout or stderr), with runs
  of spaces counting as one, so a table row may be shown in part;
- such a line ending in ``exit code N`` says the command exits with N (a refusal shown on
  purpose); every other command must succeed (``set -euo pipefail``);
- every other comment is prose.

What the harness changes, and why: ``$PWD/.venv/bin`` in the first line becomes the bin folder
of the Python running the tests (the README's set-up installs into ``.venv``; here the tests'
own environment, with this checkout's ``src`` first on ``PYTHONPATH`` so a shared virtualenv
runs this checkout's code); ``promptship serve`` gets ``--port`` of a free port (8000 may be
taken on a test machine). It runs with no model or Slack credentials from the environment,
external proxies pointing nowhere (an accidental call to the internet fails at once) and
Hugging Face offline. Background processes (serve, the doubles) are stopped even on failure.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from promptship.testing.serve import free_port

ROOT = Path(__file__).parent.parent
EXPECTED = re.compile(r"^#\s{3,}(.*)$")
EXIT_CODE = re.compile(r"\s*exit code (\d+)$")
#: the whole walk-through; a run over this is a failure, not a hang
TIME_LIMIT_SECONDS = 400


@dataclass
class Step:
    command: str
    expected: list[str] = field(default_factory=list)
    exit_code: int = 0


def walkthrough_blocks(readme: str) -> list[str]:
    section = readme.split("\n## Walk-through\n", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"^```sh\n(.*?)^```", section, flags=re.S | re.M)


def parse_steps(blocks: list[str]) -> list[Step]:
    steps: list[Step] = []
    for block in blocks:
        for line in block.splitlines():
            if not line.strip():
                continue
            shown = EXPECTED.match(line)
            if shown:
                assert steps, f"output shown before any command: {line!r}"
                text = shown.group(1)
                code = EXIT_CODE.search(text)
                if code:
                    steps[-1].exit_code = int(code.group(1))
                    text = text[: code.start()]
                if text.strip():
                    steps[-1].expected.append(squeeze(text))
            elif line.lstrip().startswith("#"):
                continue  # prose
            else:
                steps.append(Step(line))
    return steps


def squeeze(text: str) -> str:
    return " ".join(text.split())


def script(steps: list[Step], venv_bin: Path, port: int) -> str:
    lines = [
        "set -euo pipefail",
        "exec 2>&1",
        # a step's output starts after its marker
        'step() { printf \'\\n@@step %s (%ss)\\n\' "$1" "$SECONDS"; }',
    ]
    for number, step in enumerate(steps):
        command = step.command
        if number == 0:
            command = command.replace("$PWD/.venv/bin", str(venv_bin))
        if re.search(r"\bpromptship serve\b", command) and "--port" not in command:
            command = re.sub(r"\bpromptship serve\b", f"promptship serve --port {port}", command)
        lines.append(f"step {number}")
        if step.exit_code:
            lines += [
                "set +e",
                command,
                "code=$?",
                "set -e",
                f'[ "$code" = {step.exit_code} ] || '
                f'{{ echo "@@exit code $code, expected {step.exit_code}"; exit 97; }}',
            ]
        else:
            lines.append(command)
    lines.append("step end")
    return "\n".join(lines) + "\n"


def offline_environment(home: Path) -> dict[str, str]:
    keep = ("PATH", "LANG", "LC_ALL", "TERM", "SYSTEMROOT")
    env = {k: v for k, v in os.environ.items() if k in keep}
    env.update(
        HOME=str(home),
        TMPDIR=str(home),
        PYTHONPATH=os.pathsep.join([str(ROOT / "src"), str(ROOT)]),
        COLUMNS="100",
        HTTP_PROXY="http://127.0.0.1:9",
        HTTPS_PROXY="http://127.0.0.1:9",
        NO_PROXY="127.0.0.1,localhost",
        HF_HUB_OFFLINE="1",
        TRANSFORMERS_OFFLINE="1",
    )
    return env


def has_doubles_command() -> bool:
    import typer

    from promptship.cli import app

    command = typer.main.get_command(app)
    return "doubles" in getattr(command, "commands", {})


def stop_everything(process: subprocess.Popen[str], home: Path, env: dict[str, str]) -> None:
    """Stop the doubles the walk-through started, wherever it left its state, then whatever
    is left of its process group (serve)."""
    for state in home.rglob(".promptship-doubles.json"):
        subprocess.run(
            ["promptship", "doubles", "stop"],
            cwd=state.parent,
            env=env,
            capture_output=True,
            timeout=60,
            check=False,
        )
    # serve shuts down gracefully on SIGTERM; whatever is left then gets SIGKILL
    for sig, grace in ((signal.SIGTERM, 20.0), (signal.SIGKILL, 10.0)):
        try:
            os.killpg(process.pid, sig)
        except ProcessLookupError:
            return
        deadline = time.monotonic() + grace
        while group_alive(process.pid) and time.monotonic() < deadline:
            time.sleep(0.1)
        if not group_alive(process.pid):
            return


def group_alive(group: int) -> bool:
    """Whether a process of this group still runs (zombies, waiting to be reaped, do not)."""
    proc = Path("/proc")
    if not proc.is_dir():  # not Linux: ask the kernel, zombies included
        try:
            os.killpg(group, 0)
        except ProcessLookupError:
            return False
        return True
    for entry in proc.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(") ", 1)[1].split()
        except (OSError, IndexError):
            continue
        if int(fields[2]) == group and fields[0] != "Z":
            return True
    return False


def run_walkthrough(steps: list[Step], folder: Path) -> tuple[int, str]:
    """Run the steps in one bash process in ``folder``; stop what they started, always."""
    env = offline_environment(folder)
    venv_bin = Path(sys.executable).parent
    (folder / "walkthrough.sh").write_text(script(steps, venv_bin, free_port()))
    log = folder / "walkthrough.out"
    # output to a file, not a pipe: serve and the doubles outlive a failed step and would
    # hold a pipe open; bash ending is what counts
    with open(log, "w") as sink:
        process = subprocess.Popen(
            ["bash", str(folder / "walkthrough.sh")],
            cwd=folder,
            env=env,
            stdout=sink,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,  # its own process group: serve is stopped with it
        )
    with_venv = {**env, "PATH": f"{venv_bin}{os.pathsep}{env['PATH']}"}
    try:
        process.wait(timeout=TIME_LIMIT_SECONDS)
    except subprocess.TimeoutExpired:
        stop_everything(process, folder, with_venv)
        tail = log.read_text(errors="replace")[-6000:]
        pytest.fail(f"the walk-through ran over {TIME_LIMIT_SECONDS}s:\n{tail}")
    finally:
        stop_everything(process, folder, with_venv)
    output = log.read_text(errors="replace")
    return process.returncode, output


def outputs_by_step(output: str) -> dict[str, str]:
    parts = re.split(r"^@@step (\S+) \(\d+s\)$", output, flags=re.M)
    return {parts[i]: parts[i + 1] for i in range(1, len(parts) - 1, 2)}


def test_the_readme_walkthrough_parses_into_commands_and_shown_output() -> None:
    steps = parse_steps(walkthrough_blocks((ROOT / "README.md").read_text()))
    commands = [s.command for s in steps]
    assert commands[0].startswith("export PATH=$PWD/.venv/bin:$PATH")
    assert any(c.startswith("promptship init") for c in commands)
    assert any("promptship doubles start" in c for c in commands)
    assert any(c.startswith("promptship rollback") for c in commands)
    assert any("promptship doubles stop" in c for c in commands)
    assert sum(len(s.expected) for s in steps) >= 10, "the README shows what to expect"
    assert [s for s in steps if s.exit_code], "a refusal is shown with its exit code"


@pytest.mark.slow
def test_the_readme_walkthrough_reaches_production_and_rolls_back_offline(
    tmp_path: Path,
) -> None:
    if not has_doubles_command():
        pytest.skip("`promptship doubles` (the offline model and Slack doubles) is missing")
    steps = parse_steps(walkthrough_blocks((ROOT / "README.md").read_text()))
    returncode, output = run_walkthrough(steps, tmp_path)
    print("\n".join(line for line in output.splitlines() if line.startswith("@@step")))
    by_step = outputs_by_step(output)
    logs = "\n".join(f"--- {p}\n{p.read_text()[-3000:]}" for p in tmp_path.rglob("serve.log"))
    if returncode != 0:
        failed = max((int(k) for k in by_step if k.isdigit()), default=0)
        pytest.fail(
            f"step {failed} failed (exit {returncode}): {steps[failed].command}\n"
            f"{output[-6000:]}\n{logs}"
        )
    assert "end" in by_step, output[-3000:]
    for number, step in enumerate(steps):
        printed = [squeeze(line) for line in by_step[str(number)].splitlines()]
        for expected in step.expected:
            assert any(expected in line for line in printed), (
                f"step {number} ({step.command}) did not print {expected!r}; it printed:\n"
                + by_step[str(number)]
            )


@pytest.mark.slow
def test_a_walkthrough_that_fails_midway_leaves_nothing_running(tmp_path: Path) -> None:
    if not has_doubles_command():
        pytest.skip("`promptship doubles` (the offline model and Slack doubles) is missing")
    from promptship.testing.doubles import STATE_FILE, alive, load

    first = parse_steps(walkthrough_blocks((ROOT / "README.md").read_text()))[0]
    steps = [
        first,
        Step('cd "$(mktemp -d)"'),
        Step("promptship init --soak 30s"),
        Step('eval "$(promptship doubles start)"'),
        Step(f'cp {STATE_FILE} "$HOME/doubles.json"'),
        Step("promptship serve 2> serve.log &"),
        Step('echo "$!" > "$HOME/serve.pid"'),
        Step("promptship status customer-support"),  # nothing pushed: exit 2
    ]
    returncode, output = run_walkthrough(steps, tmp_path)
    assert returncode == 2, output
    (tmp_path / "copy").mkdir()
    (tmp_path / "doubles.json").rename(tmp_path / "copy" / STATE_FILE)
    doubles = load(tmp_path / "copy")
    assert doubles is not None and set(doubles.processes) == {"model", "slack"}
    serve_pid = int((tmp_path / "serve.pid").read_text())
    for started in doubles.processes.values():
        assert not alive(started), f"{started.module} still runs"
    assert not running(serve_pid), "serve still runs"


def running(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(") ", 1)[1][0] != "Z"
    except (OSError, IndexError):
        return False
