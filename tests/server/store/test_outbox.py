"""Outbox: idempotent inserts, exclusive claims, crash recovery into 'unknown', transitions."""

from __future__ import annotations

import threading
from datetime import timedelta

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from server.runtime.clock import ManualClock
from server.store import outbox
from server.store.db import session_scope
from server.store.messages import get_message
from server.store.states import EventSource
from server.store.tables import OutboxMessage

from .conftest import PlannedFactory


def _status(engine: Engine, job_id: str) -> str:
    with session_scope(engine) as session:
        detail = get_message(session, job_id)
        assert detail is not None
        return detail.message.status


def _rows(engine: Engine) -> int:
    with engine.connect() as conn:
        return int(conn.execute(sa.select(sa.func.count()).select_from(OutboxMessage.__table__)).scalar_one())  # type: ignore[attr-defined]


def test_insert_is_idempotent_by_job_id(engine: Engine, clock: ManualClock, planned: PlannedFactory) -> None:
    batch = [planned(1), planned(2), planned(1)]  # job 1 twice in one batch
    with session_scope(engine) as session:
        first = outbox.insert_planned(session, batch, company_id="c1", now=clock.now())
    with session_scope(engine) as session:
        again = outbox.insert_planned(
            session, [planned(1), planned(2), planned(3)], company_id="c1", now=clock.now()
        )
    assert sorted(first) == [planned(1).job_id, planned(2).job_id]
    assert again == [planned(3).job_id]
    assert _rows(engine) == 3


def test_message_without_recipient_or_with_skip_code_is_stored_skipped(
    engine: Engine, clock: ManualClock, planned: PlannedFactory
) -> None:
    no_phone = planned(1, to=None)
    bad_phone = planned(2, to=None, skip_code="ML401", skip_reason="'+44 12' is not a valid phone number")
    with session_scope(engine) as session:
        outbox.insert_planned(session, [no_phone, bad_phone, planned(3)], company_id="c1", now=clock.now())
        claimed = outbox.claim_due(session, "w1", now=clock.now(), limit=10, lease_seconds=60)
    assert [m.job_id for m in claimed] == [planned(3).job_id]
    with session_scope(engine) as session:
        one = get_message(session, no_phone.job_id)
        two = get_message(session, bad_phone.job_id)
    assert one is not None and two is not None
    assert (one.message.status, one.message.error_code) == ("skipped", "no-recipient")
    assert (two.message.status, two.message.error_code, two.message.error_message) == (
        "skipped",
        "ML401",
        "'+44 12' is not a valid phone number",
    )
    assert [(e.status, e.source) for e in two.events] == [("skipped", "engine")]


def test_claim_takes_only_due_unclaimed_rows_and_retakes_expired_claims(
    engine: Engine, clock: ManualClock, planned: PlannedFactory
) -> None:
    with session_scope(engine) as session:
        outbox.insert_planned(session, [planned(n) for n in range(1, 4)], company_id="c1", now=clock.now())
        outbox.hold(session, planned(3).job_id, until=clock.now() + timedelta(hours=8), now=clock.now())
    with session_scope(engine) as session:
        first = outbox.claim_due(session, "w1", now=clock.now(), limit=1, lease_seconds=30)
    with session_scope(engine) as session:
        second = outbox.claim_due(session, "w2", now=clock.now(), limit=10, lease_seconds=30)
    assert [m.job_id for m in first] == [planned(1).job_id]
    assert [m.job_id for m in second] == [planned(2).job_id]  # 1 is w1's, 3 is held
    assert first[0].claimed_by == "w1" and first[0].claim_expires == clock.now() + timedelta(seconds=30)

    clock.advance(timedelta(seconds=31))  # w1 died before submitting: its claim may be taken over
    with session_scope(engine) as session:
        third = outbox.claim_due(session, "w3", now=clock.now(), limit=10, lease_seconds=30)
    assert sorted(m.job_id for m in third) == [planned(1).job_id, planned(2).job_id]

    clock.advance(timedelta(hours=8))  # the hold has passed
    with session_scope(engine) as session:
        fourth = outbox.claim_due(session, "w4", now=clock.now(), limit=10, lease_seconds=30)
    assert planned(3).job_id in [m.job_id for m in fourth]


def test_only_the_claim_holder_may_submit(
    engine: Engine, clock: ManualClock, planned: PlannedFactory
) -> None:
    job = planned(1).job_id
    with session_scope(engine) as session:
        outbox.insert_planned(session, [planned(1)], company_id="c1", now=clock.now())
        outbox.claim_due(session, "w1", now=clock.now(), limit=1, lease_seconds=30)
    clock.advance(timedelta(seconds=31))
    with session_scope(engine) as session:
        outbox.claim_due(session, "w2", now=clock.now(), limit=1, lease_seconds=30)
    with session_scope(engine) as session:
        late = outbox.mark_submitting(session, job, "w1", now=clock.now(), lease_seconds=60)
        owner = outbox.mark_submitting(session, job, "w2", now=clock.now(), lease_seconds=60)
        twice = outbox.mark_submitting(session, job, "w2", now=clock.now(), lease_seconds=60)
    assert (late, owner, twice) == (False, True, False)
    with session_scope(engine) as session:
        detail = get_message(session, job)
    assert detail is not None and detail.message.attempts == 1


def test_crash_while_submitting_becomes_unknown_not_planned(
    engine: Engine, clock: ManualClock, planned: PlannedFactory
) -> None:
    job = planned(1).job_id
    with session_scope(engine) as session:
        outbox.insert_planned(session, [planned(1)], company_id="c1", now=clock.now())
        outbox.claim_due(session, "w1", now=clock.now(), limit=1, lease_seconds=30)
    with session_scope(engine) as session:
        assert outbox.mark_submitting(session, job, "w1", now=clock.now(), lease_seconds=60)
    # w1 crashes during the HTTP call. Before the lease ends nobody touches the row.
    clock.advance(timedelta(seconds=59))
    with session_scope(engine) as session:
        assert outbox.claim_due(session, "w2", now=clock.now(), limit=10, lease_seconds=30) == []
    assert _status(engine, job) == "submitting"
    clock.advance(timedelta(seconds=2))
    with session_scope(engine) as session:
        assert outbox.claim_due(session, "w2", now=clock.now(), limit=10, lease_seconds=30) == []
    assert _status(engine, job) == "unknown"

    # The reconciler claims it, asks Twilio, and finds the message was sent after all.
    with session_scope(engine) as session:
        (doubt,) = outbox.claim_unknown(session, "r1", now=clock.now(), limit=10, lease_seconds=30)
        assert doubt.job_id == job
        assert outbox.mark_sent(
            session,
            job,
            sid="SM" + "a" * 32,
            twilio_status="sent",
            now=clock.now(),
            source=EventSource.RECONCILE,
        )
    with session_scope(engine) as session:
        detail = get_message(session, job)
    assert detail is not None
    assert (detail.message.status, detail.message.twilio_sid, detail.message.attempts) == (
        "sent",
        "SM" + "a" * 32,
        1,
    )
    assert [(e.status, e.source) for e in detail.events] == [
        ("planned", "engine"),
        ("submitting", "dispatcher"),
        ("unknown", "dispatcher"),
        ("sent", "reconcile"),
    ]


def test_unknown_found_absent_is_requeued_and_sent_once_more(
    engine: Engine, clock: ManualClock, planned: PlannedFactory
) -> None:
    job = planned(1).job_id
    with session_scope(engine) as session:
        outbox.insert_planned(session, [planned(1)], company_id="c1", now=clock.now())
        outbox.claim_due(session, "w1", now=clock.now(), limit=1, lease_seconds=30)
        outbox.mark_submitting(session, job, "w1", now=clock.now(), lease_seconds=30)
    with session_scope(engine) as session:
        assert outbox.mark_unknown(session, job, now=clock.now(), detail="read timeout")
        assert not outbox.mark_unknown(session, job, now=clock.now())  # only from submitting
    with session_scope(engine) as session:
        assert outbox.claim_due(session, "w2", now=clock.now(), limit=10, lease_seconds=30) == []
        outbox.claim_unknown(session, "r1", now=clock.now(), limit=10, lease_seconds=30)
        assert outbox.requeue(
            session,
            job,
            next_attempt_at=clock.now(),
            now=clock.now(),
            detail="not found at Twilio",
            source=EventSource.RECONCILE,
        )
    with session_scope(engine) as session:
        assert [
            m.job_id for m in outbox.claim_due(session, "w2", now=clock.now(), limit=10, lease_seconds=30)
        ] == [job]


def test_rate_limited_send_is_requeued_with_backoff(
    engine: Engine, clock: ManualClock, planned: PlannedFactory
) -> None:
    job = planned(1).job_id
    with session_scope(engine) as session:
        outbox.insert_planned(session, [planned(1)], company_id="c1", now=clock.now())
        outbox.claim_due(session, "w1", now=clock.now(), limit=1, lease_seconds=30)
        outbox.mark_submitting(session, job, "w1", now=clock.now(), lease_seconds=30)
        assert outbox.requeue(
            session,
            job,
            next_attempt_at=clock.now() + timedelta(seconds=4),
            now=clock.now(),
            error_code=20429,
        )
    with session_scope(engine) as session:
        assert outbox.claim_due(session, "w1", now=clock.now(), limit=10, lease_seconds=30) == []
    clock.advance(timedelta(seconds=4))
    with session_scope(engine) as session:
        (again,) = outbox.claim_due(session, "w1", now=clock.now(), limit=10, lease_seconds=30)
    assert (again.job_id, again.status, again.attempts, again.error_code) == (job, "planned", 1, "20429")


def test_terminal_dispatcher_outcomes(engine: Engine, clock: ManualClock, planned: PlannedFactory) -> None:
    jobs = [planned(n).job_id for n in range(1, 4)]
    with session_scope(engine) as session:
        outbox.insert_planned(session, [planned(n) for n in range(1, 4)], company_id="c1", now=clock.now())
        outbox.claim_due(session, "w1", now=clock.now(), limit=10, lease_seconds=30)
        for job in jobs[:2]:
            outbox.mark_submitting(session, job, "w1", now=clock.now(), lease_seconds=30)
        assert outbox.mark_failed(
            session, jobs[0], code=21211, message="The 'To' number is not valid.", now=clock.now()
        )
        assert outbox.mark_opted_out(session, jobs[1], code=21610, now=clock.now())
        assert outbox.mark_skipped(session, jobs[2], reason="quiet hours ended the day", now=clock.now())
        # terminal: nothing moves them again
        assert not outbox.requeue(session, jobs[0], next_attempt_at=clock.now(), now=clock.now())
        assert not outbox.mark_failed(session, jobs[2], code=1, message="x", now=clock.now())
    assert [_status(engine, j) for j in jobs] == ["failed", "opted_out", "skipped"]
    with session_scope(engine) as session:
        detail = get_message(session, jobs[0])
    assert detail is not None
    assert (detail.message.error_code, detail.message.error_message) == (
        "21211",
        "The 'To' number is not valid.",
    )
    assert detail.message.claimed_by is None


def test_two_threads_claim_disjoint_sets(engine: Engine, clock: ManualClock, planned: PlannedFactory) -> None:
    total = 200
    with session_scope(engine) as session:
        outbox.insert_planned(session, [planned(n) for n in range(total)], company_id="c1", now=clock.now())
    claimed: dict[str, list[str]] = {"a": [], "b": []}
    errors: list[BaseException] = []
    start = threading.Barrier(2, timeout=10)

    def work(worker: str) -> None:
        try:
            start.wait()
            while True:
                with session_scope(engine) as session:
                    batch = outbox.claim_due(session, worker, now=clock.now(), limit=7, lease_seconds=300)
                if not batch:
                    return
                with session_scope(engine) as session:
                    for m in batch:
                        assert outbox.mark_submitting(
                            session, m.job_id, worker, now=clock.now(), lease_seconds=300
                        )
                claimed[worker].extend(m.job_id for m in batch)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(w,)) for w in claimed]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert not errors
    assert not any(t.is_alive() for t in threads)
    everything = claimed["a"] + claimed["b"]
    assert len(everything) == total
    assert len(set(everything)) == total


def test_engine_planned_message_fits_the_outbox(engine: Engine, clock: ManualClock) -> None:
    # Contract with engine/evaluate.py: its PlannedMessage is accepted as is, send window included.
    from engine.messages import PlannedMessage

    message = PlannedMessage(
        job_id="mlc-" + "0" * 40,
        rule_id="invoice-overdue",
        entity="salesInvoices",
        record_id="rec-1",
        record_number="SI-1",
        channel="sms",
        to="+447700900123",
        body="Invoice SI-1 is overdue.",
        segments=1,
        dedupe_key="invoice-overdue|rec-1",
        reason="days_overdue >= 7",
        timezone="Europe/London",
        quiet_hours="21:00-08:00",
    )
    with session_scope(engine) as session:
        assert outbox.insert_planned(session, [message], company_id="c1", now=clock.now()) == [message.job_id]
        detail = get_message(session, message.job_id)
    assert detail is not None
    assert (detail.message.timezone, detail.message.quiet_hours, detail.message.status) == (
        "Europe/London",
        "21:00-08:00",
        "planned",
    )


def test_submitting_needs_the_holders_unexpired_claim_checked_in_the_sql(
    engine: Engine, clock: ManualClock, planned: PlannedFactory
) -> None:
    job = planned(1).job_id
    with session_scope(engine) as session:
        outbox.insert_planned(session, [planned(1)], company_id="c1", now=clock.now())
        outbox.claim_due(session, "w1", now=clock.now(), limit=1, lease_seconds=30)
    clock.advance(timedelta(seconds=30))  # the claim has run out; nobody has taken it over yet
    with session_scope(engine) as session:
        expired = outbox.mark_submitting(session, job, "w1", now=clock.now(), lease_seconds=60)
        renewed = outbox.renew_claims(session, [job], "w1", now=clock.now(), lease_seconds=30)
    assert (expired, renewed) == (False, set())
    with session_scope(engine) as session:
        detail = get_message(session, job)
    assert detail is not None
    assert (detail.message.status, detail.message.attempts) == ("planned", 0)
    assert [e.status for e in detail.events] == ["planned"]


def test_a_job_named_twice_in_one_submitting_write_moves_once(
    engine: Engine, clock: ManualClock, planned: PlannedFactory
) -> None:
    one, two = planned(1).job_id, planned(2).job_id
    with session_scope(engine) as session:
        outbox.insert_planned(session, [planned(1), planned(2)], company_id="c1", now=clock.now())
        outbox.claim_due(session, "w1", now=clock.now(), limit=2, lease_seconds=30)
    with session_scope(engine) as session:
        answers = outbox.mark_submitting_each(
            session, [one, two, one], "w1", now=clock.now(), lease_seconds=60
        )
    assert answers == [True, True, False]  # the second caller holding `one` must not send
    with session_scope(engine) as session:
        detail = get_message(session, one)
    assert detail is not None and detail.message.attempts == 1
    assert [e.status for e in detail.events] == ["planned", "submitting"]


def test_a_renewed_claim_outlives_its_first_lease_and_held_jobs_are_not_claimed_again(
    engine: Engine, clock: ManualClock, planned: PlannedFactory
) -> None:
    one, two = planned(1).job_id, planned(2).job_id
    with session_scope(engine) as session:
        outbox.insert_planned(session, [planned(1), planned(2)], company_id="c1", now=clock.now())
        outbox.claim_due(session, "w1", now=clock.now(), limit=2, lease_seconds=30)
    clock.advance(timedelta(seconds=20))
    with session_scope(engine) as session:
        assert outbox.renew_claims(session, [one], "w1", now=clock.now(), lease_seconds=30) == {one}
        assert outbox.renew_claims(session, [two], "w2", now=clock.now(), lease_seconds=30) == set()
    clock.advance(timedelta(seconds=20))  # 40 s: `one` was renewed, `two` ran out
    with session_scope(engine) as session:
        # The same worker holds `two` in memory still: its expired claim is not taken again.
        again = outbox.claim_due(session, "w1", now=clock.now(), limit=10, lease_seconds=30, exclude=[two])
        other = outbox.claim_due(session, "w2", now=clock.now(), limit=10, lease_seconds=30)
    assert again == []
    assert [m.job_id for m in other] == [two]
    with session_scope(engine) as session:
        assert outbox.mark_submitting(session, one, "w1", now=clock.now(), lease_seconds=60)
        assert not outbox.mark_submitting(session, two, "w1", now=clock.now(), lease_seconds=60)
        assert outbox.mark_submitting(session, two, "w2", now=clock.now(), lease_seconds=60)
