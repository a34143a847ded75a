"""People in a Slack workspace, acting on the running app the way Slack relays them: signed
slash commands and button clicks posted to ``/slack/events``; what the app posted is read
back from the Slack double (``GET /_double/calls``), as a person reads the channel.
Used by the demo; tests use the in-process helpers built on ``sign``."""

from __future__ import annotations

import hashlib
import hmac
import itertools
import json
import time
from collections.abc import Callable
from typing import Any
from urllib.parse import urlencode

import httpx

__all__ = ["Workspace", "sign"]


def sign(body: str, secret: str, timestamp: int | None = None) -> dict[str, str]:
    """Slack's request signature headers for ``body`` (v0, HMAC-SHA256)."""
    ts = str(int(time.time()) if timestamp is None else timestamp)
    digest = hmac.new(secret.encode(), f"v0:{ts}:{body}".encode(), hashlib.sha256).hexdigest()
    return {"X-Slack-Request-Timestamp": ts, "X-Slack-Signature": f"v0={digest}"}


class Workspace:
    """Slash commands and clicks by named users, and what the app posted."""

    def __init__(
        self, app_url: str, double_url: str, signing_secret: str, channel: str = "C0PROMPTOPS"
    ) -> None:
        self.app = httpx.Client(base_url=app_url, timeout=15)
        self.double = httpx.Client(base_url=double_url, timeout=15)
        self.double_url = double_url.rstrip("/")
        self.secret = signing_secret
        self.channel = channel
        self._keys = itertools.count(1)

    def close(self) -> None:
        self.app.close()
        self.double.close()

    def _post(self, body: str) -> httpx.Response:
        headers = {"Content-Type": "application/x-www-form-urlencoded", **sign(body, self.secret)}
        response = self.app.post("/slack/events", content=body, headers=headers)
        response.raise_for_status()
        return response

    def _user(self, user: str) -> dict[str, str]:
        return {"id": user, "username": user.lower(), "name": user.lower(), "team_id": "T0001"}

    def command(self, text: str, user: str) -> str:
        """``/prompt text`` typed by ``user``: the key its replies are read back by."""
        key = f"cmd{next(self._keys)}-{user}"
        form = {
            "token": "unused", "team_id": "T0001", "team_domain": "example",
            "channel_id": self.channel, "channel_name": "promptops", "user_id": user,
            "user_name": user.lower(), "command": "/prompt", "text": text,
            "api_app_id": "A0PROMPTSHIP", "is_enterprise_install": "false",
            "response_url": f"{self.double_url}/response/{key}",
            "trigger_id": f"{time.time():.0f}.1.demo",
        }  # fmt: skip
        self._post(urlencode(form))
        return key

    def click(self, message: dict[str, Any], action_id: str, user: str) -> str:
        """``user`` presses the button ``action_id`` of a message the app posted (and
        confirms): the key its replies are read back by."""
        button = next(
            element
            for block in message.get("blocks", [])
            if block.get("type") == "actions"
            for element in block.get("elements", [])
            if element.get("action_id") == action_id
        )
        key = f"act{next(self._keys)}-{user}"
        ts = str(message.get("ts", "1700000001.000100"))
        payload: dict[str, Any] = {
            "type": "block_actions",
            "user": self._user(user),
            "api_app_id": "A0PROMPTSHIP",
            "token": "unused",
            "container": {"type": "message", "message_ts": ts, "channel_id": self.channel,
                          "is_ephemeral": False},
            "trigger_id": f"{time.time():.0f}.2.demo",
            "team": {"id": "T0001", "domain": "example"},
            "enterprise": None,
            "is_enterprise_install": False,
            "channel": {"id": self.channel, "name": "promptops"},
            "message": {"type": "message", "text": message.get("text", ""), "ts": ts,
                        "blocks": message.get("blocks", [])},
            "state": {"values": {}},
            "response_url": f"{self.double_url}/response/{key}",
            "actions": [{"action_id": action_id, "block_id": "decision",
                         "value": button["value"], "type": "button", "text": button["text"],
                         "action_ts": f"{time.time():.6f}"}],
        }  # fmt: skip
        self._post(urlencode({"payload": json.dumps(payload)}))
        return key

    def posted(
        self, predicate: Callable[[dict[str, Any]], bool] = lambda m: True
    ) -> list[dict[str, Any]]:
        """Messages the app posted (``chat.postMessage``), oldest first."""
        calls = self.double.get("/_double/calls", params={"method": "chat.postMessage"})
        messages = calls.json()["calls"]
        return [m for m in messages if predicate(m)]

    def replies(self, key: str) -> list[dict[str, Any]]:
        replies = self.double.get(f"/_double/responses/{key}").json()["responses"]
        return list(replies)

    def reply(self, key: str, timeout: float = 20.0) -> dict[str, Any]:
        """The app's latest reply on ``key``, waiting for the first."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            found = self.replies(key)
            if found:
                return found[-1]
            time.sleep(0.1)
        raise TimeoutError(f"the app did not reply to {key} within {timeout:.0f} s")


def text_of(message: dict[str, Any]) -> str:
    """A message's text and its blocks' text, for reading."""
    parts = [str(message.get("text") or "")]
    for block in message.get("blocks") or []:
        text = block.get("text")
        if isinstance(text, dict):
            parts.append(str(text.get("text", "")))
        for element in block.get("elements") or []:
            if isinstance(element, dict) and isinstance(element.get("text"), str):
                parts.append(element["text"])
    return "\n".join(p for p in parts if p)
