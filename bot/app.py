"""``build_app``: the Bolt app, configured and wired; nothing Slack-related at import time."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from slack_bolt.async_app import AsyncApp
from slack_bolt.authorization import AuthorizeResult
from slack_bolt.request.async_request import AsyncBoltRequest
from slack_sdk.http_retry.builtin_async_handlers import (
    AsyncConnectionErrorRetryHandler,
    AsyncRateLimitErrorRetryHandler,
    AsyncServerErrorRetryHandler,
)
from slack_sdk.web.async_client import AsyncWebClient

from bot.blocks import messages
from bot.listeners import actions, commands, events, views
from promptship.config import Settings
from promptship.domain.identity import Actor, Via
from promptship.errors import BadInput, PromptshipError
from promptship.services import Promptship

log = logging.getLogger("promptship.slack")


def check_settings(settings: Settings) -> str | None:
    """Which Slack mode the settings ask for (``http``, ``socket``) or None; BadInput naming the
    variable when they are incomplete or malformed."""
    bot = settings.slack_bot_token.get_secret_value() if settings.slack_bot_token else ""
    secret = (
        settings.slack_signing_secret.get_secret_value() if settings.slack_signing_secret else ""
    )
    app_token = settings.slack_app_token.get_secret_value() if settings.slack_app_token else ""
    if not (bot or secret or app_token):
        return None
    if not bot:
        raise BadInput("SLACK_BOT_TOKEN is not set: Slack needs the bot token (xoxb-...)")
    if not bot.startswith("xoxb-"):
        raise BadInput("SLACK_BOT_TOKEN is malformed: a bot token starts with xoxb-")
    if app_token:
        if not app_token.startswith("xapp-"):
            raise BadInput("SLACK_APP_TOKEN is malformed: an app-level token starts with xapp-")
        return "socket"
    if not secret:
        raise BadInput(
            "SLACK_SIGNING_SECRET is not set: HTTP mode needs it to verify requests "
            "(or set SLACK_APP_TOKEN for Socket Mode)"
        )
    return "http"


def web_client(settings: Settings) -> AsyncWebClient:
    token = settings.slack_bot_token.get_secret_value() if settings.slack_bot_token else None
    return AsyncWebClient(
        token=token,
        base_url=settings.slack_api_url,
        retry_handlers=[
            AsyncConnectionErrorRetryHandler(max_retry_count=2),
            AsyncRateLimitErrorRetryHandler(max_retry_count=1),
            AsyncServerErrorRetryHandler(max_retry_count=2),
        ],
    )


class BotIdentity:
    """Who the bot is in its workspace (``auth.test``), looked up once at start-up.

    Bolt's single-workspace authorization calls ``auth.test`` on the first request and makes
    its ack wait through the client's retries (seconds when Slack answers 429 or 503). Given
    as Bolt's ``authorize``, this answers at once: with the identity once it is known, with
    the token alone until then (a bot event is then not recognised as the bot's own, and
    the lookup is started again)."""

    def __init__(self, client: AsyncWebClient) -> None:
        self.client = client
        self.known: AuthorizeResult | None = None
        self._looking: asyncio.Task[None] | None = None

    async def resolve(self) -> None:
        """Look the identity up (the client retries); log and leave it unknown on failure."""
        try:
            response = await self.client.auth_test()
        except Exception as exc:  # Slack down or the token refused: requests still go on
            log.warning("slack: could not look up the bot's identity (auth.test): %s", exc)
            return
        self.known = AuthorizeResult.from_auth_test_response(
            bot_token=self.client.token, auth_test_response=response
        )

    def look_up(self) -> None:
        """Start the lookup in the background, unless it is known or already under way."""
        if self.known is None and (self._looking is None or self._looking.done()):
            self._looking = asyncio.create_task(self.resolve())

    def stop(self) -> None:
        if self._looking is not None:
            self._looking.cancel()

    async def authorize(self) -> AuthorizeResult:
        if self.known is not None:
            return self.known
        self.look_up()
        return AuthorizeResult(enterprise_id=None, team_id=None, bot_token=self.client.token)


def build_app(
    settings: Settings,
    core: Promptship,
    client: AsyncWebClient,
    identity: BotIdentity | None = None,
) -> AsyncApp:
    """The Bolt app. ``identity`` should be resolved at start-up (``BotIdentity.resolve``);
    no request waits for it either way."""
    signing = (
        settings.slack_signing_secret.get_secret_value() if settings.slack_signing_secret else None
    )
    identity = identity or BotIdentity(client)
    app = AsyncApp(
        # Bolt's own client carries no token: ``authorize`` gives each request the bot's
        client=AsyncWebClient(
            base_url=client.base_url,
            timeout=client.timeout,
            retry_handlers=client.retry_handlers,
        ),
        authorize=lambda: identity.authorize(),  # Bolt reads a bound method's self as an arg
        signing_secret=signing,
        request_verification_enabled=True,
        raise_error_for_unhandled_request=False,
        ignoring_self_events_enabled=True,
    )

    @app.middleware
    async def inject(context: Any, body: dict[str, Any], next: Any) -> Any:
        context["core"] = core
        # who acts is the user Slack signed the request for, never a field of the payload
        user = context.get("user_id") or (body.get("user") or {}).get("id")
        context["actor"] = Actor(user, Via.SLACK) if user else None
        context["public_url"] = settings.public_url  # tokens show it; messages link under it
        return await next()

    @app.error
    async def on_error(
        error: Exception,
        body: dict[str, Any],
        request: AsyncBoltRequest,
        respond: Any,
        logger: logging.Logger,
    ) -> None:
        if isinstance(error, PromptshipError):
            reply = messages.error_message(error.message, error.hint)
        else:
            logger.exception("unexpected error handling a Slack request", exc_info=error)
            reply = messages.error_message("Something went wrong on our side; it was logged.")
        # a response_url is the caller's to choose: answer it only when Slack sent the request
        # (over Socket Mode, or over HTTP after Bolt checked the signature with a real secret)
        verified = request.mode == "socket_mode" or bool(signing)
        if not verified:
            return
        if (respond is not None and body.get("response_url")) or body.get("response_urls"):
            await respond(**reply.payload(), response_type="ephemeral", replace_original=False)

    for module in (commands, actions, views, events):
        module.register(app)
    return app
