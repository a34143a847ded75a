"""``promptship demo``: the whole path, offline, narrated.

The real server (``promptship serve`` in a process of its own, with its scheduler, a SQLite
store and MiniLM), the model double (its answer book) and the Slack double in processes of
their own, a short-soak policy and made-up production traffic. People act the way they do
in production: CI pushes and requests with a service token, approvers click the buttons of
the message the server posted (signed requests to ``/slack/events``), on-call rolls back with
a signed ``/prompt rollback``. Reading soak progress goes straight to the store.
"""

from __future__ import annotations

import asyncio
import os
import secrets
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx

from promptship.demo import scenario
from promptship.demo.narrate import Narrator, StepFailed
from promptship.testing import doubles as launcher
from promptship.testing.serve import free_port
from promptship.testing.slack_people import Workspace, text_of

CHANNEL = "C0PROMPTOPS"
APPROVERS, ONCALL = ("U01", "U02"), "U03"
#: how long a soak lasts and how often it runs a cycle (seconds): short, for a demo
SOAK, INTERVAL = 9, 3
POLICY = f"""\
# The demo's policy: a real one with short soaks (a team soaks for hours or a day).
channel: {CHANNEL}
roles: {{approvers: [{", ".join(APPROVERS)}], oncall: [{ONCALL}]}}
environments:
  staging: {{min_pass_rate: 0.8, regression_check: true}}
  production: {{approvals: 2, soak: {SOAK}s, soak_interval: {INTERVAL}s, soak_sample: 100,
               soak_min_samples: 5, max_divergence: 0.10}}
"""
#: the variables that point a process at something else than the demo's set-up
FOREIGN = ("PROMPTSHIP_", "SLACK_", "ANTHROPIC_", "OPENAI_")


class Demo:
    def __init__(self, directory: Path, narrator: Narrator) -> None:
        self.dir = directory
        self.say = narrator
        self.db_path = directory / "promptship.db"
        self.db_url = f"sqlite+aiosqlite:///{self.db_path}"
        self.ci_token = "ps_demo_ci_" + secrets.token_hex(12)
        self.app_token = "ps_demo_app_" + secrets.token_hex(12)
        self.doubles: launcher.Doubles | None = None
        self.server_url = ""
        self.server_log = directory / ".promptship-server.log"
        self.api: httpx.Client | None = None
        self.slack: Workspace | None = None
        self._loop = asyncio.Runner()
        self._core: Any = None

    # -- set-up and tear-down ----------------------------------------------------------

    def env(self) -> dict[str, str]:
        """What the server (and a CLI exploring afterwards) needs."""
        assert self.doubles is not None
        return {
            **self.doubles.env(),
            "PROMPTSHIP_DATABASE_URL": self.db_url,
            "PROMPTSHIP_CONFIG": str(self.dir / "promptship.yaml"),
            "PROMPTSHIP_API_TOKENS": f"write:demo-ci:{self.ci_token},"
            f"runtime:demo-app:{self.app_token}",
        }

    def start(self) -> None:
        with self.say.step("start the doubles") as step:
            (self.dir / "promptship.yaml").write_text(POLICY, encoding="utf-8")
            self.doubles, _ = launcher.start(self.dir)
            step.done(
                f"model double {self.doubles.model_url} (answer book), "
                f"Slack double {self.doubles.slack_url}"
            )
        with self.say.step("start promptship serve") as step:
            port = free_port()
            self.server_url = f"http://127.0.0.1:{port}"
            base = {k: v for k, v in os.environ.items() if not k.startswith(FOREIGN)}
            environ = {
                **base,
                **self.env(),
                "PROMPTSHIP_SCHEDULER_TICK": "0.5",
                "PROMPTSHIP_PUBLIC_URL": self.server_url,
            }
            proc, log = launcher.spawn(
                "server", "promptship.cli", ["serve", "--port", str(port)], self.dir, environ
            )
            self.server_log = log
            self.doubles.processes["server"] = launcher.Started(
                proc.pid, "promptship.cli", self.server_url, str(log)
            )
            self.doubles.save()  # `promptship doubles stop` stops the server too
            self._until(
                lambda: proc.poll() is not None or self._ready(),
                90,
                "the server to get ready",
            )
            if proc.poll() is not None:
                raise StepFailed("start promptship serve", f"it exited with {proc.returncode}")
            self.api = httpx.Client(
                base_url=self.server_url,
                timeout=30,
                headers={"Authorization": f"Bearer {self.ci_token}"},
            )
            self.slack = Workspace(
                self.server_url, self.doubles.slack_url, self.doubles.signing_secret, CHANNEL
            )
            step.done(f"{self.server_url}, SQLite store {self.db_path}, scheduler tick 0.5 s")

    def _ready(self) -> bool:
        try:
            return httpx.get(f"{self.server_url}/readyz", timeout=2).status_code == 200
        except httpx.HTTPError:
            return False

    def close(self, stop: bool) -> None:
        for client in (self.api, self.slack):
            if client is not None:
                client.close()
        if self._core is not None:
            self._loop.run(self._core.db.dispose())
        self._loop.close()
        if stop:
            found = launcher.load(self.dir)
            if found is not None:
                launcher.stop(found)

    # -- reading --------------------------------------------------------------------------

    def core(self, use: Callable[[Any], Any]) -> Any:
        """Read the store through the services (soak progress has no API route)."""
        if self._core is None:
            from promptship.config import load_policy
            from promptship.services import Promptship
            from promptship.store.db import Database

            policy = load_policy(str(self.dir / "promptship.yaml"))
            self._core = Promptship(Database(self.db_url), policy)
        return self._loop.run(use(self._core))

    def _until(self, predicate: Callable[[], Any], timeout: float, what: str) -> Any:
        deadline = time.monotonic() + timeout
        while True:
            value = predicate()
            if value:
                return value
            if time.monotonic() > deadline:
                raise TimeoutError(f"gave up waiting {timeout:.0f} s for {what}")
            time.sleep(0.2)

    def _call(self, method: str, path: str, **kw: Any) -> Any:
        assert self.api is not None
        response = self.api.request(method, path, **kw)
        if response.status_code >= 400:
            body = response.json() if "json" in response.headers.get("content-type", "") else {}
            detail = body.get("detail") or response.text
            raise RuntimeError(f"{method} {path}: {response.status_code} {detail}")
        return response.json()

    def _request(self, request_id: int) -> dict[str, Any]:
        return dict(self._call("GET", f"/v1/requests/{request_id}"))

    def live(self, environment: str) -> str:
        assert self.api is not None
        response = self.api.get(
            f"/v1/prompts/{scenario.NAME}/environments/{environment}",
            headers={"Authorization": f"Bearer {self.app_token}"},
        )
        return str(response.json().get("version")) if response.status_code == 200 else "-"

    # -- the path -------------------------------------------------------------------------

    def push(self, version: str) -> None:
        with self.say.step(f"push {scenario.NAME} {version}") as step:
            text = scenario.prompt_file(version).read_text(encoding="utf-8")
            self._call(
                "POST", "/v1/prompts", content=text, headers={"Content-Type": "application/yaml"}
            )
            step.done("registered as draft by CI (service token demo-ci)")

    def test_gate(self, version: str, expect_pass: bool = True) -> str:
        """Promote to staging: the server runs the suite against the model double."""
        title = "test gate → staging" if expect_pass else "test gate (a regressing version)"
        with self.say.step(title) as step:
            opened = self._call(
                "POST",
                f"/v1/prompts/{scenario.NAME}/promotions",
                json={"version": version, "environment": "staging"},
            )
            request = self._until(
                lambda: (r := self._request(opened["id"]))["state"] != "open" and r,
                90,
                "the validation run",
            )
            run = self._call("GET", f"/v1/prompts/{scenario.NAME}/versions/{version}")["latest_run"]
            tests = (
                f"{run['passed']}/{run['total']} cases passed against the model double"
                if run
                else "no run"
            )
            if request["state"] == "promoted":
                if not expect_pass:
                    raise StepFailed(title, f"{version} passed the gate it should fail: {tests}")
                step.done(f"{version}: {tests}; now in staging")
            else:
                reason = request.get("close_reason") or tests
                if expect_pass:
                    raise StepFailed(title, f"{version} was refused: {reason}")
                step.done(f"{version} refused, stays out of staging: {reason}")
            return str(request["code"])

    def request_production(self, version: str) -> tuple[int, dict[str, Any]]:
        with self.say.step("request production") as step:
            opened = self._call(
                "POST",
                f"/v1/prompts/{scenario.NAME}/promotions",
                json={
                    "version": version,
                    "environment": "production",
                    "reason": f"ship {version}",
                },
            )
            code = opened["code"]
            assert self.slack is not None
            slack = self.slack
            message = self._until(
                lambda: slack.posted(lambda m: f"Promotion request {code}" in m.get("text", "")),
                30,
                f"the Slack message of {code}",
            )[-1]
            step.done(f"{code} posted to {CHANNEL} with Approve / Reject buttons")
            return int(opened["id"]), message

    def soak(self, version: str, expect: str, first: bool = False) -> dict[str, Any]:
        title = f"shadow soak of {version}"
        with self.say.step(title) as step:
            soak_id = self._until(
                lambda: self.core(lambda c: c.staging_soak_id(scenario.NAME, version)),
                30,
                "the soak to start",
            )
            shown: set[int] = set()

            def progress() -> Any:
                for cycle in self.core(lambda c: c.soak_cycles(soak_id)):
                    if cycle["cycle"] in shown or cycle["finished_at"] is None:
                        continue
                    shown.add(cycle["cycle"])
                    rate = cycle["rate"] if cycle["rate"] is not None else 0.0
                    self.say.detail(
                        f"cycle {cycle['cycle']}: {cycle['sample_size']} queries, "
                        f"{cycle['divergent']} diverged ({rate:.0%}), "
                        f"{cycle['errored']} errors → {cycle['state']}"
                    )
                soaks = self.core(lambda c: c.soak_status(scenario.NAME))
                found = next((s for s in soaks if s.id == soak_id), None)
                return found if found is not None and found.state != "running" else None

            done = self._until(progress, SOAK * 4 + 60, "the soak to finish")
            if done.state != expect:
                raise StepFailed(title, f"ended {done.state}, not {expect}: {done.failure or ''}")
            what = (
                f"{done.cycles_done} cycles replaying the suite's inputs (nothing in "
                "production to compare with yet): no errors"
                if first
                else f"{done.cycles_done} cycles comparing it with production on logged traffic"
            )
            if done.state == "passed":
                step.done(f"passed ({what}); the production gate's soak check is ticked")
            else:
                step.done(f"{done.state}: {done.failure}")
            return {"state": done.state, "failure": done.failure}

    def approve_by_button(self, request_id: int, message: dict[str, Any]) -> None:
        assert self.slack is not None
        for user in APPROVERS:
            with self.say.step(f"{user} clicks Approve in Slack") as step:
                key = self.slack.click(message, "approve", user)
                reply = text_of(self.slack.reply(key))
                step.done(reply.splitlines()[0] if reply else "approved")
        with self.say.step("production") as step:
            request = self._until(
                lambda: (r := self._request(request_id))["state"] != "open" and r,
                30,
                "the request to close",
            )
            if request["state"] != "promoted":
                raise StepFailed("production", f"the request {request['state']}")
            step.done(f"{scenario.NAME} {request['version']} is live in production")

    def log_traffic(self) -> None:
        with self.say.step("production traffic") as step:
            samples = [
                {"prompt": scenario.NAME, "environment": "production", "input": question}
                for question in scenario.QUESTIONS * 2
            ]
            assert self.api is not None
            response = self.api.post(
                "/v1/traffic",
                json={"samples": samples},
                headers={"Authorization": f"Bearer {self.app_token}"},
            )
            response.raise_for_status()
            step.done(
                f"the support app logged {response.json()['stored']} customer questions "
                "(runtime token demo-app) for soaks to replay"
            )

    def rollback(self) -> None:
        with self.say.step(f"on-call {ONCALL} rolls production back from Slack") as step:
            assert self.slack is not None
            before = self.live("production")
            key = self.slack.command(
                f"rollback {scenario.NAME} production refund answers look wrong", ONCALL
            )
            reply = text_of(self.slack.reply(key))
            after = self._until(
                lambda: (v := self.live("production")) != before and v,
                30,
                "production to move",
            )
            step.done(f"/prompt rollback: production {before} → {after} ({reply.splitlines()[0]})")

    def audit_verify(self) -> None:
        with self.say.step("audit verify") as step:
            base = {k: v for k, v in os.environ.items() if not k.startswith(FOREIGN)}
            result = subprocess.run(
                [sys.executable, "-m", "promptship.cli", "audit", "verify"],
                env={**base, **self.env()},
                capture_output=True,
                text=True,
                timeout=120,
            )
            lines = (result.stdout + result.stderr).strip().splitlines()
            if result.returncode != 0:
                raise StepFailed("audit verify", "\n".join(lines[-10:]))
            step.done(lines[0] if lines else "the chain verifies")


def run_path(demo: Demo) -> None:
    """The whole story, step by step."""
    say, name = demo.say, scenario.NAME
    say.heading("1. Set-up: the real server, offline doubles, a short-soak policy")
    demo.start()
    for version, story in (
        (scenario.PREVIOUS, f"2. {name} {scenario.PREVIOUS}: the first release"),
        (scenario.GOOD, f"3. {name} {scenario.GOOD}: an update, soaked against live traffic"),
    ):
        say.heading(story)
        demo.push(version)
        demo.test_gate(version)
        request_id, message = demo.request_production(version)
        demo.soak(version, "passed", first=version == scenario.PREVIOUS)
        demo.approve_by_button(request_id, message)
        if version == scenario.PREVIOUS:
            demo.log_traffic()
    say.heading(f"4. {name} {scenario.REGRESSING}: a regressing edit")
    demo.push(scenario.REGRESSING)
    demo.test_gate(scenario.REGRESSING, expect_pass=False)
    say.heading(f"5. {name} {scenario.DIVERGENT}: passes its suite, answers customers differently")
    demo.push(scenario.DIVERGENT)
    demo.test_gate(scenario.DIVERGENT)
    demo.soak(scenario.DIVERGENT, "failed")
    say.heading("6. An incident: on-call rolls production back")
    demo.rollback()
    say.heading("7. The audit trail")
    demo.audit_verify()
