"""Events: the App Home tab."""

from __future__ import annotations

from typing import Any

from slack_bolt.async_app import AsyncApp
from slack_sdk.web.async_client import AsyncWebClient

from bot.blocks import views
from promptship.services import Promptship


async def publish_home(client: AsyncWebClient, core: Promptship, user: str) -> None:
    statuses = await core.status()
    events = await core.recent_events(10)
    soaks = {}
    for name in sorted({plan.prompt for plan in await core.running_soaks()}):
        soaks[name] = [s for s in await core.soak_status(name) if s.state == "running"]
    await client.views_publish(
        user_id=user,
        view=views.home_view(user, statuses, core.policy.environments.names, events, soaks),
    )


async def app_home_opened(event: dict[str, Any], client: AsyncWebClient, core: Promptship) -> None:
    if event.get("tab", "home") == "home":
        await publish_home(client, core, event["user"])


def register(app: AsyncApp) -> None:
    app.event("app_home_opened")(app_home_opened)
