"""`promptship request REQ [--wait]`: a request's checklist, and waiting for it to close
(while approvals, a soak or a rejection arrive from elsewhere)."""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

import pytest

from promptship.cli import status
from promptship.services import Promptship
from tests.conftest import TEST_POLICY
from tests.helpers import case_results, slack
from tests.test_cli import EXAMPLES, core_call, env, run

__all__ = ["env"]  # the fixture, shared with test_cli


@pytest.fixture(autouse=True)
def quick_polls(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(status, "WAIT_POLL_SECONDS", 0.05)


def open_production_request(env: Path) -> str:
    (env / "promptship.yaml").write_text(TEST_POLICY + "local_decisions: true\n")
    run("--as", "U09", "push", str(EXAMPLES))

    async def tested(core: Promptship) -> None:
        await core.record_validation_run("customer-support", "2.1.0", case_results(5), slack("U04"))

    core_call(env, tested)
    assert run("--as", "U04", "promote", "customer-support", "2.1.0", "staging")[0] == 0
    code, out, _ = run(
        "--json", "--as", "U04", "promote", "customer-support", "2.1.0", "production"
    )
    assert code == 0
    return str(json.loads(out)["code"])


class Reads:
    """Counts the waiting command's reads of the request, for another thread to wait on."""

    def __init__(self) -> None:
        self.count = 0
        self.changed = threading.Condition()

    def seen(self) -> None:
        with self.changed:
            self.count += 1
            self.changed.notify_all()

    def after(self, count: int) -> None:
        with self.changed:
            assert self.changed.wait_for(lambda: self.count >= count, timeout=30)


def meanwhile(
    env: Path,
    monkeypatch: pytest.MonkeyPatch,
    act: Callable[[Promptship, Reads], Coroutine[Any, Any, Any]],
) -> threading.Thread:
    """Run ``act`` in another thread (another process, for the CLI) once the waiting
    command has read the request for the first time."""
    reads = Reads()
    original = Promptship.request

    async def reading(self: Promptship, request_id: int) -> Any:
        view = await original(self, request_id)
        reads.seen()
        return view

    monkeypatch.setattr(Promptship, "request", reading)

    def go() -> None:
        reads.after(1)
        core_call(env, lambda core: act(core, reads))

    thread = threading.Thread(target=go, daemon=True)
    thread.start()
    return thread


def test_request_shows_the_checklist_without_waiting(env: Path) -> None:
    code_ = open_production_request(env)
    code, out, _ = run("request", code_)
    assert code == 0
    assert f"{code_} customer-support 2.1.0 → production (normal): open" in out
    assert "approvals: 0/2 approvals" in out


def test_wait_follows_the_request_until_it_promotes(
    env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    code_ = open_production_request(env)

    async def approvals(core: Promptship, reads: Reads) -> None:
        request_id = int(code_.removeprefix("req-"))
        await core.approve(request_id, slack("U01"), None)
        # the waiting command reads the request with one approval before the second comes
        await asyncio.to_thread(reads.after, reads.count + 2)
        await core.approve(request_id, slack("U02"), None)

    thread = meanwhile(env, monkeypatch, approvals)
    code, out, err = run("request", code_, "--wait")
    thread.join(30)
    assert code == 0
    assert f"waiting for {code_} to close" in err
    lines = out.splitlines()
    assert lines[0] == f"{code_} customer-support 2.1.0 → production (normal): open"
    assert "  … approvals: 1/2 approvals (U01)" in lines  # each change as it arrives
    assert f"{code_} customer-support 2.1.0 → production (normal): promoted" in lines[-3:]


def test_wait_exits_1_when_the_request_closes_otherwise(
    env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    code_ = open_production_request(env)

    async def rejection(core: Promptship, reads: Reads) -> None:
        await core.reject(int(code_.removeprefix("req-")), slack("U01"), "not this quarter")

    thread = meanwhile(env, monkeypatch, rejection)
    code, out, _ = run("--json", "request", code_, "--wait")
    thread.join(30)
    assert code == 1
    view = json.loads(out)  # --json: only the final state
    assert view["state"] == "rejected" and view["close_reason"]


def test_wait_gives_up_after_the_timeout(env: Path) -> None:
    code_ = open_production_request(env)
    code, _, err = run("request", code_, "--wait", "--timeout", "1s")
    assert code == 1
    assert f"{code_} is still open after 1s" in err


def test_a_closed_request_answers_at_once(env: Path) -> None:
    code_ = open_production_request(env)
    assert run("--as", "U04", "cancel", code_)[0] == 0
    code, out, _ = run("request", code_, "--wait")
    assert code == 1 and "(normal): cancelled" in out


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["req-x"], "request ids look like req-42"),
        (["req-99"], "no promotion request req-99"),
        (["req-1", "--wait", "--timeout", "soon"], "--timeout: not a duration"),
        (["req-1", "--timeout", "5m"], "--timeout goes with --wait"),
    ],
)
def test_bad_input_exits_2(env: Path, args: list[str], message: str) -> None:
    code, _, err = run("request", *args)
    assert code == 2 and message in err and "Traceback" not in err
