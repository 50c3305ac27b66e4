"""The product's main path with the worker loops running, as in production:

BC change -> webhook -> inbox -> fetcher -> rules -> outbox -> dispatcher -> Twilio -> status
callback -> audit API, and the scheduled sweep for time-based rules. Checked from outside: what the
Twilio simulator received and what the audit API reports.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import datetime, timedelta
from typing import Any

import httpx
import pytest

from server.runtime.clock import ManualClock
from server.sandbox.stack import Stack
from simulators.bc.seeds.demo import GB_COMPANY_ID
from tests.prometheus import sample

pytestmark = pytest.mark.timeout(120)

FINAL = {"delivered", "undelivered", "failed", "skipped", "opted_out", "sent"}


async def eventually(
    check: Callable[[], Awaitable[bool]], *, within: float = 30.0, step: float = 0.1
) -> None:
    deadline = asyncio.get_running_loop().time() + within
    while not await check():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError("condition not reached in time")
        await asyncio.sleep(step)


@pytest.fixture
async def live(database_url: str, clock: ManualClock) -> AsyncIterator[Stack]:
    overrides = {
        "fetch_interval_seconds": 0.1,
        "dispatch_interval_seconds": 0.1,
        "messages_per_second": 200.0,
    }
    async with Stack(
        database_url=database_url, clock=clock, start_workers=True, settings_overrides=overrides
    ) as stack:
        yield stack


async def all_messages(api: httpx.AsyncClient) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = []
    cursor: int | None = None
    while True:
        params: dict[str, Any] = {"limit": 500}
        if cursor is not None:
            params["cursor"] = cursor
        page = (await api.get("/api/messages", params=params)).json()
        items.extend(page["items"])
        cursor = page["next_cursor"]
        if cursor is None:
            return items


def twilio_creates(stack: Stack) -> Counter[tuple[str, str]]:
    """(To, Body) of every message create the Twilio simulator received."""
    return Counter((r.form_dict()["To"][0], r.form_dict()["Body"][0]) for r in _creates(stack))


async def test_sweep_and_webhook_flows_end_in_final_statuses_sent_once(
    live: Stack, clock: ManualClock
) -> None:
    stack = live
    headers = {"Authorization": f"Bearer {stack.api_token}"}
    async with httpx.AsyncClient(base_url=stack.url, headers=headers, timeout=10) as api:
        # The subscription manager creates the webhook subscriptions (with BC's handshake) on start.
        await eventually(lambda: _has_subscriptions(stack))

        # The daily sweep runs on its own (09:00 London is past the 08:00 sweep time): overdue and
        # due-soon reminders for the demo company's open invoices are planned and sent.
        async def swept() -> bool:
            await stack.twilio_sim.asettle()
            return any(m["rule_id"].startswith("invoice-") for m in await all_messages(api))

        await eventually(swept)

        # A customer goes over its credit limit in BC: BC notifies, the fetcher reads it, one warning.
        tailspin = next(
            c for c in stack.bc_sim.records(GB_COMPANY_ID, "customers") if c["number"] == "C10080"
        )
        stack.bc_sim.update_record(GB_COMPANY_ID, "customers", tailspin["id"], {"balanceDue": 10100.0})
        await stack.bc_sim.aflush_notifications()

        async def warned_and_settled() -> bool:
            await stack.twilio_sim.asettle()
            messages = await all_messages(api)
            warnings = [m for m in messages if m["rule_id"] == "credit-limit-crossed"]
            return len(warnings) == 1 and all(m["status"] in FINAL | {"held"} for m in messages)

        await eventually(warned_and_settled)

        # Reminders wait for the end of the rule's quiet hours in the customer's time zone, then go.
        held = [m for m in await all_messages(api) if m["status"] == "held"]
        assert held, "the demo's overdue reminders fall in the rule's quiet hours at 09:00 UTC"
        release = max(datetime.fromisoformat(m["hold_until"]) for m in held)
        clock.set(release + timedelta(minutes=1))

        async def all_final() -> bool:
            await stack.twilio_sim.asettle()
            return all(m["status"] in FINAL for m in await all_messages(api))

        await eventually(all_final)

        messages = await all_messages(api)
        texts = [m for m in messages if m["twilio_sid"] and m["channel"] == "sms"]
        calls = [m for m in messages if m["twilio_sid"] and m["channel"] == "voice"]
        creates = twilio_creates(stack)
        # Exactly once: every text with a SID was created once at Twilio, and nothing else was.
        assert sorted(creates.values()) == [1] * len(texts)
        assert set(creates) == {(m["recipient"], m["body"]) for m in texts}
        placed = [
            r
            for r in stack.twilio_sim.requests(path_contains="/Calls.json")
            if r.method == "POST" and r.status == 201
        ]
        assert sorted(r.form_dict()["To"][0] for r in placed) == sorted(m["recipient"] for m in calls)
        # Nothing without a usable phone number was sent; it is recorded as skipped with the reason.
        for skipped in (m for m in messages if m["status"] == "skipped"):
            assert skipped["recipient"] is None or skipped["error_code"] or skipped["reason"]
        [warning] = [m for m in messages if m["rule_id"] == "credit-limit-crossed"]
        assert warning["status"] == "delivered"
        assert warning["source"]["number"] == "C10080"
        detail = (await api.get(f"/api/messages/{warning['job_id']}")).json()
        statuses = [e["status"] for e in detail["events"]]
        assert statuses[0] == "planned" and statuses[-1] == "delivered"
        # The metrics saw the notification and the record the fetcher read for it.
        metrics = (await api.get("/metrics")).text
        assert (
            sample(metrics, "mlc_bc_notifications_received_total", entity="customers", outcome="accepted")
            or 0
        ) >= 1
        assert (sample(metrics, "mlc_bc_records_fetched_total", entity="customers") or 0) >= 1
        callbacks = {r.form_dict()["StatusCallback"][0] for r in _creates(stack)}
        assert f"{stack.url}/webhooks/twilio/status?job={warning['job_id']}" in callbacks


def _creates(stack: Stack) -> list[Any]:
    """Accepted message creates (a 429'd request created nothing)."""
    return [
        r
        for r in stack.twilio_sim.requests(path_contains="/Messages.json")
        if r.method == "POST" and r.status == 201
    ]


async def _has_subscriptions(stack: Stack) -> bool:
    # One full pass of the manager: subscriptions created and the snapshots a crossing needs primed.
    return stack.services.workers["subscriptions"].runs >= 1 and len(stack.bc_sim.subscriptions()) >= 2
