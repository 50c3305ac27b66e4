"""Faults from the outside world while the real service works through bursts of BC changes.

Twilio: a 429 storm, 500s (outcome unknown: reconciled, never resent blind), connection resets after
the message was accepted, duplicate and out-of-order status callbacks, a callback for a message we
never sent. BC: 429 and 503 with and without Retry-After, an expired token, a record deleted before
the fetch. Afterwards: every message the rules call for was sent exactly once and is final.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from urllib.parse import urlencode

import httpx
import pytest

from server.twilio.signatures import sign

from .conftest import World, backend_of, eventually, matrix, write_figures

pytestmark = pytest.mark.timeout(180)


@pytest.mark.parametrize(
    "database_url",
    [b for b, _ in matrix([("sqlite", "")], [("sqlite", ""), ("postgres", "")])],
    indirect=True,
)
async def test_twilio_and_bc_faults_during_bursts(world: World, database_url: str) -> None:
    connector, bc, twilio = world.connector, world.bc, world.twilio
    connector.start()
    await connector.wait_healthy()

    async def subscribed() -> bool:
        return len(bc.subscriptions()) == 2

    await eventually(subscribed, what="subscriptions created")
    twilio.set_callback_behaviour(duplicates=1, out_of_order=True)

    phases: list[tuple[str, Callable[[], object]]] = [
        ("twilio 429 storm", lambda: twilio.fail_next(8, status=429)),
        ("twilio 429 with Retry-After", lambda: twilio.fail_next(3, status=429, retry_after=1)),
        ("twilio 500s", lambda: twilio.fail_next(3, status=500)),
        ("twilio reset after acceptance", lambda: twilio.drop_after_accept_next(3)),
        ("bc 429 with Retry-After", lambda: bc.inject_fault(status=429, retry_after=1, remaining=2)),
        ("bc 429 without Retry-After", lambda: bc.inject_fault(status=429, remaining=2)),
        ("bc 503 with Retry-After", lambda: bc.inject_fault(status=503, retry_after=1, remaining=2)),
        ("bc 503 without Retry-After", lambda: bc.inject_fault(status=503, remaining=2)),
        ("bc token expired", lambda: bc.expire_tokens()),
    ]
    made = 0
    for _name, inject in phases:
        inject()
        world.create_customers(6, start=made)
        made += 6
        await asyncio.sleep(0.4)
    # A record created and deleted before the connector fetches it: nothing is sent for it.
    ghost = bc.create_record(
        world.company, "customers", {"number": "GHOST", "displayName": "gone", "balanceDue": 999}
    )
    bc.delete_record(world.company, "customers", ghost["id"])

    # A signed callback for a message we never sent: answered 200 (Twilio must not retry), changes nothing.
    url = f"{connector.url}/webhooks/twilio/status?job=never-sent"
    params = [("MessageSid", "SM" + "f" * 32), ("MessageStatus", "delivered")]
    async with httpx.AsyncClient(timeout=10) as http:
        response = await http.post(
            url,
            content=urlencode(params),
            headers={
                "Content-Type": "application/x-www-form-urlencoded",
                "X-Twilio-Signature": sign(url, params, twilio.auth_token),
            },
        )
    assert response.status_code == 200

    want = world.expected()
    await world.wait_settled(want, within=120, what="settled after the faults")
    figures = await world.check_invariants(want)
    assert not [m for m in twilio.messages() if "GHOST" in m["body"]]
    backend = backend_of(database_url)
    write_figures(
        f"faults-{backend}", {"backend": backend, "phases": [name for name, _ in phases], **figures}
    )
