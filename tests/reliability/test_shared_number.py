"""A shared number, for real: `ml-connector serve` dies right after Twilio accepted a text to the
credit-control desk and before it recorded the SID; while it is down the desk's number receives more
than 1,000 other texts from the same account; the restarted connector reconciles the job. Counted from
the Twilio simulator's own message list, every text the rules call for is there exactly once.
"""

from __future__ import annotations

import httpx
import pytest

from server.runtime.crashpoints import CRASH_EXIT_CODE

from .conftest import ALERT, SOAK, World, backend_of, eventually, write_figures

pytestmark = pytest.mark.timeout(240)

OTHER_TEXTS = 1_100 * SOAK  # more than Twilio's largest page, and the old 1,000-message cut-off
# Leases and grace that outlast this client's whole call (one try of 0.5 + 0.5 + 0.5 + 2 s), as the
# start-up check demands, and short enough to wait out.
SETTINGS = {
    "MLC_TWILIO__CONNECT_TIMEOUT_SECONDS": "0.5",
    "MLC_TWILIO__WRITE_TIMEOUT_SECONDS": "0.5",
    "MLC_TWILIO__READ_TIMEOUT_SECONDS": "2",
    "MLC_TWILIO__MAX_ATTEMPTS": "1",
    "MLC_CLAIM_SECONDS": "4",
    "MLC_SUBMIT_LEASE_SECONDS": "4",
    "MLC_RECONCILE_GRACE_SECONDS": "4",
    "MLC_RECONCILE_LEASE_SECONDS": "10",
}


async def subscribed(world: World) -> bool:
    return len(world.bc.subscriptions()) == 2 and await world.connector.healthy()


def desk_traffic(world: World, count: int) -> None:
    """Texts to the desk's number from another tool on the same Twilio account, through the API."""
    sim = world.twilio
    url = f"{sim.base_url}/2010-04-01/Accounts/{sim.account_sid}/Messages.json"
    with httpx.Client(auth=(sim.account_sid, sim.auth_token), timeout=30) as client:
        for n in range(count):
            form = {"To": ALERT, "From": sim.from_number, "Body": f"Desk traffic {n}"}
            assert client.post(url, data=form).status_code == 201


async def test_a_text_behind_more_than_a_thousand_newer_ones_is_not_sent_again(
    world: World, database_url: str
) -> None:
    world.twilio.auto_advance = False  # no status callback names the job before reconciliation
    world.connector.start(crash="dispatch.accepted", extra=SETTINGS)
    await world.connector.wait_healthy()
    await eventually(lambda: subscribed(world), what="subscriptions created")
    world.create_customers(1)  # one text to the desk: Twilio takes it, the connector dies
    assert await world.connector.wait_exit() == CRASH_EXIT_CODE, world.connector.tail()
    want = world.expected()
    assert sum(want.values()) == 1 and set(want) <= set(world.twilio_messages())

    desk_traffic(world, OTHER_TEXTS)
    world.connector.start(extra=SETTINGS)
    await world.connector.wait_healthy()

    async def reconciled() -> bool:
        rows = await world.audit()
        return bool(rows) and all(r["status"] not in {"planned", "submitting", "unknown"} for r in rows)

    await eventually(reconciled, within=90, what="the interrupted send reconciled")
    world.twilio.auto_advance = True
    await world.wait_settled(want, within=60, what="the text delivered")

    held = world.twilio_messages()
    ours = {key: held[key] for key in want}
    figures = {
        "backend": backend_of(database_url),
        "other_texts": OTHER_TEXTS,
        "expected": sum(want.values()),
        "sent": sum(ours.values()),
        "duplicated": sum(max(0, n - 1) for n in ours.values()),
        "lost": sum(1 for n in ours.values() if n == 0),
    }
    write_figures(f"shared_number_{backend_of(database_url)}", figures)
    assert ours == dict(want), figures
    (row,) = await world.audit()
    assert row["status"] == "delivered"
    assert row["twilio_sid"] in {
        m["sid"] for m in world.twilio.messages() if m["body"] in {k[1] for k in want}
    }
