"""Twilio says no, or says nothing: 429 storms, permanent errors, configuration errors, lost answers."""

from __future__ import annotations

from datetime import timedelta

import structlog

from server.runtime.clock import ManualClock
from server.sandbox.stack import Stack
from server.store import outbox
from server.store.db import session_scope

from .conftest import (
    PHONE,
    accepted_bodies,
    creates,
    drain,
    events,
    insert,
    make_dispatcher,
    message,
    row,
    statuses,
    without_inline_retries,
)


def advance(stack: Stack, seconds: float) -> None:
    clock = stack.clock
    assert isinstance(clock, ManualClock)
    clock.advance(timedelta(seconds=seconds))


async def test_429_storm_every_job_sent_exactly_once(any_stack: Stack) -> None:
    stack = any_stack
    await without_inline_retries(stack)
    stack.twilio_sim.fail_next(25, status=429)
    jobs = insert(stack, *(row(n) for n in range(10)))
    dispatcher = make_dispatcher(stack)

    first = await dispatcher.run_once()
    assert (dispatcher.last_pass.requeued, dispatcher.last_pass.sent) == (10, 0)
    assert first == 10
    requeued = message(stack, jobs[0])
    # full jitter: due again within the first backoff ceiling (5 s), never before now
    assert stack.clock.now() <= requeued.next_attempt_at <= stack.clock.now() + timedelta(seconds=5)
    assert (requeued.status, requeued.error_code, requeued.attempts) == ("planned", "20429", 1)

    await drain(dispatcher, stack, passes=10, step_seconds=3600)

    await stack.twilio_sim.asettle()
    assert statuses(stack) == {"delivered": 10}
    assert sorted(accepted_bodies(stack)) == sorted(
        f"Invoice SI-{n:05d} is 7 days overdue." for n in range(10)
    )
    assert [r.status for r in creates(stack)].count(429) == 25
    assert sum(message(stack, j).attempts for j in jobs) == 25 + 10  # each 429 cost one attempt
    retried = [
        e for j in jobs for e in events(stack, j) if e.status == "planned" and e.source == "dispatcher"
    ]
    assert [e.error_code for e in retried] == ["20429"] * 25


async def test_rate_limited_sender_is_smoothed_by_backoff(stack: Stack) -> None:
    """The simulator's per-sender budget answers 429 to a burst; the client's in-line backoff and the
    dispatcher's requeue get every message through once."""
    stack.twilio_sim.set_rate_limit(4.0)
    insert(stack, *(row(n) for n in range(12)))
    dispatcher = make_dispatcher(stack)

    await drain(dispatcher, stack, passes=40, step_seconds=3600)

    await stack.twilio_sim.asettle()
    assert statuses(stack) == {"delivered": 12}
    bodies = accepted_bodies(stack)
    assert len(bodies) == len(set(bodies)) == 12
    assert 429 in [r.status for r in creates(stack)]


async def test_retryable_errors_give_up_after_max_attempts(stack: Stack) -> None:
    await without_inline_retries(stack)
    stack.services.settings.max_send_attempts = 3
    stack.twilio_sim.fail_next(100, status=500)
    (job,) = insert(stack, row(1))
    dispatcher = make_dispatcher(stack)

    await drain(dispatcher, stack, passes=6, step_seconds=3600)

    failed = message(stack, job)
    assert (failed.status, failed.attempts, failed.error_code) == ("failed", 3, "20500")
    assert failed.error_message is not None and failed.error_message.startswith("gave up after 3 attempts")
    assert len(creates(stack)) == 3


async def test_permanent_recipient_errors_fail_with_the_code_and_are_not_retried(any_stack: Stack) -> None:
    stack = any_stack
    stack.twilio_sim.set_number("+447700900124", "reject", error_code=21614)
    stack.twilio_sim.set_number("+447700900125", "reject")  # 21211 invalid To
    landline, invalid = insert(stack, row(1, to="+447700900124"), row(2, to="+447700900125"))
    dispatcher = make_dispatcher(stack)

    await drain(dispatcher, stack, passes=4, step_seconds=3600)

    first, second = message(stack, landline), message(stack, invalid)
    assert (first.status, first.error_code, first.attempts) == ("failed", "21614", 1)
    assert first.error_message == "'To' number +447700900124 is not a valid mobile number"
    assert (second.status, second.error_code, second.attempts) == ("failed", "21211", 1)
    assert len(creates(stack)) == 2


async def test_21610_from_twilio_records_the_opt_out(stack: Stack) -> None:
    # The handset's STOP reached Twilio but not us (webhook not configured): Twilio answers 21610.
    stack.twilio_sim.set_inbound_url(None)
    await stack.twilio_sim.asend_inbound(PHONE, "STOP")
    first, later = insert(stack, row(1), row(2))
    dispatcher = make_dispatcher(stack, batch_size=1)

    await dispatcher.run_once()
    refused = message(stack, first)
    assert (refused.status, refused.error_code) == ("opted_out", "21610")

    await dispatcher.run_once()  # the registry now stops the next one before Twilio is asked
    assert message(stack, later).status == "opted_out"
    assert [r.status for r in creates(stack)] == [400]


async def test_configuration_error_fails_loudly_and_stops_sending(stack: Stack) -> None:
    stack.services.settings.twilio.from_number = "+15005550001"  # not a number of this account
    first, second = insert(stack, row(1), row(2))
    dispatcher = make_dispatcher(stack, configuration_pause_seconds=60)

    with structlog.testing.capture_logs() as logs:
        await dispatcher.run_once()

    failed = message(stack, first)
    assert (failed.status, failed.error_code) == ("failed", "21606")
    held_back = message(stack, second)
    assert (held_back.status, held_back.claimed_by, held_back.attempts) == ("planned", None, 0)
    loud = [entry for entry in logs if entry["log_level"] == "error"]
    assert loud and loud[0]["code"] == 21606 and "CONFIGURATION" in loud[0]["event"]

    assert await dispatcher.run_once() == 0  # halted: nothing is tried
    assert len(creates(stack)) == 1
    stack.services.settings.twilio.from_number = stack.twilio_sim.from_number  # fixed
    advance(stack, 61)
    assert await dispatcher.run_once() == 1
    assert message(stack, second).twilio_sid is not None


async def test_outcome_unknown_is_reconciled_not_resent(any_stack: Stack) -> None:
    stack = any_stack
    stack.twilio_sim.drop_after_accept_next(1)
    (job,) = insert(stack, row(1))
    dispatcher = make_dispatcher(stack)

    await dispatcher.run_once()
    assert dispatcher.last_pass.unknown == 1
    assert message(stack, job).status == "unknown"

    await dispatcher.run_once()  # reconcile: the message is in Twilio's list

    (sim_message,) = stack.twilio_sim.messages()
    found = message(stack, job)
    assert (found.status, found.twilio_sid, found.attempts) == ("queued", sim_message["sid"], 1)
    assert [(e.status, e.source) for e in events(stack, job)][-2:] == [
        ("unknown", "dispatcher"),
        ("queued", "reconcile"),
    ]
    assert len(creates(stack)) == 1  # one create: never resent
    lists = [r for r in stack.twilio_sim.requests(path_contains="/Messages.json") if r.method == "GET"]
    assert len(lists) == 1 and ("To", PHONE) in lists[0].query

    await stack.twilio_sim.asettle()
    assert message(stack, job).status == "delivered"


async def test_status_callback_with_the_job_id_resolves_an_unknown_send(stack: Stack) -> None:
    stack.twilio_sim.drop_after_accept_next(1)
    (job,) = insert(stack, row(1))
    dispatcher = make_dispatcher(stack)
    await dispatcher.run_once()
    assert message(stack, job).status == "unknown"

    await stack.twilio_sim.asettle()  # callbacks carry ?job=: they name the SID before reconcile runs

    (sim_message,) = stack.twilio_sim.messages()
    resolved = message(stack, job)
    assert (resolved.status, resolved.twilio_sid) == ("delivered", sim_message["sid"])
    await dispatcher.run_once()
    assert len(creates(stack)) == 1


async def test_interrupted_submission_is_requeued_only_after_the_grace_period(stack: Stack) -> None:
    """A worker died after committing 'submitting' and before its request left: Twilio has nothing."""
    (job,) = insert(stack, row(1))
    now = stack.clock.now()
    with session_scope(stack.services.db) as session:
        outbox.claim_due(session, "dead-worker", now=now, limit=1, lease_seconds=5)
    with session_scope(stack.services.db) as session:
        assert outbox.mark_submitting(session, job, "dead-worker", now=now, lease_seconds=5)
    advance(stack, 10)
    dispatcher = make_dispatcher(stack)

    assert await dispatcher.run_once() == 0  # now 'unknown', not found, still within the grace period
    assert message(stack, job).status == "unknown"
    assert creates(stack) == []

    advance(stack, 120)
    await dispatcher.run_once()  # not found after the grace: requeued, then sent for real

    sent = message(stack, job)
    assert (sent.status, sent.attempts) == ("queued", 2)
    await stack.twilio_sim.asettle()
    assert message(stack, job).status == "delivered"
    assert len(creates(stack)) == 1
    assert ("planned", "reconcile") in [(e.status, e.source) for e in events(stack, job)]


async def test_no_sender_configured_fails_before_anything_is_sent(stack: Stack) -> None:
    stack.services.settings.twilio.from_number = ""
    first, second = insert(stack, row(1), row(2))
    dispatcher = make_dispatcher(stack)

    await dispatcher.run_once()

    failed = message(stack, first)
    assert (failed.status, failed.error_code, failed.attempts) == ("failed", "no-sender", 0)
    assert message(stack, second).status == "planned"  # halted, claim given back
    assert creates(stack) == []


async def test_voice_needs_a_from_number(stack: Stack) -> None:
    stack.services.settings.twilio.from_number = ""
    stack.services.settings.twilio.messaging_service_sid = stack.twilio_sim.messaging_service_sid
    sms, call = insert(stack, row(1), row(2, channel="voice"))
    dispatcher = make_dispatcher(stack)

    await dispatcher.run_once()

    assert (message(stack, call).status, message(stack, call).error_code) == ("failed", "no-voice-sender")
    (request,) = creates(stack)  # the SMS went through the Messaging Service
    assert request.form_dict()["MessagingServiceSid"] == [stack.twilio_sim.messaging_service_sid]
    assert "From" not in request.form_dict()
    assert message(stack, sms).twilio_status == "accepted"


async def test_unknown_call_is_resolved_by_its_callbacks(stack: Stack) -> None:
    # The call progresses only when settled below: on its own clock a loaded machine could see its
    # first callback before the 'unknown' is read.
    stack.twilio_sim.auto_advance = False
    stack.twilio_sim.drop_after_accept_next(1)
    (job,) = insert(stack, row(1, channel="voice"))
    dispatcher = make_dispatcher(stack)
    await dispatcher.run_once()
    assert message(stack, job).status == "unknown"

    await stack.twilio_sim.asettle()  # 'initiated' ... 'completed', each carrying ?job=

    (call,) = stack.twilio_sim.calls()
    resolved = message(stack, job)
    assert (resolved.status, resolved.twilio_sid) == ("delivered", call["sid"])
    assert len(creates(stack, "Calls.json")) == 1


async def test_unknown_call_without_callbacks_is_failed_not_placed_again(stack: Stack) -> None:
    stack.twilio_sim.auto_advance = False  # the call never progresses: no callback ever comes
    stack.twilio_sim.drop_after_accept_next(1)
    (job,) = insert(stack, row(1, channel="voice"))
    dispatcher = make_dispatcher(stack)
    await dispatcher.run_once()

    advance(stack, 600)
    await dispatcher.run_once()
    assert message(stack, job).status == "unknown"  # still waiting for a callback

    advance(stack, 301)
    with structlog.testing.capture_logs() as logs:
        await dispatcher.run_once()
    failed = message(stack, job)
    assert (failed.status, failed.error_code) == ("failed", "outcome-unknown")
    assert any(entry["log_level"] == "error" for entry in logs)
    assert len(creates(stack, "Calls.json")) == 1


async def test_a_send_stopped_before_its_call_goes_back_to_planned_uncounted(stack: Stack) -> None:
    """outbox.unsubmit: the claim holder knows no call was made (sending halted meanwhile)."""
    (job,) = insert(stack, row(1))
    now = stack.clock.now()
    with session_scope(stack.services.db) as session:
        outbox.claim_due(session, "w1", now=now, limit=1, lease_seconds=60)
    with session_scope(stack.services.db) as session:
        assert outbox.mark_submitting(session, job, "w1", now=now, lease_seconds=60)
    with session_scope(stack.services.db) as session:
        assert not outbox.unsubmit(session, job, "w2", now=now, detail="not ours")  # only the holder

        assert outbox.unsubmit(session, job, "w1", now=now, detail="sending stopped before the call")

    back = message(stack, job)
    assert (back.status, back.attempts, back.claimed_by, back.claim_expires) == ("planned", 0, None, None)
    assert [(e.status, e.source) for e in events(stack, job)][-2:] == [
        ("submitting", "dispatcher"),
        ("planned", "dispatcher"),
    ]
    with session_scope(stack.services.db) as session:  # once only: it is no longer 'submitting'
        assert not outbox.unsubmit(session, job, "w1", now=now, detail="again")
    await make_dispatcher(stack).run_once()  # and it is sent as any planned job
    assert (message(stack, job).status, message(stack, job).attempts) == ("queued", 1)
    assert len(creates(stack)) == 1
