"""Live updates in the console: the overview's fragment, and the event stream that tells an
open page a pointer moved or a request changed, bounded per process, ending with the
session and as the server shuts down."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest

from promptship.clock import ManualClock
from promptship.console import live
from promptship.testing.slack_double import SlackDouble
from tests.console_served import (
    PROMPT,
    ServedConsole,
    events,
    roll_back,
    two_versions_in_staging,
)
from tests.slack_helpers import wait_for

STREAM_TIMEOUT = httpx.Timeout(10.0)  # an upper bound: every read below waits on an event


@pytest.fixture
def served(tmp_path: Path, slack_api: SlackDouble) -> Iterator[ServedConsole]:
    with ServedConsole(tmp_path, slack_api) as found:
        found.run(two_versions_in_staging)
        yield found


def test_the_overview_fragment_is_the_pages_content_alone(served: ServedConsole) -> None:
    assert httpx.get(f"{served.url}/fragments/overview").status_code == 401
    client = served.signed_in()
    page = client.get("/")
    fragment = client.get("/fragments/overview")
    assert fragment.status_code == 200
    assert fragment.headers["content-security-policy"] == page.headers["content-security-policy"]
    assert "<html" not in fragment.text and "Sign out" not in fragment.text
    assert f'<strong class="prompt">{PROMPT}</strong>' in fragment.text
    assert "<code>1.1.0</code>" in fragment.text
    # the page holds the same content, inside the element the script swaps it into
    assert 'id="overview" data-fragment="/fragments/overview" data-events="/events"' in page.text
    assert fragment.text.strip() in page.text


def test_the_stream_tells_of_a_rollback_and_the_fragment_shows_it(served: ServedConsole) -> None:
    assert httpx.get(f"{served.url}/events").status_code == 401  # no session, no stream
    client = served.signed_in()
    with client.stream("GET", "/events", timeout=STREAM_TIMEOUT) as stream:
        assert stream.status_code == 200
        assert stream.headers["content-type"].startswith("text/event-stream")
        received = events(stream.iter_lines())
        assert next(received) == {"retry": "3000", "": "live"}  # watching from here on
        served.run(roll_back)
        for event in received:
            assert event.get("event") == "change", event
            data = json.loads(event["data"])
            if f"{PROMPT}/staging" in data["deployments"]:
                break
    assert data == {"deployments": [f"{PROMPT}/staging"], "activity": True}
    fragment = client.get("/fragments/overview").text
    assert "<code>1.0.0</code></a> <span" in fragment  # staging runs 1.0.0 again
    assert "<code>1.1.0</code></a> <span" not in fragment


def test_a_quiet_stream_sends_heartbeats_and_ends_when_the_session_does(
    served: ServedConsole,
) -> None:
    _live_updates(served).heartbeat = 0.05
    clock = ManualClock(datetime.now(UTC))
    served.app.state.core.clock = clock
    client = served.signed_in()
    with client.stream("GET", "/events", timeout=STREAM_TIMEOUT) as stream:
        received = events(stream.iter_lines())
        next(received)
        clock.advance(timedelta(hours=12, seconds=1))  # the session's lifetime is over
        rest = list(received)  # the server ends the stream itself
    assert rest[-1] == {"event": "signed-out", "data": "{}"}
    assert all(e == {"": "heartbeat"} for e in rest[:-1])


def test_streams_are_capped_per_process(served: ServedConsole) -> None:
    limit = _live_updates(served)
    limit.max_streams = 1
    client = served.signed_in()
    with client.stream("GET", "/events", timeout=STREAM_TIMEOUT) as first:
        received = events(first.iter_lines())  # kept: dropping it closes the connection
        next(received)
        second = client.get("/events")
        assert second.status_code == 503 and second.headers["retry-after"] == "30"
        assert "Too many live connections" in second.text
    # the first one's place is given back when its page goes (the connection closes)
    _wait(lambda: limit.open == 0)
    with client.stream("GET", "/events", timeout=STREAM_TIMEOUT) as third:
        assert third.status_code == 200


def test_shutting_down_ends_open_streams_cleanly(tmp_path: Path, slack_api: SlackDouble) -> None:
    served = ServedConsole(tmp_path, slack_api)
    with served:
        client = served.signed_in()
        with client.stream("GET", "/events", timeout=STREAM_TIMEOUT) as stream:
            received = events(stream.iter_lines())
            next(received)
            stopper = threading.Thread(target=served.server.__exit__)
            stopper.start()
            # a stream cut at the graceful timeout breaks off mid-body (httpx raises); one
            # ended by the server finishes its body, so the loop just ends
            assert list(received) == []
            stopper.join(timeout=30)
    assert not stopper.is_alive()
    assert _live_updates(served).open == 0


def _live_updates(served: ServedConsole) -> live.LiveUpdates:
    for route in served.app.routes:
        endpoint = getattr(route, "endpoint", None)
        if getattr(route, "path", None) == "/events" and endpoint is not None:
            owner = getattr(endpoint, "__self__", None)
            assert isinstance(owner, live.LiveUpdates)
            return owner
    raise AssertionError("no /events route")


def _wait(predicate: Callable[[], bool]) -> None:
    wait_for(predicate, 10.0, "the stream's place to be given back")
