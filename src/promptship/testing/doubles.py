"""The offline doubles as background processes of their own: the model double (answering
from its answer book) and the Slack Web API double, for ``promptship doubles`` and the demo.

Each runs detached (its own session, output to a log file) and is recorded in
``.promptship-doubles.json`` in a directory, with the environment that points promptship at
them; ``stop`` ends what that file names, and only if the process is still the one started.
"""

from __future__ import annotations

import json
import os
import secrets
import shlex
import signal
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import httpx

STATE_FILE = ".promptship-doubles.json"
MODEL_MODULE = "promptship.testing.model_double"
SLACK_MODULE = "promptship.testing.slack_double"
#: the bot token the Slack double accepts (not a secret: it opens nothing but the double)
OFFLINE_BOT_TOKEN = "xoxb-0000000000-0000000000-promptshipofflinedouble"
OFFLINE_API_KEY = "offline"


class DoublesError(Exception):
    """A double did not start (or the state file is unreadable); the message says which."""


@dataclass
class Started:
    """One background process: its pid, what it runs, its URL and log file."""

    pid: int
    module: str
    url: str
    log: str


@dataclass
class Doubles:
    """The running doubles of one directory, and the secrets shared with the server."""

    directory: str
    processes: dict[str, Started] = field(default_factory=dict)
    signing_secret: str = ""
    bot_token: str = OFFLINE_BOT_TOKEN

    @property
    def model_url(self) -> str:
        return self.processes["model"].url

    @property
    def slack_url(self) -> str:
        return self.processes["slack"].url

    def env(self) -> dict[str, str]:
        """What the server and the CLI need to use the doubles."""
        return {
            "ANTHROPIC_BASE_URL": self.model_url,
            "ANTHROPIC_API_KEY": OFFLINE_API_KEY,
            "OPENAI_BASE_URL": f"{self.model_url}/v1",
            "OPENAI_API_KEY": OFFLINE_API_KEY,
            "SLACK_API_URL": f"{self.slack_url}/api/",
            "SLACK_BOT_TOKEN": self.bot_token,
            "SLACK_SIGNING_SECRET": self.signing_secret,
        }

    def exports(self) -> str:
        """One shell line: ``export NAME=value …``, quoted for ``eval``."""
        pairs = " ".join(f"{k}={shlex.quote(v)}" for k, v in self.env().items())
        return f"export {pairs}"

    def save(self) -> None:
        data = {
            "signing_secret": self.signing_secret,
            "bot_token": self.bot_token,
            "processes": {name: asdict(p) for name, p in self.processes.items()},
        }
        path = state_path(self.directory)
        path.write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")
        path.chmod(0o600)  # it holds the signing secret


def state_path(directory: str | os.PathLike[str]) -> Path:
    return Path(directory) / STATE_FILE


def load(directory: str | os.PathLike[str]) -> Doubles | None:
    """The doubles recorded in ``directory``, or None if there is no state file."""
    path = state_path(directory)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        processes = {name: Started(**p) for name, p in data["processes"].items()}
        return Doubles(
            str(directory), processes, str(data["signing_secret"]), str(data["bot_token"])
        )
    except FileNotFoundError:
        return None
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise DoublesError(f"{path}: unreadable ({exc}); delete it and start again") from None


def alive(process: Started) -> bool:
    """The pid still runs the module it was started with (not a reused pid)."""
    try:
        os.kill(process.pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process now
        return False
    cmdline = Path(f"/proc/{process.pid}/cmdline")
    if cmdline.exists():
        try:
            args = cmdline.read_bytes().split(b"\0")
        except OSError:
            return False
        if not any(process.module.encode() in arg for arg in args):
            return False
        if _zombie(process.pid):
            return False
    return True


def _zombie(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(") ")[1][:1] == "Z"
    except (OSError, IndexError):
        return False


def running(directory: str | os.PathLike[str]) -> Doubles | None:
    """The recorded doubles if every one of them still runs."""
    doubles = load(directory)
    if doubles is None or not {"model", "slack"} <= doubles.processes.keys():
        return None
    if all(alive(p) for p in doubles.processes.values()):
        return doubles
    return None


def spawn(
    name: str, module: str, args: list[str], directory: Path, env: dict[str, str] | None = None
) -> tuple[subprocess.Popen[bytes], Path]:
    """Start ``python -m module args`` detached, its output in ``directory/.promptship-<name>.log``."""
    log = directory / f".promptship-{name}.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", module, *args],
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
            env={**os.environ, **(env or {})},
            cwd=directory,
        )
    return proc, log


def _wait_for_url(proc: subprocess.Popen[bytes], log: Path, what: str, timeout: float) -> str:
    """The base URL the double prints first, once it answers HTTP."""
    deadline = time.monotonic() + timeout
    url = ""
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise DoublesError(
                f"the {what} exited with code {proc.returncode} while starting; "
                f"its log {log}:\n{tail(log)}"
            )
        if not url:
            first = log.read_text(errors="replace").split("\n", 1)
            if len(first) == 2 and first[0].startswith("http"):
                url = first[0].strip()
        if url:
            try:
                httpx.get(url, timeout=1)
                return url
            except httpx.HTTPError:
                pass
        time.sleep(0.05)
    terminate(proc.pid)
    raise DoublesError(f"the {what} did not answer within {timeout:.0f} s; see {log}")


def start(directory: str | os.PathLike[str], timeout: float = 30.0) -> tuple[Doubles, bool]:
    """Start both doubles unless they already run in ``directory``: (doubles, started)."""
    folder = Path(directory).resolve()
    current = running(folder)
    if current is not None:
        return current, False
    leftover = load(folder)
    if leftover is not None:  # some of them died: start afresh
        stop(leftover)
    doubles = Doubles(str(folder), signing_secret=secrets.token_hex(16))
    started: list[int] = []
    try:
        for name, module, args, what in (
            ("model", MODEL_MODULE, [], "model double"),
            ("slack", SLACK_MODULE, ["--token", doubles.bot_token], "Slack double"),
        ):
            proc, log = spawn(f"{name}-double", module, args, folder)
            started.append(proc.pid)
            url = _wait_for_url(proc, log, what, timeout)
            doubles.processes[name] = Started(proc.pid, module, url, str(log))
    except BaseException:
        for pid in started:
            terminate(pid)
        raise
    doubles.save()
    return doubles, True


def terminate(pid: int, timeout: float = 10.0) -> None:
    """SIGTERM, then SIGKILL after ``timeout``; reaped if it is our child."""
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if _gone(pid):
            return
        time.sleep(0.05)
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        return
    while not _gone(pid) and time.monotonic() < deadline + 5:
        time.sleep(0.05)


def _gone(pid: int) -> bool:
    try:
        done, _ = os.waitpid(pid, os.WNOHANG)
        if done:
            return True
    except ChildProcessError:  # not our child: ask the kernel
        pass
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return _zombie(pid)


def stop(doubles: Doubles) -> list[str]:
    """Stop every recorded process still running and remove the state file: the names
    of those stopped."""
    stopped = []
    for name, process in doubles.processes.items():
        if alive(process):
            terminate(process.pid)
            stopped.append(name)
    state_path(doubles.directory).unlink(missing_ok=True)
    return stopped


def tail(log: str | os.PathLike[str], lines: int = 20) -> str:
    try:
        text = Path(log).read_text(errors="replace")
    except OSError:
        return "(no log)"
    return "\n".join(text.splitlines()[-lines:])


def describe(doubles: Doubles) -> dict[str, Any]:
    return {
        "directory": doubles.directory,
        "processes": {
            name: {**asdict(p), "running": alive(p)} for name, p in doubles.processes.items()
        },
        "env": {k: v for k, v in doubles.env().items() if k != "SLACK_SIGNING_SECRET"},
    }
