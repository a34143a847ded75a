"""What a model provider is to the runner: one call, one answer or a ProviderError."""

from __future__ import annotations

import functools
import ssl
import threading
import urllib.parse
from dataclasses import dataclass
from typing import Protocol


@dataclass(frozen=True)
class Completion:
    text: str
    input_tokens: int | None
    output_tokens: int | None
    latency_ms: float
    #: what the call did differently from what was asked, for the run's record (e.g. a
    #: setting the provider refuses for this model, not sent)
    notes: tuple[str, ...] = ()


class ProviderError(Exception):
    """No answer, after the provider's retries; the message says why, for people."""


_TOOL_NAMES_SHOWN = 5


def shown_url(url: object) -> str:
    """``url`` as an error message may show it: scheme, host, port and path, without the
    user name and password (``http://user:secret@proxy``), query or fragment it may carry."""
    parts = urllib.parse.urlsplit(str(url))
    host = parts.hostname or ""
    if ":" in host:  # an IPv6 address
        host = f"[{host}]"
    try:
        port = parts.port
    except ValueError:  # not a number: shown without it
        port = None
    netloc = f"{host}:{port}" if port is not None else host
    return urllib.parse.urlunsplit((parts.scheme, netloc, parts.path, "", ""))


def not_an_answer(url: object, content_type: str | None, api: str, hint: str) -> ProviderError:
    """The provider at ``url`` answered, but not with an ``api`` response (an HTML page from
    a proxy, an error body answered 200): say what it sent and what to check."""
    what = f" ({content_type.partition(';')[0].strip()[:60]})" if content_type else ""
    return ProviderError(
        f"the provider at {shown_url(url)} answered something that is not {api}{what}: {hint}"
    )


def called_tools(names: list[str]) -> ProviderError:
    """The model called tools instead of answering: no answer to check, naming them."""
    shown = ", ".join(name[:64] or "(unnamed)" for name in names[:_TOOL_NAMES_SHOWN])
    if len(names) > _TOOL_NAMES_SHOWN:
        shown += f" and {len(names) - _TOOL_NAMES_SHOWN} more"
    tool = "tools" if len(names) > 1 else "tool"
    return ProviderError(f"the model called the {tool} {shown} instead of answering")


@functools.cache
def tls_context() -> ssl.SSLContext:
    """The TLS client context every provider of the process shares (certificates verified
    against the system's, or ``SSL_CERT_FILE``/``SSL_CERT_DIR``), as the SDKs' HTTP library
    builds it. Building one loads the certificate store, some 20 ms of CPU on the event
    loop, which an SDK client left to itself pays again at every run and soak cycle."""
    import httpx2

    return httpx2.create_ssl_context()


class Learned:
    """What providers learned from a server's refusals, per (base URL, model), for the whole
    process and every thread: a model that refused a setting once is not asked again."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._keys: set[tuple[str, str]] = set()

    def __contains__(self, key: tuple[str, str]) -> bool:
        with self._lock:
            return key in self._keys

    def add(self, key: tuple[str, str]) -> bool:
        """Remember ``key``; True if it was not known yet (the first call to learn it)."""
        with self._lock:
            if key in self._keys:
                return False
            self._keys.add(key)
            return True

    def forget(self) -> None:
        with self._lock:
            self._keys.clear()


class Provider(Protocol):
    name: str

    async def complete(
        self,
        *,
        model: str,
        system: str,
        messages: list[dict[str, str]],
        temperature: float,
        max_tokens: int,
    ) -> Completion:
        """One answer to ``messages`` (the few-shot turns and the user's, last), under
        ``system``."""
        ...

    async def aclose(self) -> None: ...
