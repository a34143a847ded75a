"""What the console needs to know from the process settings: where it is served (the public
URL's path prefix), how people sign in, and what is missing for sign-in to work."""

from __future__ import annotations

from dataclasses import dataclass, field
from urllib.parse import urlsplit

from promptship.config import Settings
from promptship.console.sessions import ENV_VAR as SESSION_VAR
from promptship.console.sessions import resolve_secret

SLACK_AUTHORIZE_URL = "https://slack.com/openid/connect/authorize"


def authorize_url_for(api_url: str) -> str:
    """Slack's authorize page, or the same origin's for a Web API that is not slack.com."""
    parts = urlsplit(api_url)
    if parts.hostname in (None, "slack.com") or not parts.scheme:
        return SLACK_AUTHORIZE_URL
    return f"{parts.scheme}://{parts.netloc}/openid/connect/authorize"


@dataclass(frozen=True)
class ConsoleSettings:
    #: the path every link and redirect starts with, ``/`` or e.g. ``/promptship/``
    base_path: str
    #: the public address ending in ``/``, or None (then the request's own is used)
    public_url: str | None
    secure: bool
    api_url: str
    authorize_url: str
    client_id: str | None
    client_secret: str | None
    team_id: str | None
    secret: bytes | None
    #: the settings sign-in lacks (empty when it works)
    missing: list[str] = field(default_factory=list)

    def path(self, relative: str = "") -> str:
        return self.base_path + relative.lstrip("/")

    @classmethod
    def from_settings(cls, settings: Settings) -> ConsoleSettings:
        public = (settings.public_url or "").strip() or None
        base_path = "/"
        if public is not None:
            public = public.rstrip("/") + "/"
            base_path = urlsplit(public).path or "/"
        secret_value = settings.session_secret
        secret = resolve_secret(
            secret_value.get_secret_value() if secret_value is not None else None,
            settings.database_url,
        )
        client_secret = settings.slack_client_secret
        found = cls(
            base_path=base_path,
            public_url=public,
            secure=bool(public and public.startswith("https://")),
            api_url=settings.slack_api_url.rstrip("/") + "/",
            authorize_url=settings.slack_authorize_url or authorize_url_for(settings.slack_api_url),
            client_id=(settings.slack_client_id or "").strip() or None,
            client_secret=client_secret.get_secret_value() if client_secret else None,
            team_id=(settings.slack_team_id or "").strip() or None,
            secret=secret,
        )
        for name, value in (
            ("SLACK_CLIENT_ID", found.client_id),
            ("SLACK_CLIENT_SECRET", found.client_secret),
            ("PROMPTSHIP_SLACK_TEAM_ID", found.team_id),
            (SESSION_VAR, found.secret),
        ):
            if not value:
                found.missing.append(name)
        return found
