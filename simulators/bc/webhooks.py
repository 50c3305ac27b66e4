"""Outbound side of the BC simulator's webhooks: the validation handshake and notification delivery.

Runs on the simulator's event loop. Delivery follows BC: POST `{"value": [...]}` to the notification
URL; 2xx done, 408/429/5xx or no answer retried later, any other 4xx deletes the subscription.
"""

from __future__ import annotations

import asyncio
import json
import secrets
import ssl

import httpx

from simulators.bc.state import BCState, Delivery

# Seconds. The docs give no timeout; third parties (kauffmann.nl, 2020) report BC waits about 5 s.
HANDSHAKE_TIMEOUT = 5.0


async def handshake(client: httpx.AsyncClient, notification_url: str) -> tuple[bool, str]:
    """Call `notificationUrl?validationToken=...`; ok only on 200 with the token echoed as the body."""
    token = secrets.token_urlsafe(24)
    try:
        response = await client.post(
            notification_url, params={"validationToken": token}, timeout=HANDSHAKE_TIMEOUT
        )
    except httpx.HTTPError as exc:
        return False, f"the notification URL could not be reached ({type(exc).__name__})"
    if response.status_code != 200:
        return False, f"the notification URL answered {response.status_code} to the validation request"
    if response.text.strip() != token:
        return False, "the notification URL did not return the validation token"
    return True, ""


class Notifier:
    """Sends due notification batches; `run()` is the timed loop, `flush()` sends everything now."""

    def __init__(self, state: BCState, *, tick: float = 0.05, verify: ssl.SSLContext | bool = True) -> None:
        self.state = state
        self.tick = tick
        self.client = httpx.AsyncClient(timeout=10.0, verify=verify, trust_env=False)
        self._lock = asyncio.Lock()

    async def deliver(self, delivery: Delivery) -> str:
        if self.state.consume_drop():
            self.state.log_dropped(delivery)
            return "dropped"
        body = json.dumps({"value": delivery.items}).encode()  # no BOM since v19
        try:
            response = await self.client.post(
                delivery.url, content=body, headers={"Content-Type": "application/json"}
            )
        except httpx.HTTPError as exc:
            return self.state.record_delivery(delivery, None, type(exc).__name__)
        return self.state.record_delivery(delivery, response.status_code)

    async def send_due(self, *, force: bool = False) -> list[str]:
        async with self._lock:
            outcomes = []
            for delivery in self.state.take_due_deliveries(force=force):
                outcomes.append(await self.deliver(delivery))
            return outcomes

    async def run(self) -> None:
        while True:
            await self.send_due()
            await asyncio.sleep(self.tick)

    async def aclose(self) -> None:
        await self.client.aclose()
