"""A burst of BC changes while a supervisor SIGKILLs the connector at random moments and restarts it.

The seed is printed and can be replayed with MLC_KILL_SEED; MLC_SOAK=N makes the burst N times larger
with N times more kills (a longer manual run).
"""

from __future__ import annotations

import asyncio
import os
import random

import pytest

from .conftest import SOAK, World, backend_of, eventually, write_figures

pytestmark = pytest.mark.timeout(300 * SOAK)

RECORDS = 100 * SOAK
KILLS = 3 * SOAK


async def test_random_sigkills_during_a_burst(world: World, database_url: str) -> None:
    seed = int(os.environ.get("MLC_KILL_SEED", "0") or 0) or random.SystemRandom().randrange(1, 2**31)
    print(f"MLC_KILL_SEED={seed}")
    rng = random.Random(seed)
    connector = world.connector
    connector.start()
    await connector.wait_healthy()

    async def subscribed() -> bool:
        return len(world.bc.subscriptions()) == 2

    await eventually(subscribed, what="subscriptions created")
    batch = RECORDS // (KILLS + 1)
    made = 0
    for _ in range(KILLS):
        world.create_customers(batch, start=made)
        made += batch
        # Kill somewhere in the middle of notification, fetch, dispatch and callbacks of this batch.
        await asyncio.sleep(rng.uniform(0.05, 1.5))
        connector.kill()
        if rng.random() < 0.5:
            world.create_customers(batch // 4, start=made)  # changes while the service is down
            made += batch // 4
        connector.start()
        await connector.wait_healthy()
    world.create_customers(RECORDS - made, start=made)

    want = world.expected()
    await world.wait_settled(want, within=150 * SOAK, what="burst settled", context=f"seed {seed}")
    figures = await world.check_invariants(want)
    assert len(connector.exits) == KILLS and all(code == -9 for code in connector.exits)
    assert world.assert_no_secrets_at_rest() > 0
    backend = backend_of(database_url)
    write_figures(
        f"random-kills-{backend}",
        {"backend": backend, "seed": seed, "records": len(world.created), "kills": KILLS, **figures},
    )
