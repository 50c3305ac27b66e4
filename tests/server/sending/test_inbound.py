"""Inbound texts as Twilio delivers them, replayed and late: each MessageSid counts once, and an
opt-out state only ever gives way to a newer message."""

from __future__ import annotations

from datetime import timedelta
from urllib.parse import urlencode

import httpx

from server.runtime.clock import ManualClock
from server.sandbox.stack import Stack
from server.twilio.signatures import SIGNATURE_HEADER
from simulators.twilio.app import CallbackRecord

from .conftest import PHONE, creates, insert, make_dispatcher, message, opt_outs, row
from .test_webhooks import post, signed_post

EMPTY_TWIML = '<?xml version="1.0" encoding="UTF-8"?><Response/>'


async def text(stack: Stack, body: str) -> CallbackRecord:
    """The handset texts `body`; one second later on the shared clock. Returns the webhook Twilio sent."""
    assert await stack.twilio_sim.asend_inbound(PHONE, body) == 200
    assert isinstance(stack.clock, ManualClock)
    stack.clock.advance(timedelta(seconds=1))
    return stack.twilio_sim.callbacks(kind="inbound")[-1]


async def replay(record: CallbackRecord) -> httpx.Response:
    """The same request again, byte for byte, with Twilio's own signature (a captured request)."""
    headers = {SIGNATURE_HEADER: record.signature, "Content-Type": "application/x-www-form-urlencoded"}
    async with httpx.AsyncClient(timeout=10) as http:
        return await http.post(record.url, content=urlencode(record.params).encode(), headers=headers)


async def send_one(stack: Stack, n: int) -> str:
    (job,) = insert(stack, row(n))
    await make_dispatcher(stack).run_once()
    return message(stack, job).status


async def test_a_replayed_start_after_a_stop_leaves_the_number_opted_out(any_stack: Stack) -> None:
    stack = any_stack
    await text(stack, "STOP")
    start = await text(stack, "START")
    await text(stack, "STOP")
    assert {active for *_, active, _ in opt_outs(stack)} == {True}

    answer = await replay(start)
    assert (answer.status_code, answer.text) == (200, EMPTY_TWIML)
    assert {active for *_, active, _ in opt_outs(stack)} == {True}
    assert await send_one(stack, 1) == "opted_out"
    assert creates(stack) == []  # refused here, not by Twilio's 21610


async def test_a_replayed_stop_after_a_start_leaves_the_number_opted_in(stack: Stack) -> None:
    stop = await text(stack, "STOP")
    await text(stack, "START")
    answer = await replay(stop)
    assert (answer.status_code, answer.text) == (200, EMPTY_TWIML)
    assert {active for *_, active, _ in opt_outs(stack)} == {False}
    assert await send_one(stack, 1) == "queued"


async def test_a_start_delivered_after_a_newer_stop_does_not_opt_back_in(any_stack: Stack) -> None:
    """The START reaches us late (a first delivery failed, Twilio retried after the STOP): its
    date_created, read from Twilio, is older than the STOP's, so it changes nothing."""
    stack = any_stack
    sim = stack.twilio_sim
    inbound_url = f"{stack.url}/webhooks/twilio/inbound"
    sim.set_inbound_url(None)  # the START's delivery does not arrive now
    await sim.asend_inbound(PHONE, "START")
    (late,) = [m for m in sim.messages() if m["body"] == "START"]
    assert isinstance(stack.clock, ManualClock)
    stack.clock.advance(timedelta(seconds=5))
    sim.set_inbound_url(inbound_url)
    await text(stack, "STOP")

    params = [("From", PHONE), ("To", sim.from_number), ("Body", "START"), ("MessageSid", late["sid"])]
    answer = await post(*signed_post(stack, "/webhooks/twilio/inbound", params))
    assert (answer.status_code, answer.text) == (200, EMPTY_TWIML)
    assert opt_outs(stack) == [
        (PHONE, sim.from_number, True, "inbound-stop"),
        (PHONE, sim.messaging_service_sid, True, "inbound-stop"),
    ]
    assert await send_one(stack, 1) == "opted_out"


async def test_a_stop_delivered_after_a_newer_start_does_not_opt_out(stack: Stack) -> None:
    """Ordering holds both ways: a START with no opt-out before it still sets the time to beat."""
    sim = stack.twilio_sim
    sim.set_inbound_url(None)
    await sim.asend_inbound(PHONE, "STOP")
    (late,) = [m for m in sim.messages() if m["body"] == "STOP"]
    assert isinstance(stack.clock, ManualClock)
    stack.clock.advance(timedelta(seconds=5))
    sim.set_inbound_url(f"{stack.url}/webhooks/twilio/inbound")
    await text(stack, "START")

    params = [("From", PHONE), ("To", sim.from_number), ("Body", "STOP"), ("MessageSid", late["sid"])]
    assert (await post(*signed_post(stack, "/webhooks/twilio/inbound", params))).status_code == 200
    assert {active for *_, active, _ in opt_outs(stack)} <= {False}
    assert await send_one(stack, 1) == "queued"
