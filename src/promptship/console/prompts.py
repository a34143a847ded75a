"""A prompt's pages: its version timeline, one version (template, tests and the latest run's
cases) and a side-by-side diff of two versions, from the facade questions the CLI's
``list``, ``history``, ``show`` and ``diff`` ask."""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from promptship.console.common import guarded
from promptship.console.pages import Pages, Session
from promptship.console.textdiff import side_by_side
from promptship.domain.template import template_text
from promptship.services import Promptship

#: history events per page of the prompt's timeline
HISTORY_PAGE = 50
#: which cases the version page shows: ``problems`` is failed or errored (what Slack's
#: "Full report" opens), the others one outcome each
SHOWS = ("all", "problems", "failed", "errored", "passed")
#: the filters' labels
SHOW_LABELS = {"problems": "failed or errored"}


def outcome(result: dict[str, Any]) -> str:
    """A run case's outcome: errored (no verdict), passed or failed."""
    if result.get("error"):
        return "errored"
    return "passed" if result.get("passed") else "failed"


def keyset(value: str | None) -> int | None:
    """A ``before`` query parameter: a positive sequence number, or None (the first page)."""
    if value is None or not value.isdigit() or len(value) > 18:
        return None
    return int(value)


def prompt_routes(pages: Pages, core: Promptship) -> list[Route]:
    async def prompt(request: Request, session: Session) -> Response:
        name = request.path_params["name"]
        versions = await core.versions(name)
        status = (await core.status(name))[0]
        where: dict[str, list[str]] = {}
        for d in status.environments:
            where.setdefault(d.version, []).append(d.environment)
        before = keyset(request.query_params.get("before"))
        history = await core.history(name, before=before, limit=HISTORY_PAGE)
        return pages.render(
            "prompt.html",
            session=session,
            name=name,
            versions=list(reversed(versions)),
            where=where,
            state=status,
            history=history,
            soaks=await core.soak_status(name),
        )

    async def version(request: Request, session: Session) -> Response:
        name, number = request.path_params["name"], request.path_params["version"]
        detail = await core.show(name, number)
        show = request.query_params.get("show", "all")
        if show not in SHOWS:
            show = "all"
        run = None
        cases: list[tuple[str, dict[str, Any]]] = []
        counts = dict.fromkeys(SHOWS, 0)
        if detail.latest_run is not None:
            run = await core.validation_run(detail.latest_run.id)
            for result in run.results:
                state = outcome(result)
                counts[state] += 1
                counts["all"] += 1
                counts["problems"] += state != "passed"
                if show in ("all", state) or (show == "problems" and state != "passed"):
                    cases.append((state, result))
        versions = [v.version for v in await core.versions(name)]
        at = versions.index(detail.version) if detail.version in versions else -1
        return pages.render(
            "version.html",
            session=session,
            detail=detail,
            run=run,
            cases=cases,
            counts=counts,
            show=show,
            shows=SHOWS,
            show_labels=SHOW_LABELS,
            previous=versions[at - 1] if at > 0 else None,
        )

    async def diff(request: Request, session: Session) -> Response:
        name = request.path_params["name"]
        old, new = request.path_params["old"], request.path_params["new"]
        changes = await core.diff(name, old, new)  # refuses an unknown version
        a, b = await core.show(name, old), await core.show(name, new)
        text = side_by_side(
            template_text(a.system_prompt, a.messages, a.variables),
            template_text(b.system_prompt, b.messages, b.variables),
        )
        # the cases only one side has, paired where they line up: a case whose expected
        # answer changed reads as one line against the other, the changed words marked
        tests = (
            side_by_side("\n".join(changes.tests_removed), "\n".join(changes.tests_added))
            if changes.tests_removed or changes.tests_added
            else None
        )
        return pages.render(
            "diff.html",
            session=session,
            name=name,
            changes=changes,
            text=text,
            tests=tests,
            old=a,
            new=b,
        )

    return [
        Route("/prompts/{name}", guarded(pages, core, prompt), methods=["GET"]),
        Route("/prompts/{name}/diff/{old}/{new}", guarded(pages, core, diff), methods=["GET"]),
        Route("/prompts/{name}/{version}", guarded(pages, core, version), methods=["GET"]),
    ]
