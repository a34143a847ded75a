"""The console's audit log and health pages: filters, keyset pages and the export; the
chain's verification state from the newest signed checkpoint; readiness, the outbox and the
replicas seen."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime, timedelta

from sqlalchemy import text

from promptship.clock import ManualClock
from promptship.services import Promptship, audit
from promptship.store.db import Database
from tests.console_helpers import Console, between, rows
from tests.helpers import REQUESTER, push, slack


def seed_audit(console: Console) -> None:
    """250 events: two prompts, two people, on 2026-03-01 then (from #201) 2026-03-02."""

    async def go() -> None:
        db = Database(console.db_url)
        try:
            clock = ManualClock(datetime(2026, 3, 1, 9, tzinfo=UTC))
            async with db.transaction() as session:
                for i in range(250):
                    if i == 200:
                        clock.advance(timedelta(days=1))
                    await audit.record(
                        session,
                        clock,
                        actor="U0ANN" if i % 2 else "U0BOB",
                        action="version.pushed" if i % 5 else "request.promoted",
                        prompt="billing-faq" if i % 3 else "customer-support",
                        version=f"1.0.{i}",
                    )
        finally:
            await db.dispose()

    asyncio.run(go())


def seqs_of(html: str) -> list[int]:
    return [int(between(r, "<td>", "</td>")) for r in rows(html, "audit") if "No events" not in r]


def test_the_audit_log_filters_and_pages_by_keyset_without_repeats(console: Console) -> None:
    seed_audit(console)
    console.sign_in()
    first = console.client.get("/audit").text
    page1 = seqs_of(first)
    assert len(page1) == 100 and page1 == sorted(page1, reverse=True)
    older = between(first, '<a class="older" href="', '"').replace("&amp;", "&")
    assert older == f"/audit?before={page1[-1]}"
    page2 = seqs_of(console.client.get(older).text)
    assert len(page2) == 100 and max(page2) < min(page1)
    third = console.client.get(f"/audit?before={page2[-1]}").text
    page3 = seqs_of(third)
    assert len(page3) == 50 and not set(page3) & set(page1 + page2)
    assert 'class="older"' not in third
    # each filter narrows the rows; the next page keeps the filters
    ann = console.client.get("/audit?actor=U0ANN&prompt=billing-faq").text
    shown = rows(ann, "audit")
    assert len(shown) == 83 and all("U0ANN" in r and "billing-faq" in r for r in shown)
    assert 'value="U0ANN"' in ann
    promoted = rows(console.client.get("/audit?action=request.promoted").text, "audit")
    assert len(promoted) == 50 and all("request.promoted" in r for r in promoted)
    day2 = seqs_of(console.client.get("/audit?since=2026-03-02").text)
    day1 = console.client.get("/audit?until=2026-03-01").text
    assert len(day2) == 50 and min(day2) > 200
    assert len(seqs_of(day1)) == 100 and "?until=2026-03-01&amp;before=" in day1
    assert seqs_of(console.client.get("/audit?since=2026-03-01&until=2026-03-01").text)[0] == 200
    bad = console.client.get("/audit?since=March")
    assert bad.status_code == 400 and "since: &#39;March&#39; is not a date" in bad.text
    assert "YYYY-MM-DD" in bad.text
    # the export holds the filtered view, newest first, as JSON lines
    export = console.client.get("/audit/export.jsonl?action=request.promoted&since=2026-03-02")
    assert export.status_code == 200
    assert export.headers["content-type"].startswith("application/jsonl")
    lines = [json.loads(x) for x in export.text.splitlines()]
    assert len(lines) == 10 and {x["action"] for x in lines} == {"request.promoted"}
    assert [x["seq"] for x in lines] == sorted((x["seq"] for x in lines), reverse=True)
    assert (
        'href="/audit/export.jsonl?action=request.promoted"'
        in console.client.get("/audit?action=request.promoted").text
    )
    console.client.cookies.clear()
    assert console.client.get("/audit/export.jsonl").status_code == 303


def test_the_health_page_shows_readiness_the_outbox_and_replicas(console: Console) -> None:
    async def go(core: Promptship) -> int:
        await push(core, "customer-support", "1.0.0")
        await core.record_validation_run(
            "customer-support", "1.0.0", [{"input": "q", "passed": True}], slack(REQUESTER)
        )
        await core.request_promotion("customer-support", "1.0.0", "staging", slack(REQUESTER))
        channel = core.policy.channel or ""
        assert await core.lease_outbox_channel(channel, "replica-7")
        first = (await core.due_notifications(channel, limit=1))[0]
        assert await core.notification_dead(first, "channel_not_found <b>")
        return await core.outbox_backlog()

    backlog = console.seed(go)
    assert backlog > 0
    console.sign_in()
    assert 'href="/health"' in console.client.get("/").text
    page = console.client.get("/health")
    assert page.status_code == 200
    assert "Ready: the database answers and is migrated." in page.text
    assert "not started here" in page.text  # this test server runs no workers
    replicas = rows(page.text, "replicas")
    assert len(replicas) == 1 and "<code>replica-7</code>" in replicas[0]
    outbox = between(page.text, '<p class="outbox">', "</p>")
    assert outbox.startswith(f"{backlog} waiting to be sent · 1 dead letter (retry with")
    dead = rows(page.text, "dead")
    assert len(dead) == 1 and "channel_not_found &lt;b&gt;" in dead[0]


def chain_of(html: str) -> tuple[str, str]:
    """The audit page's verification state and its text."""
    section = between(html, '<section class="chain chain-', "</section>")
    return section.split('"', 1)[0], section


def test_the_audit_page_shows_the_chain_verified_from_the_newest_checkpoint(
    console: Console,
) -> None:
    async def history(core: Promptship) -> int:
        await push(core, "customer-support", "1.0.0")
        checkpoint = await core.checkpoint_audit("test")
        assert checkpoint is not None
        await push(core, "customer-support", "1.1.0")
        await push(core, "customer-support", "1.2.0")
        return checkpoint.seq

    at = console.seed(history)
    console.sign_in()
    state, said = chain_of(console.client.get("/audit").text)
    assert state == "verified"
    assert f"checkpoint (event {at}," in said and "the 2 events since follow it" in said

    async def tamper(core: Promptship) -> None:
        async with core.db.engine.begin() as conn:
            await conn.execute(text(f"UPDATE audit_events SET actor = 'U66' WHERE seq = {at + 1}"))

    console.seed(tamper)
    state, said = chain_of(console.client.get("/audit").text)
    assert state == "failed"
    assert f"event {at + 1} was edited: its content no longer matches its hash" in said


def test_a_log_too_long_to_check_on_a_page_says_to_run_audit_verify(console: Console) -> None:
    seed_audit(console)  # 250 events, no checkpoint
    console.sign_in()
    state, said = chain_of(console.client.get("/audit").text)
    assert state == "verified" and "All 250 events follow each other" in said

    async def more(core: Promptship) -> None:
        async with core.db.transaction() as session:
            for _ in range(300):
                await audit.record(session, core.clock, actor="U0ANN", action="version.pushed")

    console.seed(more)
    state, said = chain_of(console.client.get("/audit").text)
    assert state == "unchecked"
    assert "550 events and no signed checkpoint yet" in said and "promptship audit verify" in said


def test_the_last_possible_date_is_a_form_error_not_a_crash(console: Console) -> None:
    console.sign_in()
    for path in ("/audit?until=9999-12-31", "/audit/export.jsonl?until=9999-12-31"):
        page = console.client.get(path)
        assert page.status_code == 400, path
        assert "until: 9999-12-31 is past the last date this filter takes" in page.text
        assert "use a date before 9999-12-31" in page.text
    assert console.client.get("/audit?since=9999-12-31&until=9999-12-30").status_code == 200
