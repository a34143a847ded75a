"""The audit log page: filters by prompt, person, action and dates (a GET form), pages by
keyset (``?before=SEQ``, never an offset), the newest signed checkpoints (not a full
verification per page view), and a JSON lines export of the filtered view, streamed."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, date, datetime, time, timedelta
from urllib.parse import urlencode

from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route

from promptship.console.common import guarded
from promptship.console.pages import Pages, Session, secured
from promptship.console.prompts import keyset
from promptship.errors import BadInput
from promptship.services import Promptship
from promptship.services.browse import AuditFilter

FIELDS = ("prompt", "actor", "action", "since", "until")


def parse_filter(request: Request) -> tuple[AuditFilter, dict[str, str]]:
    """The filters a query string gives, and the values given (to fill the form again)."""
    given = {k: request.query_params.get(k, "").strip() for k in FIELDS}
    given = {k: v for k, v in given.items() if v}
    return (
        AuditFilter(
            prompt=given.get("prompt"),
            actor=given.get("actor"),
            action=given.get("action"),
            since=_day(given.get("since"), "since"),
            until=_day(given.get("until"), "until", next_day=True),
        ),
        given,
    )


def _day(text: str | None, name: str, next_day: bool = False) -> datetime | None:
    """A ``YYYY-MM-DD`` date as the start of that day in UTC (of the next day for
    ``until``, which includes the day it names)."""
    if text is None:
        return None
    try:
        day = date.fromisoformat(text[:10]) if len(text) == 10 else None
    except ValueError:
        day = None
    if day is None:
        raise BadInput(
            f"{name}: {text[:40]!r} is not a date", hint="use YYYY-MM-DD, e.g. 2026-01-31"
        )
    start = datetime.combine(day, time(0), tzinfo=UTC)
    if not next_day:
        return start
    if day == date.max:  # the day after it does not exist; nothing is recorded that late
        raise BadInput(
            f"{name}: {text} is past the last date this filter takes",
            hint="use a date before 9999-12-31",
        )
    return start + timedelta(days=1)


def audit_routes(pages: Pages, core: Promptship) -> list[Route]:
    async def audit(request: Request, session: Session) -> Response:
        found, given = parse_filter(request)
        before = keyset(request.query_params.get("before"))
        page = await core.audit_page(found, before)
        query = urlencode(given)
        following = (
            "?" + urlencode({**given, "before": str(page.next_before)})
            if page.next_before is not None
            else None
        )
        checkpoints = list(reversed(await core.audit_checkpoints(limit=3)))
        chain = await core.verify_audit_tail()
        return pages.render(
            "audit.html",
            session=session,
            page=page,
            given=given,
            filtered=bool(given),
            before=before,
            following=following,
            export="audit/export.jsonl" + (f"?{query}" if query else ""),
            first="audit" + (f"?{query}" if query else ""),
            checkpoints=checkpoints,
            chain=chain,
        )

    async def export(request: Request, session: Session) -> Response:
        found, _ = parse_filter(request)

        async def lines() -> AsyncIterator[bytes]:
            async for chunk in core.audit_lines(found):
                yield chunk.encode()

        stamp = core.clock.now().strftime("%Y%m%d-%H%M%S")
        return secured(
            StreamingResponse(
                lines(),
                media_type="application/jsonl",
                headers={"Content-Disposition": f'attachment; filename="audit-{stamp}.jsonl"'},
            )
        )

    return [
        Route("/audit", guarded(pages, core, audit), methods=["GET"]),
        Route("/audit/export.jsonl", guarded(pages, core, export), methods=["GET"]),
    ]
