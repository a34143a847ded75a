"""``promptship_staging_divergence_rate``: each staging soak cycle's divergence rate per
prompt and version, kept after the soak ends, beside the other gauges; and every name of
the design's ``metrics.record`` shape has its Prometheus family. Both stores."""

from __future__ import annotations

from datetime import timedelta

from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from promptship.clock import ManualClock
from promptship.metrics import RECORDED_AS, Metrics, _StoreCollector
from promptship.services import Promptship
from promptship.services.soak_spec import CycleResult
from tests.test_soaks import run, soak_core, staged_with_production

__all__ = ["soak_core"]


async def scrape(core: Promptship) -> dict[str, list[tuple[dict[str, str], float]]]:
    metrics = Metrics(core)
    body = generate_latest(metrics.registry) + generate_latest(
        _StoreCollector(await core.metrics_snapshot())
    )
    return {
        family.name: [(s.labels, s.value) for s in family.samples]
        for family in text_string_to_metric_families(body.decode())
    }


def staging(scraped: dict[str, list[tuple[dict[str, str], float]]]) -> dict[str, tuple[int, float]]:
    rates = {
        labels["version"]: value for labels, value in scraped["promptship_staging_divergence_rate"]
    }
    cycles = {
        labels["version"]: int(value)
        for labels, value in scraped["promptship_staging_divergence_cycle"]
    }
    return {version: (cycles[version], rates[version]) for version in rates}


async def test_each_cycles_rate_is_exposed_and_kept_after_the_soak(
    soak_core: Promptship, clock: ManualClock
) -> None:
    soak_id = await staged_with_production(soak_core)
    before = staging(await scrape(soak_core))
    assert before == {"1.0.0": (3, 0.025)}  # 1.0.0's soak ended; its last cycle stays
    for cycle, divergent in ((1, 2), (2, 3), (3, 1)):
        clock.advance(timedelta(seconds=1))
        await run(soak_core, soak_id, cycle, CycleResult(sample_size=40, divergent=divergent))
        scraped = await scrape(soak_core)
        assert staging(scraped)["1.1.0"] == (cycle, divergent / 40)
        labels = {tuple(sorted(lab)) for lab, _ in scraped["promptship_staging_divergence_rate"]}
        assert labels == {("prompt", "version")}
    [soak] = [s for s in await soak_core.soak_status("customer-support") if s.id == soak_id]
    assert soak.state == "passed"
    assert staging(await scrape(soak_core)) == {"1.0.0": (3, 0.025), "1.1.0": (3, 0.025)}


async def test_every_recorded_name_has_its_prometheus_family(soak_core: Promptship) -> None:
    await staged_with_production(soak_core)
    exposed = set(await scrape(soak_core))
    for recorded, family in RECORDED_AS.items():
        names = (
            [family.replace("{passed,failed}", state) for state in ("passed", "failed")]
            if "{" in family
            else [family]
        )
        for name in names:
            assert any(e == name or e == name.removesuffix("_total") for e in exposed), (
                recorded,
                name,
            )
