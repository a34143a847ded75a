"""A local HTTP double of the Slack Web API, strict where Slack is strict.

It checks the bot token, enforces Slack's Block Kit limits (``slack_limits``, answering
``{"ok": false, "error": "invalid_blocks"}`` like Slack), records every call, serves
``response_url`` posts (at most 5 per URL), and injects 429 (with ``Retry-After``) or 500.
It remembers the messages it posted: ``chat.update`` of a deleted or unknown message answers
``message_not_found``, a reply under a deleted parent ``thread_not_found``, and an archived
channel ``is_archived``; ``refuse`` makes a method answer any named error N times or forever.
``conversations.history`` lists a channel's top-level messages, newest first, paginated with
``limit`` and ``cursor``. ``users.lookupByEmail`` answers from ``emails`` (address → user
ID, case-insensitive), ``users_not_found`` for any other address, like Slack.
Sign in with Slack: ``GET /openid/connect/authorize`` sends the browser straight back to
its ``redirect_uri`` with a one-use code and the ``state``, signed in as whoever
``sign_in_as`` named; ``openid.connect.token`` takes the code with the OAuth client's id
and secret, and ``openid.connect.userInfo`` answers that person's claims for the token.
Point the bot at it with ``SLACK_API_URL=double.api_url``.

    with SlackDouble(token="xoxb-test") as slack:
        ...  # run the app with SLACK_API_URL=slack.api_url
        assert slack.calls("chat.postMessage")[0]["channel"] == "C0PROMPTOPS"
"""

from __future__ import annotations

import itertools
import json
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from promptship.testing.serve import ServerThread
from promptship.testing.slack_limits import LIMITS, block_problems
from promptship.testing.slack_oidc import OpenIdDouble

__all__ = ["LIMITS", "Call", "SlackDouble", "block_problems", "main", "slack_double"]


@dataclass
class Call:
    method: str
    args: dict[str, Any]
    at: float = field(default_factory=time.time)


class SlackDouble(OpenIdDouble):
    def __init__(
        self,
        token: str = "xoxb-test-token",
        *,
        users: dict[str, str] | None = None,
        usergroups: dict[str, list[str]] | None = None,
        emails: dict[str, str] | None = None,
        client_id: str = "1000.2000",
        client_secret: str = "oidc-client-secret",
    ) -> None:
        self.token = token
        self._init_openid(client_id, client_secret)
        self.usergroups = dict(usergroups or {})
        self.users = dict(users or {})
        #: the workspace directory for ``users.lookupByEmail``: address → user ID
        self.emails = {address.lower(): user for address, user in (emails or {}).items()}
        self._calls: list[Call] = []
        #: every call refused for breaking Slack's limits: (method, problems)
        self.refused: list[tuple[str, list[str]]] = []
        self._responses: dict[str, list[dict[str, Any]]] = {}
        self._failures: list[tuple[str | None, int, float | None]] = []
        #: [method, error, calls left (None: forever)]
        self._refusals: list[list[Any]] = []
        #: text of each message posted and not deleted, by (channel, ts)
        self._messages: dict[tuple[str, str], str] = {}
        self._deleted: set[tuple[str, str]] = set()
        #: messages posted in a thread (they are not in the channel's history)
        self._replies: set[tuple[str, str]] = set()
        self._archived: set[str] = set()
        self._lock = threading.Lock()
        self._ts = itertools.count(1)
        self._serving: ServerThread | None = None
        self.port = 0

    # -- control -----------------------------------------------------------------------

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def api_url(self) -> str:
        return f"{self.url}/api/"

    def response_url(self, key: str = "default") -> str:
        return f"{self.url}/response/{key}"

    def fail_next(
        self,
        count: int,
        status: int = 429,
        *,
        method: str | None = None,
        retry_after: float | None = 1,
    ) -> None:
        """The next ``count`` calls (of ``method``, or any) fail with ``status``."""
        with self._lock:
            self._failures.extend([(method, status, retry_after)] * count)

    def refuse(self, method: str, error: str, times: int | None = 1) -> None:
        """The next ``times`` calls of ``method`` (``None``: every call from now on) answer
        ``{"ok": false, "error": error}`` with HTTP 200, as Slack answers a permanent error."""
        with self._lock:
            self._refusals.append([method, error, times])

    def delete_message(self, channel: str, ts: str) -> None:
        """Someone deleted a message: updating it answers ``message_not_found``."""
        with self._lock:
            self._messages.pop((channel, ts), None)
            self._deleted.add((channel, ts))

    def archive_channel(self, channel: str) -> None:
        """The channel was archived: posting or updating in it answers ``is_archived``."""
        with self._lock:
            self._archived.add(channel)

    def messages_in(self, channel: str) -> dict[str, str]:
        """The text of every message still in ``channel`` as last posted or updated, by
        ``ts`` (oldest first)."""
        with self._lock:
            return {ts: text for (c, ts), text in sorted(self._messages.items()) if c == channel}

    def post_to_history(self, channel: str, text: str) -> None:
        """A message someone else posted in ``channel`` (tests: forged or unrelated ones)."""
        with self._lock:
            self._messages[(channel, f"{1700000000 + next(self._ts)}.000100")] = text

    @property
    def pending_failures(self) -> int:
        """Injected failures not yet served."""
        with self._lock:
            return len(self._failures)

    def calls(self, method: str | None = None) -> list[dict[str, Any]]:
        with self._lock:
            return [c.args for c in self._calls if method is None or c.method == method]

    def responses(self, key: str = "default") -> list[dict[str, Any]]:
        with self._lock:
            return list(self._responses.get(key, []))

    def all_responses(self) -> dict[str, list[dict[str, Any]]]:
        with self._lock:
            return {k: list(v) for k, v in self._responses.items()}

    def reset(self) -> None:
        with self._lock:
            self._calls.clear()
            self._responses.clear()
            self._failures.clear()
            self._refusals.clear()

    # -- the API -----------------------------------------------------------------------

    def _take_failure(self, method: str) -> tuple[int, float | None] | None:
        with self._lock:
            for i, (only, status, retry_after) in enumerate(self._failures):
                if only is None or only == method:
                    del self._failures[i]
                    return status, retry_after
        return None

    def _take_refusal(self, method: str) -> str | None:
        with self._lock:
            for refusal in self._refusals:
                only, error, left = refusal
                if only == method:
                    if left is not None:
                        refusal[2] = left - 1
                        if left <= 1:
                            self._refusals.remove(refusal)
                    return str(error)
        return None

    async def _api(self, request: Request) -> Response:
        method = request.path_params["method"]
        raw = await request.body()
        if request.headers.get("content-type", "").startswith("application/json"):
            args = json.loads(raw or b"{}")
        else:
            args = dict(parse_qsl(raw.decode()))
        args.update(request.query_params)
        for key in ("blocks", "view", "users"):
            if isinstance(args.get(key), str) and args[key][:1] in "[{":
                args[key] = json.loads(args[key])
        auth = request.headers.get("authorization", "")
        token = auth.removeprefix("Bearer ").strip() or args.get("token", "")
        failure = self._take_failure(method)
        if failure is not None:
            status, retry_after = failure
            headers = (
                {"Retry-After": str(int(retry_after))}
                if status == 429 and retry_after is not None
                else {}
            )
            error = "ratelimited" if status == 429 else "internal_error"
            return JSONResponse({"ok": False, "error": error}, status_code=status, headers=headers)
        with self._lock:
            self._calls.append(Call(method, args))
        if method.startswith("openid.connect."):  # Sign in with Slack: no bot token
            return JSONResponse(self._openid(method, args, token))
        if token != self.token:
            return JSONResponse({"ok": False, "error": "invalid_auth"})
        handler = getattr(self, "_m_" + method.replace(".", "_"), None)
        if handler is None:
            return JSONResponse({"ok": False, "error": "unknown_method"})
        refused = self._take_refusal(method)
        if refused is not None:
            return JSONResponse({"ok": False, "error": refused})
        result = handler(args)
        if result.get("error") in ("invalid_blocks", "msg_too_long", "no_text"):
            with self._lock:
                self.refused.append((method, result.get("errors", [result["error"]])))
        return JSONResponse(result)

    def _message_problems(self, args: dict[str, Any]) -> dict[str, Any] | None:
        text, blocks = args.get("text"), args.get("blocks")
        if not text and not blocks:
            return {"ok": False, "error": "no_text"}
        if text and len(text) > LIMITS["message_text"]:
            return {"ok": False, "error": "msg_too_long"}
        problems = block_problems(blocks, limit=LIMITS["message_blocks"])
        if problems:
            return {"ok": False, "error": "invalid_blocks", "errors": problems}
        return None

    def _m_auth_test(self, args: dict[str, Any]) -> dict[str, Any]:
        return {"ok": True, "url": "https://example.slack.com/", "team": "Example", "user": "promptship",
                "team_id": "T0001", "user_id": "U0BOT", "bot_id": "B0001"}  # fmt: skip

    def _m_chat_postMessage(self, args: dict[str, Any]) -> dict[str, Any]:
        channel = args.get("channel")
        if not channel:
            return {"ok": False, "error": "channel_not_found"}
        problem = self._message_problems(args)
        if problem:
            return problem
        with self._lock:
            if channel in self._archived:
                return {"ok": False, "error": "is_archived"}
            if args.get("thread_ts") and (channel, args["thread_ts"]) in self._deleted:
                return {"ok": False, "error": "thread_not_found"}
            ts = f"{1700000000 + next(self._ts)}.000100"
            self._messages[(channel, ts)] = str(args.get("text") or "")
            if args.get("thread_ts"):
                self._replies.add((channel, ts))
        return {
            "ok": True,
            "channel": args["channel"],
            "ts": ts,
            "message": {"text": args.get("text"), "ts": ts},
        }

    def _m_chat_update(self, args: dict[str, Any]) -> dict[str, Any]:
        if not args.get("channel") or not args.get("ts"):
            return {"ok": False, "error": "message_not_found"}
        problem = self._message_problems(args)
        if problem:
            return problem
        with self._lock:
            if args["channel"] in self._archived:
                return {"ok": False, "error": "is_archived"}
            if (args["channel"], args["ts"]) not in self._messages:
                return {"ok": False, "error": "message_not_found"}
            self._messages[(args["channel"], args["ts"])] = str(args.get("text") or "")
        return {"ok": True, "channel": args["channel"], "ts": args["ts"]}

    def _m_chat_delete(self, args: dict[str, Any]) -> dict[str, Any]:
        key = (args.get("channel", ""), args.get("ts", ""))
        if key not in self._messages:
            return {"ok": False, "error": "message_not_found"}
        self.delete_message(*key)
        return {"ok": True, "channel": key[0], "ts": key[1]}

    def _m_conversations_history(self, args: dict[str, Any]) -> dict[str, Any]:
        channel = args.get("channel")
        if not channel:
            return {"ok": False, "error": "channel_not_found"}
        try:
            limit = max(1, min(int(args.get("limit") or 100), 999))
            start = int(args.get("cursor") or 0)
        except ValueError:
            return {"ok": False, "error": "invalid_cursor"}
        with self._lock:
            newest_first = [
                {"type": "message", "ts": ts, "text": text}
                for (c, ts), text in sorted(
                    self._messages.items(), key=lambda item: float(item[0][1]), reverse=True
                )
                if c == channel and (c, ts) not in self._replies
            ]
        page = newest_first[start : start + limit]
        more = start + limit < len(newest_first)
        return {
            "ok": True,
            "messages": page,
            "has_more": more,
            "response_metadata": {"next_cursor": str(start + limit) if more else ""},
        }

    def _m_chat_postEphemeral(self, args: dict[str, Any]) -> dict[str, Any]:
        problem = self._message_problems(args)
        if problem:
            return problem
        if not args.get("user"):
            return {"ok": False, "error": "user_not_in_channel"}
        return {"ok": True, "message_ts": f"{1700000000 + next(self._ts)}.000200"}

    def _view_problems(self, view: Any) -> dict[str, Any] | None:
        if not isinstance(view, dict):
            return {"ok": False, "error": "invalid_arguments"}
        limit = LIMITS["view_blocks"]
        problems = block_problems(view.get("blocks"), limit=limit)
        if view.get("type") == "modal":
            limit = LIMITS["modal_title"]
            for key in ("title", "submit", "close"):
                text = (view.get(key) or {}).get("text", "")
                if (key == "title" or key in view) and not 0 < len(text) <= limit:
                    problems.append(f"modal {key} must be 1-{limit} chars")
            has_input = any(
                isinstance(b, dict) and b.get("type") == "input" for b in view.get("blocks") or []
            )
            if has_input and "submit" not in view:
                problems.append("a modal with input blocks needs a submit button")
        if len(str(view.get("private_metadata") or "")) > LIMITS["private_metadata"]:
            problems.append(f"private_metadata > {LIMITS['private_metadata']} chars")
        if len(str(view.get("callback_id") or "")) > LIMITS["callback_id"]:
            problems.append(f"callback_id > {LIMITS['callback_id']} chars")
        if problems:
            return {"ok": False, "error": "invalid_blocks", "errors": problems}
        return None

    def _m_views_open(self, args: dict[str, Any]) -> dict[str, Any]:
        if not args.get("trigger_id"):
            return {"ok": False, "error": "invalid_trigger_id"}
        return self._view_problems(args.get("view")) or {"ok": True, "view": {"id": "V0001"}}

    def _m_views_publish(self, args: dict[str, Any]) -> dict[str, Any]:
        if not args.get("user_id"):
            return {"ok": False, "error": "user_not_found"}
        return self._view_problems(args.get("view")) or {"ok": True, "view": {"id": "V0002"}}

    def _m_usergroups_users_list(self, args: dict[str, Any]) -> dict[str, Any]:
        group = args.get("usergroup")
        if group not in self.usergroups:
            return {"ok": False, "error": "no_such_subteam"}
        return {"ok": True, "users": self.usergroups[group]}

    def _m_users_lookupByEmail(self, args: dict[str, Any]) -> dict[str, Any]:
        email = str(args.get("email") or "").strip()
        if not email:
            return {"ok": False, "error": "invalid_arguments"}
        with self._lock:
            user = self.emails.get(email.lower())
        if user is None:
            return {"ok": False, "error": "users_not_found"}
        return {"ok": True, "user": {"id": user, "profile": {"email": email}, "deleted": False}}

    async def _response_url(self, request: Request) -> Response:
        key = request.path_params["key"]
        body = json.loads(await request.body() or b"{}")
        with self._lock:
            posts = self._responses.setdefault(key, [])
            if len(posts) >= 5:
                return Response("used_url", status_code=404)
            problems = block_problems(body.get("blocks"), limit=LIMITS["message_blocks"])
            if problems:
                self.refused.append(("response_url", problems))
                return Response("invalid_blocks: " + "; ".join(problems), status_code=400)
            posts.append(body)
        return Response("ok")

    # -- what a person in the workspace sees, for a double in another process -----------

    async def _inspect_calls(self, request: Request) -> Response:
        """``GET /_double/calls?method=chat.postMessage``: the recorded calls, oldest first."""
        return JSONResponse({"calls": self.calls(request.query_params.get("method"))})

    async def _inspect_responses(self, request: Request) -> Response:
        """``GET /_double/responses/{key}``: what the app posted to that response URL."""
        return JSONResponse({"responses": self.responses(request.path_params["key"])})

    # -- lifecycle ---------------------------------------------------------------------

    def start(self) -> SlackDouble:
        app = Starlette(
            routes=[
                Route("/api/{method}", self._api, methods=["GET", "POST"]),
                Route("/response/{key}", self._response_url, methods=["POST"]),
                Route("/openid/connect/authorize", self._authorize, methods=["GET"]),
                Route("/_double/calls", self._inspect_calls, methods=["GET"]),
                Route("/_double/responses/{key}", self._inspect_responses, methods=["GET"]),
            ]
        )
        self._serving = ServerThread(app, name="slack-double", lifespan="off").start()
        self.port = self._serving.port
        return self

    def stop(self) -> None:
        """Stop serving: later calls get connection refused."""
        if self._serving is not None:
            self._serving.stop()
            self._serving = None

    def __enter__(self) -> SlackDouble:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


@contextmanager
def slack_double(**kwargs: Any) -> Iterator[SlackDouble]:
    with SlackDouble(**kwargs) as double:
        yield double


def main() -> None:
    """Serve the double in its own process (benchmarks): prints the base URL, then serves.

    The Slack limits are enforced as in tests; problems are printed when it stops."""
    import argparse

    from promptship.testing.serve import serve_until_signalled

    parser = argparse.ArgumentParser(description="promptship's Slack Web API double")
    parser.add_argument("--token", default="xoxb-test-token", help="the bot token to accept")
    args = parser.parse_args()
    double = SlackDouble(token=args.token)
    serve_until_signalled(double.start)
    calls = sum(len(v) for v in double.all_responses().values()) + len(double.calls())
    print(f"{calls} calls, {len(double.refused)} refused: {double.refused[:3]}", flush=True)


if __name__ == "__main__":
    main()
