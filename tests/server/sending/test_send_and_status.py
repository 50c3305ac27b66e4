"""One send, its callbacks, duplicates and reordering: on SQLite and PostgreSQL, over loopback HTTP."""

from __future__ import annotations

from typing import cast
from urllib.parse import quote

from server.runtime.clock import ManualClock
from server.sandbox.stack import Stack
from server.store.states import MessageStatus

from .conftest import PHONE, creates, events, insert, make_dispatcher, message, row


async def test_one_send_then_delivered_callback(any_stack: Stack) -> None:
    stack = any_stack
    (job,) = insert(stack, row(1))
    dispatcher = make_dispatcher(stack)

    assert await dispatcher.run_once() == 1

    (request,) = creates(stack)
    assert request.content_type == "application/x-www-form-urlencoded"
    form = request.form_dict()
    callback = f"{stack.url}/webhooks/twilio/status?job={quote(job, safe='')}"
    assert form == {
        "To": [PHONE],
        "Body": ["Invoice SI-00001 is 7 days overdue."],
        "From": [stack.twilio_sim.from_number],
        "StatusCallback": [callback],
    }
    assert request.auth_user == stack.twilio_sim.api_key_sid  # API key, not the auth token
    sent = message(stack, job)
    (sim_message,) = stack.twilio_sim.messages()
    assert (sent.status, sent.twilio_sid, sent.attempts) == ("queued", sim_message["sid"], 1)

    await stack.twilio_sim.asettle()

    done = message(stack, job)
    assert done.status == MessageStatus.DELIVERED
    history = [(e.status, e.source, e.twilio_status) for e in events(stack, job)]
    assert history == [
        ("planned", "engine", None),
        ("submitting", "dispatcher", None),
        ("queued", "dispatcher", "queued"),
        ("sent", "callback", "sent"),
        ("delivered", "callback", "delivered"),
    ]
    callbacks = stack.twilio_sim.callbacks(kind="status")
    assert [c.status for c in callbacks] == [200, 200]
    assert all(c.url == callback for c in callbacks)
    assert await dispatcher.run_once() == 0
    assert len(creates(stack)) == 1


async def test_duplicate_and_out_of_order_callbacks(any_stack: Stack) -> None:
    stack = any_stack
    stack.twilio_sim.set_callback_behaviour(duplicates=2, out_of_order=True)
    jobs = insert(stack, row(1), row(2, to="+447700900124"))
    stack.twilio_sim.set_number("+447700900124", "undelivered", error_code=30003)
    dispatcher = make_dispatcher(stack)

    assert await dispatcher.run_once() == 2
    await stack.twilio_sim.asettle()

    callbacks = stack.twilio_sim.callbacks(kind="status")
    # two statuses per message (sent, final), each delivered three times, newest first
    assert len(callbacks) == 12 and {c.status for c in callbacks} == {200}
    first = [dict(c.params)["MessageStatus"] for c in callbacks if c.copy == 0]
    assert first[:2] in (["delivered", "sent"], ["undelivered", "sent"])
    delivered, undelivered = message(stack, jobs[0]), message(stack, jobs[1])
    assert delivered.status == "delivered"
    assert (undelivered.status, undelivered.error_code) == ("undelivered", "30003")
    # each (sid, status) recorded once; the late 'sent' is history only, it moved nothing
    tail = [(e.status, e.twilio_status, e.changed) for e in events(stack, jobs[0])][3:]
    assert tail == [("delivered", "delivered", True), ("sent", "sent", False)]
    assert len(creates(stack)) == 2
    assert await dispatcher.run_once() == 0
    assert len(creates(stack)) == 2


async def test_the_runtime_worker_is_this_dispatcher(stack: Stack) -> None:
    """`ml-connector serve` runs the same class through the runtime table (server/runtime.py)."""
    insert(stack, row(1))
    assert await stack.run("dispatcher") == 1
    assert len(creates(stack)) == 1


async def test_drain_sends_everything_then_gives_up_on_a_job_held_past_its_deadline(stack: Stack) -> None:
    from datetime import timedelta

    import pytest

    from server.store import outbox
    from server.store.db import session_scope

    insert(stack, row(1), row(2))
    dispatcher = make_dispatcher(stack)
    sent, passes = await dispatcher.drain(within=30)
    assert sent == 2 and passes >= 2  # one pass sends, a later one finds the queue empty
    assert len(creates(stack)) == 2
    [held] = insert(stack, row(3))
    now = stack.clock.now()
    with session_scope(stack.services.db) as session:
        assert outbox.hold(session, held, until=now + timedelta(days=1), now=now)
    with pytest.raises(TimeoutError, match="jobs still pending after 0 s"):
        await dispatcher.drain(within=0.3)
    assert len(creates(stack)) == 2  # a held job is waited for, never sent early


async def test_drain_waits_for_an_unknown_send_to_be_reconciled_then_sends_it_once(stack: Stack) -> None:
    """A send whose outcome is unknown is still pending: drained only once reconciliation has
    looked at Twilio (nothing there) and the job has been sent."""
    from datetime import timedelta

    import pytest

    from server.store import outbox
    from server.store.db import session_scope

    (job,) = insert(stack, row(1))
    now = stack.clock.now()
    with session_scope(stack.services.db) as session:
        outbox.claim_due(session, "gone", now=now, limit=1, lease_seconds=60)
    with session_scope(stack.services.db) as session:
        assert outbox.mark_submitting(session, job, "gone", now=now, lease_seconds=60)
    with session_scope(stack.services.db) as session:
        assert outbox.mark_unknown(session, job, now=now, detail="read timeout")
    dispatcher = make_dispatcher(stack)
    with pytest.raises(TimeoutError, match="jobs still pending"):
        await dispatcher.drain(within=0.3)  # within the reconcile grace: not drained, not sent
    assert creates(stack) == [] and message(stack, job).status == "unknown"

    cast(ManualClock, stack.clock).advance(
        timedelta(seconds=121)
    )  # past the grace: Twilio's list holds nothing
    sent, _passes = await dispatcher.drain(within=30)
    assert sent == 1 and len(creates(stack)) == 1
    assert message(stack, job).status == "queued"
