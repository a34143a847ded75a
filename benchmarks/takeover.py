"""Take-over time: two ``promptship serve`` replicas on one PostgreSQL, one killed with
SIGKILL in the middle of a soak cycle. Measures the time from the kill until the survivor
has claimed the abandoned cycle, and until it has finished it; then checks the soak
completes with every cycle recorded once. The lease sets the first figure.

    PROMPTSHIP_TEST_POSTGRES_URL=postgresql+asyncpg://postgres@127.0.0.1:5432/test \\
        .venv/bin/python benchmarks/takeover.py [--lease 5] [--tick 0.5] [--rounds 3]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from sqlalchemy import make_url, text
from sqlalchemy.ext.asyncio import create_async_engine

from benchmarks.validation import model_double_process
from promptship.config import parse_policy
from promptship.domain.promptfile import parse_prompt
from promptship.services import Promptship
from promptship.store.db import Database
from promptship.testing.serve import ServeProcess
from tests.conftest import prompt_yaml
from tests.helpers import slack

POLICY = """
environments:
  production: {approvals: 2, soak: 9s, soak_interval: 3s, soak_sample: 50}
"""


async def fresh_database(admin_url: str) -> str:
    admin = make_url(admin_url)
    name = f"promptship_takeover_{os.getpid()}"
    engine = create_async_engine(admin, isolation_level="AUTOCOMMIT")
    async with engine.connect() as conn:
        await conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        await conn.execute(text(f'CREATE DATABASE "{name}"'))
    await engine.dispose()
    url = admin.set(database=name).render_as_string(hide_password=False)
    db = Database(url)
    await db.upgrade()
    await db.dispose()
    return url


async def one_round(url: str, env: dict[str, str], workdir: Path, n: int) -> tuple[float, float]:
    db = Database(url)
    core = Promptship(db, parse_policy(POLICY))
    name = f"takeover-{n}"
    await core.push(parse_prompt(prompt_yaml(name, "1.0.0")), slack("U09"))
    servers = [ServeProcess(env, workdir / f"serve-{n}-{i}.log") for i in range(2)]
    try:
        await core.record_validation_run(
            name, "1.0.0", [{"input": "q", "type": "contains", "passed": True}], slack("U04")
        )
        await core.request_promotion(name, "1.0.0", "staging", slack("U04"))
        soak_id = await core.staging_soak_id(name, "1.0.0")
        assert soak_id is not None
        while not (cycles := await core.soak_cycles(soak_id)):  # noqa: ASYNC110 - polls the store
            await asyncio.sleep(0.02)
        owner = cycles[0]["owner"]
        victim = next(s for s in servers if f":{s.pid}:" in owner)
        victim.kill()
        killed = time.perf_counter()
        claimed = finished = None
        while finished is None:
            first = (await core.soak_cycles(soak_id))[0]
            if claimed is None and first["owner"] != owner:
                claimed = time.perf_counter() - killed
            if first["state"] != "claimed":
                finished = time.perf_counter() - killed
            await asyncio.sleep(0.02)
        while (await core.soak_status(name))[0].state == "running":  # noqa: ASYNC110
            await asyncio.sleep(0.1)
        cycles = await core.soak_cycles(soak_id)
        assert [(c["cycle"], c["state"]) for c in cycles] == [
            (1, "passed"),
            (2, "passed"),
            (3, "passed"),
        ], cycles
        assert cycles[0]["attempts"] == 2
        return claimed or finished, finished
    finally:
        for server in servers:
            server.stop()
        await db.dispose()


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--lease", type=float, default=5.0)
    parser.add_argument("--tick", type=float, default=0.5)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--database-url", default=os.environ.get("PROMPTSHIP_TEST_POSTGRES_URL"))
    args = parser.parse_args()
    if not args.database_url:
        raise SystemExit("set PROMPTSHIP_TEST_POSTGRES_URL or pass --database-url")
    url = await fresh_database(args.database_url)
    workdir = Path(tempfile.mkdtemp(prefix="promptship-takeover-"))
    (workdir / "promptship.yaml").write_text(POLICY)
    with model_double_process(2.0) as model:  # a cycle takes ~2 s: time to kill mid-cycle
        env = {
            "PROMPTSHIP_DATABASE_URL": url,
            "PROMPTSHIP_CONFIG": str(workdir / "promptship.yaml"),
            "PROMPTSHIP_SCHEDULER_TICK": str(args.tick),
            "PROMPTSHIP_CLAIM_LEASE": str(args.lease),
            "ANTHROPIC_API_KEY": "bench",
            "ANTHROPIC_BASE_URL": model,
        }
        results = [await one_round(url, env, workdir, n) for n in range(args.rounds)]
    claims = [c for c, _ in results]
    done = [f for _, f in results]
    print(
        f"two replicas on PostgreSQL, SIGKILL mid-cycle; lease {args.lease:g} s, "
        f"tick {args.tick:g} s, {args.rounds} rounds"
    )
    print(
        f"  abandoned cycle claimed by the survivor: median {statistics.median(claims):.2f} s, "
        f"max {max(claims):.2f} s after the kill (the lease runs out, then a reconcile tick)"
    )
    print(
        f"  and finished (it reruns the ~2 s cycle): median {statistics.median(done):.2f} s, "
        f"max {max(done):.2f} s; every soak completed with each cycle recorded once"
    )


if __name__ == "__main__":
    asyncio.run(main())
