"""Pages about what runs: a soak (its divergence per cycle as a server-drawn SVG chart, the
cycle states and worst pairs), a promotion request (gates, decisions, timeline, where to
act) and the server's health (replicas seen, the scheduler, the outbox)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from promptship.console.common import guarded
from promptship.console.pages import Pages, Session
from promptship.errors import NotFound
from promptship.health import readiness_problems
from promptship.services import Promptship
from promptship.services.views import SoakCycleView

#: the chart's size and margins, in SVG user units
WIDTH, HEIGHT = 640, 220
LEFT, RIGHT, TOP, BOTTOM = 48, 16, 12, 36
#: dead letters listed on the health page (the rest are counted)
DEAD_SHOWN = 50
#: how far back the health page looks for replicas
SEEN_WITHIN = timedelta(hours=24)


@dataclass(frozen=True)
class Point:
    cycle: int
    state: str
    x: float
    y: float
    label: str


@dataclass(frozen=True)
class Chart:
    width: int
    height: int
    points: list[Point]
    line: str  # the polyline through the cycles that have a divergence
    limit_y: float
    limit_label: str
    top_label: str
    x_ticks: list[tuple[float, int]]
    left: int = LEFT
    right: int = WIDTH - RIGHT
    bottom: float = HEIGHT - BOTTOM
    top: int = TOP


def chart(cycles: list[SoakCycleView], total: int, limit: float) -> Chart:
    """One point per settled cycle at its divergence; a cycle with none (missed, too little
    traffic, errored) sits on the axis with its state's mark."""
    total = max(total, max((c.cycle for c in cycles), default=0), 1)
    rates = [c.rate for c in cycles if c.rate is not None]
    top = max([limit * 1.5, 0.05, *rates])
    plot_w, plot_h = WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM

    def x(cycle: int) -> float:
        return round(LEFT + plot_w * (cycle - 0.5) / total, 1)

    def y(rate: float) -> float:
        return round(TOP + plot_h * (1 - rate / top), 1)

    points = [
        Point(
            c.cycle,
            c.state,
            x(c.cycle),
            y(c.rate or 0.0),
            f"cycle {c.cycle}: {c.state}"
            + (f", {c.rate:.0%} divergent" if c.rate is not None else ""),
        )
        for c in cycles
    ]
    line = " ".join(
        f"{p.x},{p.y}" for p, c in zip(points, cycles, strict=True) if c.rate is not None
    )
    step = max(1, total // 12)
    ticks = [(x(n), n) for n in range(1, total + 1) if n % step == 0 or n == 1]
    return Chart(WIDTH, HEIGHT, points, line, y(limit), f"limit {limit:.0%}", f"{top:.0%}", ticks)


def operation_routes(pages: Pages, core: Promptship) -> list[Route]:
    async def soak(request: Request, session: Session) -> Response:
        soak_id = _number(request.path_params["id"], "soak")
        found = await core.soak_detail(soak_id)
        drawn = chart(found.cycles, found.soak.cycles_total, found.max_divergence)
        worst = [(c, w) for c in found.cycles for w in c.worst]
        return pages.render("soak.html", session=session, found=found, chart=drawn, worst=worst)

    async def promotion(request: Request, session: Session) -> Response:
        request_id = _number(request.path_params["id"], "request")
        found = await core.request(request_id)
        events = await core.request_events(request_id)
        return pages.render("request.html", session=session, r=found, events=events)

    async def health(request: Request, session: Session) -> Response:
        scheduler = getattr(request.app.state, "scheduler", None)
        problems = await readiness_problems(core.db)
        dead = await core.outbox_dead_letters()
        return pages.render(
            "health.html",
            session=session,
            problems=problems,
            scheduler=None if scheduler is None else bool(scheduler.alive),
            jobs=await core.recent_jobs(),
            replicas=await core.replicas_seen(core.clock.now() - SEEN_WITHIN),
            backlog=await core.outbox_backlog(),
            dead=dead[:DEAD_SHOWN],
            dead_count=len(dead),
            checkpoints=list(reversed(await core.audit_checkpoints(limit=5))),
        )

    return [
        Route("/soaks/{id}", guarded(pages, core, soak), methods=["GET"]),
        Route("/requests/{id}", guarded(pages, core, promotion), methods=["GET"]),
        Route("/health", guarded(pages, core, health), methods=["GET"]),
    ]


def _number(text: str, what: str) -> int:
    """A page's numeric id; anything else is a page that does not exist."""
    digits = text.removeprefix("req-") if what == "request" else text
    if not digits.isdigit() or len(digits) > 12:
        raise NotFound(f"no {what} {text!r}")
    return int(digits)
