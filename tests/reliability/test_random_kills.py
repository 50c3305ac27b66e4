"""Bursts of BC changes while a supervisor SIGKILLs the connector at random moments and restarts it.

Every text is counted from the Twilio simulator's own message list: each one the rules call for is
there exactly once. One process on each backend; and two processes on one PostgreSQL database behind
a front door (a TCP balancer, as a load balancer would be), where a kill takes one instance away while
the other carries on.

The seed is printed and can be replayed with MLC_KILL_SEED; MLC_SOAK=N makes the burst N times larger
with N times more kills (a longer manual run, docs/reliability.md).
"""

from __future__ import annotations

import asyncio
import os
import random

import pytest

from .conftest import SOAK, Connector, TcpProxy, World, backend_of, eventually, free_port, write_figures

pytestmark = pytest.mark.timeout(600 * SOAK)

# 550 customers plan 1,046 texts (an alert each, an audit text for each balance over 500).
RECORDS = 550 * SOAK
KILLS = 20 * SOAK


def kill_seed() -> int:
    seed = int(os.environ.get("MLC_KILL_SEED", "0") or 0) or random.SystemRandom().randrange(1, 2**31)
    print(f"MLC_KILL_SEED={seed}")
    return seed


async def subscribed(world: World) -> bool:
    return len(world.bc.subscriptions()) == 2


async def burst_with_kills(world: World, instances: list[Connector], rng: random.Random) -> None:
    """RECORDS customers in KILLS + 1 batches; after each of the first KILLS batches, a random
    instance is SIGKILLed somewhere in its notification, fetch, dispatch and callbacks, and restarted."""
    batch = RECORDS // (KILLS + 1)
    made = 0
    for _ in range(KILLS):
        world.create_customers(batch, start=made)
        made += batch
        await asyncio.sleep(rng.uniform(0.05, 1.5))
        victim = rng.choice(instances)
        victim.kill()
        if rng.random() < 0.5:
            world.create_customers(batch // 4, start=made)  # changes while it is down
            made += batch // 4
        victim.start()
        await victim.wait_healthy()
    world.create_customers(RECORDS - made, start=made)


async def test_random_sigkills_during_a_burst(world: World, database_url: str) -> None:
    seed = kill_seed()
    connector = world.connector
    connector.start()
    await connector.wait_healthy()
    await eventually(lambda: subscribed(world), what="subscriptions created")
    await burst_with_kills(world, [connector], random.Random(seed))

    want = world.expected()
    await world.wait_settled(want, within=240 * SOAK, what="burst settled", context=f"seed {seed}")
    figures = await world.check_invariants(want)
    assert len(connector.exits) == KILLS and all(code == -9 for code in connector.exits)
    assert world.assert_no_secrets_at_rest() > 0
    backend = backend_of(database_url)
    write_figures(
        f"random-kills-{backend}",
        {
            "backend": backend,
            "instances": 1,
            "seed": seed,
            "records": len(world.created),
            "kills": KILLS,
            **figures,
        },
    )


class FrontDoor(TcpProxy):
    """A TCP balancer on the connector's public port: each connection goes to the next instance that
    accepts it, so BC's notifications and Twilio's callbacks reach whichever instance is up."""

    def __init__(self, port: int, upstreams: list[int]) -> None:
        super().__init__(port)
        self.upstreams = upstreams
        self._next = 0

    async def _connection(self, client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        for _ in range(len(self.upstreams)):
            port = self.upstreams[self._next % len(self.upstreams)]
            self._next += 1
            try:
                upstream_r, upstream_w = await asyncio.open_connection("127.0.0.1", port)
            except OSError:
                continue  # that instance is down: try the next
            self._spawn(self._pipe(client_r, upstream_w))
            self._spawn(self._pipe(upstream_r, client_w))
            return
        client_w.close()  # none is up: the caller sees a refused connection and retries later


@pytest.mark.parametrize("database_url", ["postgres"], indirect=True)
async def test_random_sigkills_of_two_instances_on_one_database(world: World, database_url: str) -> None:
    seed = kill_seed()
    public = world.connector  # its port is the public URL BC and Twilio call back on
    instances = [
        Connector(public.env, free_port(), public.workdir / name) for name in ("instance-a", "instance-b")
    ]
    for instance in instances:
        instance.workdir.mkdir()
    try:
        async with FrontDoor(public.port, [instance.port for instance in instances]):
            for instance in instances:
                instance.start()
            for instance in instances:
                await instance.wait_healthy()
            world.connector = instances[0]  # the audit API and /health, read through one of them
            await eventually(lambda: subscribed(world), what="subscriptions created")
            await burst_with_kills(world, instances, random.Random(seed))

            want = world.expected()
            await world.wait_settled(want, within=240 * SOAK, what="burst settled", context=f"seed {seed}")
            figures = await world.check_invariants(want)
            exits = [code for instance in instances for code in instance.exits]
            assert len(exits) == KILLS and all(code == -9 for code in exits)
            assert all(instance.running for instance in instances)
    finally:
        for instance in instances:
            instance.stop()
    write_figures(
        "random-kills-postgres-2-instances",
        {
            "backend": "postgres",
            "instances": 2,
            "seed": seed,
            "records": len(world.created),
            "kills": KILLS,
            **figures,
        },
    )
