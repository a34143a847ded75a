"""Drive the running app the way Slack does: signed HTTP requests to ``/slack/events``."""

from __future__ import annotations

import itertools
import json
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import httpx

from promptship.testing.serve import ServerThread
from promptship.testing.slack_double import SlackDouble
from promptship.testing.slack_people import sign as slack_signature

__all__ = ["BOT_TOKEN", "SIGNING_SECRET", "ServerThread", "SlackClient", "sign", "wait_for"]

FIXTURES = Path(__file__).parent / "fixtures" / "slack"
SIGNING_SECRET = "8f742231b10e8888abcd99yyyzzz85a5"
BOT_TOKEN = "xoxb-17653672481-19874698323-pdFZKVeTuE8sk7oOcBrzbqgy"


def sign(body: str, timestamp: int | None = None, secret: str = SIGNING_SECRET) -> dict[str, str]:
    return slack_signature(body, secret, timestamp)


class SlackClient:
    """Sends signed slash commands, button clicks, modal submissions and events."""

    def __init__(self, base_url: str, double: SlackDouble, channel: str = "C0PROMPTOPS") -> None:
        self.http = httpx.Client(base_url=base_url, timeout=10)
        self.double = double
        self.channel = channel
        self._keys = itertools.count(1)

    def close(self) -> None:
        self.http.close()

    def post(
        self, body: str, content_type: str, headers: dict[str, str] | None = None
    ) -> httpx.Response:
        return self.http.post(
            "/slack/events",
            content=body,
            headers={"Content-Type": content_type, **sign(body), **(headers or {})},
        )

    def command(self, text: str, user: str = "U04") -> tuple[httpx.Response, str]:
        body, key = self.command_body(text, user)
        return self.post(body, "application/x-www-form-urlencoded"), key

    def command_body(self, text: str, user: str = "U04") -> tuple[str, str]:
        """The form body Slack posts for ``/prompt text`` and its response key (unsigned)."""
        key = f"cmd{next(self._keys)}"
        form = {
            "token": "legacy",
            "team_id": "T0001",
            "team_domain": "example",
            "channel_id": self.channel,
            "channel_name": "promptops",
            "user_id": user,
            "user_name": user.lower(),
            "command": "/prompt",
            "text": text,
            "api_app_id": "A123456",
            "is_enterprise_install": "false",
            "response_url": self.double.response_url(key),
            "trigger_id": "13345224609.738474920.8088930838d88f008e0",
        }
        return urlencode(form), key

    def click(
        self, action_id: str, value: str, user: str, message_ts: str = "1700000001.000100"
    ) -> tuple[httpx.Response, str]:
        key = f"act{next(self._keys)}"
        payload = json.loads((FIXTURES / "block_actions.json").read_text())
        payload["user"] = {
            "id": user,
            "username": user.lower(),
            "name": user.lower(),
            "team_id": "T0001",
        }
        payload["channel"] = {"id": self.channel, "name": "promptops"}
        payload["container"]["channel_id"] = self.channel
        payload["container"]["message_ts"] = message_ts
        payload["response_url"] = self.double.response_url(key)
        payload["actions"] = [
            {"action_id": action_id, "block_id": "decision", "value": value, "type": "button",
             "text": {"type": "plain_text", "text": action_id.title()}, "action_ts": "1700000005.123456"}
        ]  # fmt: skip
        return self.post(
            urlencode({"payload": json.dumps(payload)}), "application/x-www-form-urlencoded"
        ), key

    def submit_view(
        self, callback_id: str, private_metadata: str, reason: str, user: str
    ) -> httpx.Response:
        payload = json.loads((FIXTURES / "view_submission.json").read_text())
        payload["user"] = {
            "id": user,
            "username": user.lower(),
            "name": user.lower(),
            "team_id": "T0001",
        }
        payload["view"]["callback_id"] = callback_id
        payload["view"]["private_metadata"] = private_metadata
        payload["view"]["state"]["values"] = {
            "reason": {"value": {"type": "plain_text_input", "value": reason}}
        }
        return self.post(
            urlencode({"payload": json.dumps(payload)}), "application/x-www-form-urlencoded"
        )

    def event(self, event: dict[str, Any], event_id: str = "Ev0001") -> httpx.Response:
        body = json.loads((FIXTURES / "app_home_opened.json").read_text())
        body["event"] = event
        body["event_id"] = event_id
        return self.post(json.dumps(body), "application/json")


def wait_for(predicate: Any, timeout: float = 10.0, what: str = "condition") -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.02)
    raise AssertionError(f"timed out waiting for {what}")
