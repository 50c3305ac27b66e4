"""A slow Twilio and a slow uplink against the real service: every text still sent exactly once.

- Slow answers: every Twilio request is answered 4.5 s late (the message exists at once), so the
  send slots stay full and claimed jobs wait in the dispatcher for several answers, longer than
  their claim lease (6 s). Their claims must be renewed, never taken a second time by the same
  process, and a job must never be told twice that it may send. Without and with SIGKILLs.
- A slow uplink: a proxy between the connector and Twilio holds every create 4 s before it reaches
  Twilio (the answer comes back at once), longer than the submit lease and the reconcile grace the
  suite ran with before (3 s and 1 s): a send still in flight must not be taken for crashed.
- Leases that cannot outlast the client's timeouts are refused at start-up, in one line naming them.

Counted from the Twilio simulator's own message list (World.check_invariants).
"""

from __future__ import annotations

import asyncio
import contextlib
import random

import pytest

from .conftest import TcpProxy, World, backend_of, eventually, write_figures

# The settle waits are bounds for a loaded CI machine (two workers beside the simulators), not
# expectations: a healthy run settles in about 30 s.
pytestmark = pytest.mark.timeout(300)

SLOW_ANSWER = 4.5  # under the suite's read timeout (5 s), several of them longer than a claim
UPLINK_HOLD = 4.0  # longer than the old submit lease (3 s) and grace (1 s)


async def subscribed(world: World) -> None:
    async def both() -> bool:
        return len(world.bc.subscriptions()) == 2

    await eventually(both, what="subscriptions created")


@pytest.mark.parametrize("kills", [0, 2], ids=["no-kill", "sigkills"])
@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
async def test_slow_answers_longer_than_the_claim_lease(world: World, database_url: str, kills: int) -> None:
    connector, twilio = world.connector, world.twilio
    # The most create calls at once: a wave of answers frees every slot together, and the sends
    # behind it write 'submitting' together (one group commit), two copies of one job included.
    # Every request, the reconciler's look-ups and status polls included, is answered 4.5 s late:
    # the read timeout leaves room for that on a loaded machine, and the leases stay within the
    # bounds start-up checks (one attempt: 2 x 0.25 + 0.25 + 8 = 8.75 s); claimed jobs still wait
    # four waves of answers (about 18 s), twice their claim.
    wide = {
        "MLC_SEND_CONCURRENCY": "64",
        "MLC_TWILIO__READ_TIMEOUT_SECONDS": "8",
        "MLC_CLAIM_SECONDS": "9",
        "MLC_SUBMIT_LEASE_SECONDS": "9.5",
        "MLC_RECONCILE_GRACE_SECONDS": "9",
        "MLC_RECONCILE_LEASE_SECONDS": "9",
    }
    connector.start(extra=wide)
    await connector.wait_healthy()
    await subscribed(world)
    twilio.delay_next(100_000, SLOW_ANSWER)  # every API request from now on
    rng = random.Random(kills)
    world.create_customers(150)  # 150 alerts + 96 audits: four waves of 64, about 20 s
    for _ in range(kills):
        await asyncio.sleep(rng.uniform(3.0, 8.0))  # sends in flight, claimed jobs waiting
        connector.kill()
        connector.start(extra=wide)
        await connector.wait_healthy()

    want = world.expected()
    await world.wait_settled(want, within=240, what="slow answers settled")
    twilio.clear_faults()
    figures = await world.check_invariants(want)
    assert len(connector.exits) == kills and all(code == -9 for code in connector.exits)
    backend = backend_of(database_url)
    write_figures(
        f"slow-answers-{backend}-{kills}-kills",
        {"backend": backend, "answer_seconds": SLOW_ANSWER, "kills": kills, **figures},
    )


class SlowUplink(TcpProxy):
    """A TCP proxy in front of the Twilio simulator whose uplink holds every create (a POST) `hold`
    seconds before passing it on, in order; what comes back passes at once. Bytes already held still
    arrive after the connector gives up on a connection, as bytes in flight on a real network do."""

    def __init__(self, upstream_port: int, hold: float) -> None:
        super().__init__()
        self.upstream_port = upstream_port
        self.hold = hold

    async def _connection(self, client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        upstream_r, upstream_w = await asyncio.open_connection("127.0.0.1", self.upstream_port)
        self._spawn(self._uplink(client_r, upstream_w))
        self._spawn(self._pipe(upstream_r, client_w))

    async def _uplink(self, source: asyncio.StreamReader, sink: asyncio.StreamWriter) -> None:
        loop = asyncio.get_running_loop()
        held: asyncio.Queue[tuple[float, bytes]] = asyncio.Queue()

        async def deliver() -> None:
            while True:
                due, chunk = await held.get()
                await asyncio.sleep(max(0.0, due - loop.time()))
                if not chunk:
                    break
                sink.write(chunk)
                await sink.drain()
            with contextlib.suppress(OSError):
                sink.write_eof()

        delivering = asyncio.ensure_future(deliver())
        try:
            while True:
                try:
                    chunk = await source.read(65536)
                except OSError:
                    chunk = b""
                # A create is held; what follows it on the connection queues behind it. Other
                # requests (the reconciler's look-ups among them) pass at once.
                hold = self.hold if chunk.startswith(b"POST ") else 0.0
                held.put_nowait((loop.time() + hold, chunk))
                if not chunk:
                    break
            await delivering
        except (OSError, asyncio.CancelledError):
            delivering.cancel()
            raise


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
async def test_a_slow_uplink_holding_creates_longer_than_the_grace(world: World, database_url: str) -> None:
    connector, twilio = world.connector, world.twilio
    upstream = int(twilio.base_url.rsplit(":", 1)[1].split("/")[0])
    async with SlowUplink(upstream, UPLINK_HOLD) as uplink:
        connector.start(extra={"MLC_TWILIO__API_BASE_URL": f"http://127.0.0.1:{uplink.port}"})
        await connector.wait_healthy()
        await subscribed(world)
        for start in (0, 30):  # two bursts: the second while the first's creates are still held
            world.create_customers(30, start=start)
            await asyncio.sleep(2.0)
        want = world.expected()
        await world.wait_settled(want, within=240, what="slow uplink settled")
        figures = await world.check_invariants(want)
    backend = backend_of(database_url)
    write_figures(
        f"slow-uplink-{backend}", {"backend": backend, "uplink_hold_seconds": UPLINK_HOLD, **figures}
    )


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
async def test_leases_shorter_than_the_client_timeouts_are_refused_at_start_up(world: World) -> None:
    connector = world.connector
    unsafe = {
        # The values the suite ran with before, against the client's own default timeouts.
        "MLC_CLAIM_SECONDS": "3",
        "MLC_SUBMIT_LEASE_SECONDS": "3",
        "MLC_RECONCILE_GRACE_SECONDS": "1",
        "MLC_TWILIO__CONNECT_TIMEOUT_SECONDS": "5",
        "MLC_TWILIO__WRITE_TIMEOUT_SECONDS": "15",
        "MLC_TWILIO__READ_TIMEOUT_SECONDS": "15",
        "MLC_TWILIO__MAX_ATTEMPTS": "5",
    }
    connector.start(extra=unsafe)
    code = await connector.wait_exit(within=30)
    lines = [line for line in connector.log_text().splitlines() if line.strip()]
    assert code != 0
    assert len(lines) == 1, lines  # one line, no traceback
    (line,) = lines
    assert line.startswith("ml-connector: refusing to start:")
    for name in (
        "MLC_SUBMIT_LEASE_SECONDS=3",
        "MLC_RECONCILE_GRACE_SECONDS=1",
        "MLC_CLAIM_SECONDS=3",
        "MLC_TWILIO__READ_TIMEOUT_SECONDS",
        "MLC_TWILIO__MAX_ATTEMPTS=5",
    ):
        assert name in line
    assert "320 s" in line  # 5 attempts of 2 x 5 + 15 + 15 s, and 4 back-offs of up to 30 s
    assert not world.twilio.messages()
