"""Prometheus metrics at ``/metrics``.

Two kinds. What happened in the store (promotions, approvals and how long they waited,
validation runs and their durations and pass rates, soak divergence and each staging cycle's
divergence rate, the outbox backlog and dead letters) is
read from the database at scrape time, so every replica reports the same numbers: aggregate
them with ``max``, not ``sum``. What happens in a process (Slack ack latency, Slack API
errors) is counted in that process: aggregate with ``sum``.
"""

from __future__ import annotations

import bisect
from collections.abc import Iterable, Sequence
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily, HistogramMetricFamily, Metric
from starlette.requests import Request
from starlette.responses import Response

from promptship.services import Promptship

APPROVAL_BUCKETS = (60, 300, 900, 3600, 4 * 3600, 24 * 3600, 72 * 3600)
RUN_BUCKETS = (1, 5, 15, 60, 300, 900, 3600)
ACK_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 3.0)

#: the names an application's ``metrics.record(name, value, prompt=…, version=…, …)``
#: would use, and the Prometheus family each is exposed as (tags become labels; seconds
#: are the time unit)
RECORDED_AS = {
    "staging_divergence_rate": "promptship_staging_divergence_rate",
    "soak_divergence": "promptship_soak_worst_divergence",
    "validation_pass_rate": "promptship_validation_pass_rate",
    "validation_duration": "promptship_validation_{passed,failed}_run_seconds",
    "promotions": "promptship_promotions",
    "time_to_approve": "promptship_time_to_approve_seconds",
    "outbox_backlog": "promptship_outbox_backlog",
    "outbox_dead_letters": "promptship_outbox_dead_letters",
    "slack_ack_latency": "promptship_slack_ack_seconds",
    "slack_api_errors": "promptship_slack_api_errors",
}


def _histogram(
    name: str,
    doc: str,
    values: Iterable[float],
    buckets: Sequence[float],
    labels: dict[str, str] | None = None,
) -> HistogramMetricFamily:
    ordered = sorted(values)
    cumulative = [(str(b), float(bisect.bisect_right(ordered, b))) for b in buckets]
    cumulative.append(("+Inf", float(len(ordered))))
    family = HistogramMetricFamily(name, doc, labels=list(labels or {}))
    family.add_metric(list((labels or {}).values()), cumulative, sum_value=float(sum(ordered)))
    return family


class Metrics:
    def __init__(self, core: Promptship) -> None:
        self.core = core
        self.registry = CollectorRegistry()
        self.ack_latency = Histogram(
            "promptship_slack_ack_seconds",
            "Time to acknowledge a Slack request (Slack allows 3 s).",
            buckets=ACK_BUCKETS,
            registry=self.registry,
        )
        self.slack_errors = Counter(
            "promptship_slack_api_errors",
            "Slack Web API calls that failed, by error.",
            ["error"],
            registry=self.registry,
        )
        self._snapshot: dict[str, Any] = {}

    async def endpoint(self, request: Request) -> Response:
        self._snapshot = await self.core.metrics_snapshot()
        body = generate_latest(self.registry) + generate_latest(_StoreCollector(self._snapshot))
        return Response(body, media_type="text/plain; version=0.0.4; charset=utf-8")


class _StoreCollector:
    """Adapts a snapshot of the store to ``generate_latest``."""

    def __init__(self, snapshot: dict[str, Any]) -> None:
        self.snapshot = snapshot

    def collect(self) -> Iterable[Metric]:
        s = self.snapshot
        promotions = GaugeMetricFamily(
            "promptship_promotions",
            "Promotions done, by environment and kind (normal, breakglass).",
            labels=["environment", "kind"],
        )
        for env, kind, count in s["promotions"]:
            promotions.add_metric([env, kind], count)
        yield promotions
        yield _histogram(
            "promptship_time_to_approve_seconds",
            "From a promotion request to each approval of it.",
            s["approval_waits"],
            APPROVAL_BUCKETS,
        )
        for state in ("passed", "failed"):
            yield _histogram(
                f"promptship_validation_{state}_run_seconds",
                f"Duration of validation runs that {state}.",
                [d for st, d in s["runs"] if st == state],
                RUN_BUCKETS,
            )
        rates = GaugeMetricFamily(
            "promptship_validation_pass_rate",
            "The latest run's pass rate of each tested version.",
            labels=["prompt", "version"],
        )
        for name, version, rate in s["pass_rates"]:
            rates.add_metric([name, version], rate)
        yield rates
        divergence = GaugeMetricFamily(
            "promptship_soak_worst_divergence",
            "The worst cycle's divergence rate of each running soak.",
            labels=["prompt", "version", "kind"],
        )
        for name, version, kind, rate in s["soak_divergence"]:
            divergence.add_metric([name, version, kind], rate)
        yield divergence
        staging = GaugeMetricFamily(
            "promptship_staging_divergence_rate",
            "Each staging soak cycle's divergence rate, from when it is scored until the next; "
            "the last cycle's stays after the soak ends (newest 5 soaked versions per prompt).",
            labels=["prompt", "version"],
        )
        cycles = GaugeMetricFamily(
            "promptship_staging_divergence_cycle",
            "Which cycle promptship_staging_divergence_rate is the rate of.",
            labels=["prompt", "version"],
        )
        for name, version, cycle, rate in s["staging_divergence"]:
            staging.add_metric([name, version], rate)
            cycles.add_metric([name, version], cycle)
        yield staging
        yield cycles
        yield GaugeMetricFamily(
            "promptship_outbox_backlog",
            "Notifications waiting for delivery.",
            value=s["outbox_backlog"],
        )
        yield GaugeMetricFamily(
            "promptship_outbox_dead_letters",
            "Notifications set aside after failing for good (promptship outbox list).",
            value=s["outbox_dead_letters"],
        )
