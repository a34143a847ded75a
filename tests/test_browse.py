"""The console's read queries on both stores: the audit log filtered and paged by keyset,
its export, a request's events and the replicas seen."""

from __future__ import annotations

import json
from datetime import timedelta

from promptship.clock import ManualClock
from promptship.services import Promptship, audit
from promptship.services.browse import AuditFilter


async def test_audit_filters_page_and_export_alike(core: Promptship, clock: ManualClock) -> None:
    start = clock.now()
    async with core.db.transaction() as session:
        for i in range(12):
            if i == 6:
                clock.advance(timedelta(hours=1))
            await audit.record(
                session,
                clock,
                actor="U0ANN" if i % 2 else "U0BOB",
                action="version.pushed",
                prompt="billing-faq",
                request_id=7 if i in (2, 9) else None,
            )
    later = start + timedelta(minutes=30)
    found = AuditFilter(actor="U0ANN", since=later)
    page = await core.audit_page(found)
    assert [e.seq for e in page.events] == [12, 10, 8] and page.next_before is None
    assert all(e.actor == "U0ANN" and e.at >= later for e in page.events)
    early = await core.audit_page(AuditFilter(until=later))
    assert [e.seq for e in early.events] == [6, 5, 4, 3, 2, 1]
    lines = [json.loads(x) async for chunk in core.audit_lines(found) for x in chunk.splitlines()]
    assert [x["seq"] for x in lines] == [12, 10, 8]
    assert [e.seq for e in await core.request_events(7)] == [3, 10]


async def test_replicas_are_seen_by_the_work_they_claimed(
    core: Promptship, clock: ManualClock
) -> None:
    assert await core.lease_outbox_channel("C0DEPLOY", "replica-a")
    seen = await core.replicas_seen(clock.now() - timedelta(hours=1))
    assert [(r.name, r.doing) for r in seen] == [("replica-a", "notifications")]
    assert await core.replicas_seen(clock.now() + timedelta(hours=1)) == []
