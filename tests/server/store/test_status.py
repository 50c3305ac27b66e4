"""Twilio status reports apply monotonically; duplicates and unknown SIDs are harmless."""

from __future__ import annotations

from datetime import timedelta

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from server.runtime.clock import ManualClock
from server.store import outbox
from server.store.db import session_scope
from server.store.messages import get_message
from server.store.tables import MessageEvent

from .conftest import PlannedFactory

SID = "SM" + "0" * 31 + "1"


def _send(
    engine: Engine, clock: ManualClock, planned: PlannedFactory, n: int = 1, **overrides: object
) -> str:
    message = planned(n, **overrides)
    with session_scope(engine) as session:
        outbox.insert_planned(session, [message], company_id="c1", now=clock.now())
        outbox.claim_due(session, "w1", now=clock.now(), limit=10, lease_seconds=30)
        assert outbox.mark_submitting(session, message.job_id, "w1", now=clock.now(), lease_seconds=30)
    return str(message.job_id)


def _events(engine: Engine) -> int:
    with engine.connect() as conn:
        return int(conn.execute(sa.select(sa.func.count()).select_from(MessageEvent.__table__)).scalar_one())  # type: ignore[attr-defined]


def test_out_of_order_and_duplicate_callbacks(
    engine: Engine, clock: ManualClock, planned: PlannedFactory
) -> None:
    job = _send(engine, clock, planned)
    with session_scope(engine) as session:
        assert outbox.mark_sent(session, job, sid=SID, twilio_status="queued", now=clock.now())
    applied = []
    for word in ["sent", "delivered", "delivered", "sent", "sending", "undelivered"]:
        clock.advance(timedelta(seconds=1))
        with session_scope(engine) as session:
            applied.append(
                outbox.apply_status(
                    session, sid=SID, twilio_status=word, now=clock.now(), params={"MessageStatus": word}
                )
            )
    assert applied == [True, True, False, False, False, False]
    with session_scope(engine) as session:
        detail = get_message(session, job)
    assert detail is not None
    assert (detail.message.status, detail.message.twilio_status) == ("delivered", "delivered")
    callbacks = [(e.twilio_status, e.changed) for e in detail.events if e.source == "callback"]
    # each (sid, status) recorded once; late ones recorded but without effect
    assert callbacks == [("sent", True), ("delivered", True), ("sending", False), ("undelivered", False)]
    assert detail.events[-1].params == {"MessageStatus": "undelivered"}


def test_callback_for_unknown_sid_stores_nothing(
    engine: Engine, clock: ManualClock, planned: PlannedFactory
) -> None:
    _send(engine, clock, planned)
    before = _events(engine)
    with session_scope(engine) as session:
        assert not outbox.apply_status(
            session, sid="SM" + "f" * 32, twilio_status="delivered", now=clock.now()
        )
        assert not outbox.apply_status(
            session, sid="SM" + "f" * 32, job_id="no-such-job", twilio_status="delivered", now=clock.now()
        )
    assert _events(engine) == before


def test_callback_before_the_create_response_is_recorded(
    engine: Engine, clock: ManualClock, planned: PlannedFactory
) -> None:
    # The StatusCallback URL carries the job id; Twilio may call it before mark_sent commits.
    job = _send(engine, clock, planned)
    with session_scope(engine) as session:
        assert outbox.apply_status(session, sid=SID, job_id=job, twilio_status="sent", now=clock.now())
    with session_scope(engine) as session:
        # the late create response neither downgrades the status nor fails
        assert not outbox.mark_sent(session, job, sid=SID, twilio_status="queued", now=clock.now())
    with session_scope(engine) as session:
        detail = get_message(session, job)
    assert detail is not None
    assert (detail.message.status, detail.message.twilio_sid) == ("sent", SID)


def test_failure_is_terminal_and_keeps_the_error_code(
    engine: Engine, clock: ManualClock, planned: PlannedFactory
) -> None:
    job = _send(engine, clock, planned)
    with session_scope(engine) as session:
        outbox.mark_sent(session, job, sid=SID, twilio_status="accepted", now=clock.now())
        assert outbox.apply_status(
            session, sid=SID, twilio_status="undelivered", error_code="30003", now=clock.now()
        )
        assert not outbox.apply_status(session, sid=SID, twilio_status="delivered", now=clock.now())
    with session_scope(engine) as session:
        detail = get_message(session, job)
    assert detail is not None
    assert (detail.message.status, detail.message.error_code) == ("undelivered", "30003")


def test_a_second_sid_for_a_job_is_kept_as_evidence_not_applied(
    engine: Engine, clock: ManualClock, planned: PlannedFactory
) -> None:
    job = _send(engine, clock, planned)
    other = "SM" + "e" * 32
    with session_scope(engine) as session:
        outbox.mark_sent(session, job, sid=SID, twilio_status="queued", now=clock.now())
        assert not outbox.mark_sent(session, job, sid=other, twilio_status="queued", now=clock.now())
        assert not outbox.apply_status(
            session, sid=other, job_id=job, twilio_status="delivered", now=clock.now()
        )
    with session_scope(engine) as session:
        detail = get_message(session, job)
    assert detail is not None
    assert (detail.message.status, detail.message.twilio_sid) == ("queued", SID)
    assert sum(1 for e in detail.events if e.detail and other in e.detail) == 2


def test_voice_call_statuses_map_to_message_statuses(
    engine: Engine, clock: ManualClock, planned: PlannedFactory
) -> None:
    job = _send(engine, clock, planned, channel="voice")
    call = "CA" + "1" * 32
    with session_scope(engine) as session:
        outbox.mark_sent(session, job, sid=call, twilio_status="queued", now=clock.now())
        steps = [
            outbox.apply_status(session, sid=call, twilio_status=w, now=clock.now())
            for w in ["ringing", "in-progress", "completed", "no-answer"]
        ]
    assert steps == [True, True, True, False]
    assert get_status(engine, job) == "delivered"


def test_unmapped_status_word_is_recorded_without_effect(
    engine: Engine, clock: ManualClock, planned: PlannedFactory
) -> None:
    job = _send(engine, clock, planned)
    with session_scope(engine) as session:
        outbox.mark_sent(session, job, sid=SID, twilio_status="queued", now=clock.now())
        assert not outbox.apply_status(session, sid=SID, twilio_status="partially_delivered", now=clock.now())
    with session_scope(engine) as session:
        detail = get_message(session, job)
    assert detail is not None
    assert detail.message.status == "queued"
    assert (detail.events[-1].status, detail.events[-1].changed) == ("partially_delivered", False)


def get_status(engine: Engine, job: str) -> str:
    with session_scope(engine) as session:
        detail = get_message(session, job)
    assert detail is not None
    return detail.message.status
