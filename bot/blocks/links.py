"""Links from Slack messages to the web console's pages, under ``PROMPTSHIP_PUBLIC_URL``.

Without a public URL there are no links: the messages keep only their command hints."""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import quote, urlsplit

from bot.blocks.limits import escape

#: a longer public URL gives no links: each would crowd the text it sits in
MAX_BASE = 300
#: what may stay as it is in the public URL; anything else (spaces, ``|``, ``<``) is encoded
_URL_SAFE = ":/?#[]@!$&'()*+,;=%~"


@dataclass(frozen=True)
class ConsoleLinks:
    """The console's page addresses; ``base`` is the public URL ending in ``/``."""

    base: str

    @classmethod
    def from_public_url(cls, public_url: str | None) -> ConsoleLinks | None:
        """Links under ``public_url``, or None when it is unset, not http(s) or too long."""
        url = (public_url or "").strip()
        if not url or len(url) > MAX_BASE:
            return None
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            return None
        # the console is served under the URL's path: a query or fragment is no part of it
        base = f"{parts.scheme}://{parts.netloc}{parts.path}".rstrip("/")
        return cls(quote(base, safe=_URL_SAFE) + "/")

    def version(self, name: str, version: str, show: str | None = None) -> str:
        url = f"{self.base}prompts/{_part(name)}/{_part(version)}"
        return f"{url}?show={_part(show)}" if show else url

    def diff(self, name: str, old: str, new: str) -> str:
        return f"{self.base}prompts/{_part(name)}/diff/{_part(old)}/{_part(new)}"

    def soak(self, soak_id: int) -> str:
        return f"{self.base}soaks/{int(soak_id)}"


def _part(text: str) -> str:
    """One path segment or query value, every reserved character encoded."""
    return quote(text, safe="")


def link(url: str, label: str) -> str:
    """``<url|label>`` in mrkdwn: the URL's ``&``, ``<`` and ``>`` escaped as Slack asks."""
    return f"<{escape(url)}|{escape(label)}>"
