"""The outbox: where a send is born (insert_planned) and every step of its life is recorded.

The life of a message is in states.py. Rules that keep "never send twice, never drop" true:
- job_id is UNIQUE and inserted with ON CONFLICT DO NOTHING: a re-evaluation is a no-op.
- claim_due hands a row to exactly one worker (FOR UPDATE SKIP LOCKED on PostgreSQL; on SQLite
  every transaction holds the write lock from BEGIN IMMEDIATE, see db.py).
- mark_submitting is committed BEFORE the HTTP call to Twilio, and only succeeds for the worker
  holding an unexpired claim (checked in the UPDATE itself), once per job even when a caller
  names a job twice. A 'submitting' row whose claim expires (the worker died mid-call) becomes
  'unknown' for reconciliation, never 'planned': the request may have reached Twilio.
  So the claim given to mark_submitting must outlast the HTTP client's total timeout.
- Status updates only move forward (states.is_advance), so replays and reordering are harmless.

Functions take a Session and never commit: the caller owns the transaction (db.session_scope).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Protocol

import sqlalchemy as sa
from sqlmodel import Session, col, select

from server.runtime.crashpoints import crash_point
from server.store.audit import record_audit
from server.store.columns import require_aware
from server.store.db import insert_ignoring_conflicts
from server.store.states import (
    CLAIMABLE,
    IN_DOUBT,
    Channel,
    EventSource,
    MessageStatus,
    is_advance,
    map_twilio_status,
)
from server.store.tables import MessageEvent, OutboxMessage

log = logging.getLogger(__name__)

S = MessageStatus
_OUTBOX = OutboxMessage.__table__  # type: ignore[attr-defined]
_EVENTS = MessageEvent.__table__  # type: ignore[attr-defined]


class PlannedLike(Protocol):
    """What insert_planned reads from a planned message (the engine's PlannedMessage fits)."""

    @property
    def job_id(self) -> str: ...
    @property
    def rule_id(self) -> str: ...
    @property
    def entity(self) -> str: ...
    @property
    def record_id(self) -> str | None: ...
    @property
    def record_number(self) -> str | None: ...
    @property
    def channel(self) -> str: ...
    @property
    def to(self) -> str | None: ...
    @property
    def body(self) -> str: ...
    @property
    def segments(self) -> int: ...
    @property
    def dedupe_key(self) -> str: ...
    @property
    def reason(self) -> str | None: ...
    @property
    def skip_code(self) -> str | None: ...
    @property
    def skip_reason(self) -> str | None: ...


@dataclass(frozen=True)
class PlannedRow:
    """A concrete PlannedLike, for callers and tests that do not go through the engine."""

    job_id: str
    rule_id: str
    entity: str
    record_id: str | None
    record_number: str | None
    channel: str
    to: str | None
    body: str
    segments: int = 1
    dedupe_key: str = ""
    reason: str | None = None
    skip_code: str | None = None
    skip_reason: str | None = None
    timezone: str = "UTC"
    quiet_hours: str | None = None


def _text(value: Any) -> str:
    """An enum member or a string, as its plain string value."""
    return str(getattr(value, "value", value))


def insert_planned(
    session: Session,
    messages: Iterable[PlannedLike],
    *,
    company_id: str,
    now: datetime,
    is_test: bool = False,
) -> list[str]:
    """Insert planned messages, ignoring job ids already present. Returns the job ids inserted.

    A message without a recipient (`to` is None) or with a skip_code is stored as 'skipped' with
    its reason and is never claimed for sending.
    """
    now = require_aware(now)
    rows: list[dict[str, Any]] = []
    seen: set[str] = set()
    for m in messages:
        if m.job_id in seen:  # the same job twice in one batch: one row (ON CONFLICT would too)
            continue
        seen.add(m.job_id)
        channel = _text(m.channel)
        if channel not in {c.value for c in Channel}:
            raise ValueError(f"job {m.job_id}: channel {channel!r} is not one of sms, voice")
        skipped = m.to is None or m.skip_code is not None
        rows.append(
            {
                "job_id": m.job_id,
                "rule_id": m.rule_id,
                "entity": m.entity,
                "company_id": company_id,
                "record_id": m.record_id,
                "record_number": m.record_number,
                "recipient": m.to,
                "channel": channel,
                "body": m.body,
                "segments": m.segments,
                "dedupe_key": m.dedupe_key,
                "reason": m.reason,
                # optional on PlannedLike: the engine's PlannedMessage carries the rule's send window
                "timezone": getattr(m, "timezone", None) or "UTC",
                "quiet_hours": getattr(m, "quiet_hours", None),
                "status": (S.SKIPPED if skipped else S.PLANNED).value,
                "error_code": (m.skip_code or ("no-recipient" if m.to is None else None))
                if skipped
                else None,
                "error_message": (m.skip_reason or ("no recipient phone number" if m.to is None else None))
                if skipped
                else None,
                "attempts": 0,
                "next_attempt_at": now,
                "is_test": is_test,
                # optional: set on an invoice's row that went out inside a grouped reminder
                "group_job_id": getattr(m, "group_job_id", None),
                "created_at": now,
                "updated_at": now,
            }
        )
    if not rows:
        return []
    inserted: list[str] = insert_ignoring_conflicts(
        session, _OUTBOX, rows, conflict_columns=["job_id"], returning=_OUTBOX.c.job_id
    )
    if inserted:
        crash_point("outbox.inserted")  # rows in the transaction, not committed
    by_job = {r["job_id"]: r for r in rows}
    events = [
        {
            "job_id": job_id,
            "status": by_job[job_id]["status"],
            "source": EventSource.ENGINE.value,
            "error_code": by_job[job_id]["error_code"],
            "detail": by_job[job_id]["error_message"] or by_job[job_id]["reason"],
            "changed": True,
            "at": now,
        }
        for job_id in inserted
    ]
    if events:
        session.execute(sa.insert(_EVENTS), events)
    return inserted


# --- claiming ------------------------------------------------------------------------------------


def recover_stale_submissions(session: Session, *, now: datetime) -> list[str]:
    """Turn 'submitting' rows whose claim expired into 'unknown' (the worker died mid-send).

    They go to reconciliation, not back to 'planned': the HTTP request may have reached Twilio.
    """
    now = require_aware(now)
    stmt = (
        sa.update(_OUTBOX)
        .where(_OUTBOX.c.status == S.SUBMITTING.value, _OUTBOX.c.claim_expires < now)
        .values(status=S.UNKNOWN.value, claimed_by=None, claim_expires=None, updated_at=now)
        .returning(_OUTBOX.c.job_id)
    )
    job_ids = list(session.execute(stmt).scalars().all())
    if job_ids:
        log.warning("outbox: %d send(s) interrupted mid-call marked unknown for reconciliation", len(job_ids))
        _add_events(
            session,
            job_ids,
            status=S.UNKNOWN,
            source=EventSource.DISPATCHER,
            now=now,
            detail="claim expired while submitting to Twilio: outcome unknown",
        )
    return job_ids


def claim_due(
    session: Session,
    worker_id: str,
    *,
    now: datetime,
    limit: int,
    lease_seconds: float,
    exclude: Iterable[str] = (),
) -> list[OutboxMessage]:
    """Claim up to `limit` due messages ('planned', or 'held' whose hold has passed) for `worker_id`.

    A claim whose lease expired is taken over (the previous worker crashed before submitting).
    `exclude`: job ids the caller already holds in memory (claimed, not yet finished), never
    claimed again even when their claim has run out, so that one process never holds a job twice.
    Also recovers interrupted submissions first (see recover_stale_submissions). Commit promptly.
    """
    now = require_aware(now)
    recover_stale_submissions(session, now=now)
    due: tuple[Any, ...] = (
        col(OutboxMessage.status).in_([s.value for s in CLAIMABLE]),
        col(OutboxMessage.next_attempt_at) <= now,
    )
    held = sorted(set(exclude))
    if held:
        due = (*due, col(OutboxMessage.job_id).not_in(held))
    return _claim(session, worker_id, due, now=now, limit=limit, lease_seconds=lease_seconds)


def renew_claims(
    session: Session,
    job_ids: Iterable[str],
    worker_id: str,
    *,
    now: datetime,
    lease_seconds: float,
    statuses: Iterable[MessageStatus] = CLAIMABLE,
) -> set[str]:
    """Extend `worker_id`'s unexpired claims on these jobs, still in `statuses` (waiting to be sent,
    by default), to `now` + `lease_seconds`. Returns the job ids renewed: a job missing from it is
    no longer this worker's (its claim ran out, or it was taken over or finished) and must not be
    sent, or reconciled, by it."""
    now = require_aware(now)
    ids = sorted(set(job_ids))
    if not ids:
        return set()
    if lease_seconds <= 0:
        raise ValueError("lease_seconds must be positive")
    stmt = (
        sa.update(_OUTBOX)
        .where(
            _OUTBOX.c.job_id.in_(ids),
            _OUTBOX.c.claimed_by == worker_id,
            _OUTBOX.c.claim_expires > now,
            _OUTBOX.c.status.in_([s.value for s in statuses]),
        )
        .values(claim_expires=now + timedelta(seconds=lease_seconds), updated_at=now)
        .returning(_OUTBOX.c.job_id)
    )
    return set(session.execute(stmt).scalars().all())


def claim_unknown(
    session: Session, worker_id: str, *, now: datetime, limit: int, lease_seconds: float
) -> list[OutboxMessage]:
    """Claim 'unknown' messages for reconciliation (ask Twilio what happened, then mark_sent or requeue)."""
    now = require_aware(now)
    recover_stale_submissions(session, now=now)
    return _claim(
        session,
        worker_id,
        # next_attempt_at: when a reconciler that could not decide yet will look again (defer_unknown).
        (col(OutboxMessage.status) == S.UNKNOWN.value, col(OutboxMessage.next_attempt_at) <= now),
        now=now,
        limit=limit,
        lease_seconds=lease_seconds,
    )


def _claim(
    session: Session,
    worker_id: str,
    conditions: tuple[Any, ...],
    *,
    now: datetime,
    limit: int,
    lease_seconds: float,
) -> list[OutboxMessage]:
    if limit <= 0:
        return []
    if lease_seconds <= 0:
        raise ValueError("lease_seconds must be positive")
    free = sa.or_(col(OutboxMessage.claimed_by).is_(None), col(OutboxMessage.claim_expires) < now)
    # SKIP LOCKED: concurrent workers on PostgreSQL pass over each other's rows instead of waiting.
    # The SQLite dialect renders no FOR UPDATE; there BEGIN IMMEDIATE already serialises claimers.
    pick = (
        select(OutboxMessage.id)
        .where(*conditions, free)
        .order_by(col(OutboxMessage.next_attempt_at), col(OutboxMessage.id))
        .limit(limit)
        .with_for_update(skip_locked=True)
    )
    ids = list(session.exec(pick).all())
    if not ids:
        return []
    session.execute(
        sa.update(_OUTBOX)
        .where(_OUTBOX.c.id.in_(ids))
        .values(claimed_by=worker_id, claim_expires=now + timedelta(seconds=lease_seconds), updated_at=now)
    )
    claimed = session.exec(
        select(OutboxMessage)
        .where(col(OutboxMessage.id).in_(ids))
        .order_by(col(OutboxMessage.next_attempt_at), col(OutboxMessage.id))
        .execution_options(populate_existing=True)
    ).all()
    return list(claimed)


# --- the dispatcher's transitions ----------------------------------------------------------------


def mark_submitting(
    session: Session, job_id: str, worker_id: str, *, now: datetime, lease_seconds: float
) -> bool:
    """Record that `worker_id` is about to call Twilio for `job_id`. Commit this BEFORE the call.

    Returns False (and the worker must not send) when the claim is no longer this worker's, has
    run out, or the message is no longer sendable. `lease_seconds` must exceed the HTTP call's
    total timeout: after it the row is presumed interrupted and becomes 'unknown'.
    """
    (moved,) = mark_submitting_each(session, [job_id], worker_id, now=now, lease_seconds=lease_seconds)
    return moved


def mark_submitting_many(
    session: Session, job_ids: Sequence[str], worker_id: str, *, now: datetime, lease_seconds: float
) -> set[str]:
    """mark_submitting for several jobs in one statement (the dispatcher's group commit).

    Returns the job ids that moved; only those may be sent, each after this transaction commits,
    and each by one caller only: a job id given twice moves once (see mark_submitting_each, for
    callers that must tell which of the two may send).
    """
    answers = mark_submitting_each(session, job_ids, worker_id, now=now, lease_seconds=lease_seconds)
    return {job_id for job_id, moved in zip(job_ids, answers, strict=True) if moved}


def mark_submitting_each(
    session: Session, job_ids: Sequence[str], worker_id: str, *, now: datetime, lease_seconds: float
) -> list[bool]:
    """mark_submitting for several jobs in one statement, answered per position: True where that
    caller may send. A job id given more than once is True at its first position only, so two
    callers holding the same job never both send it.

    The claim is checked in the statement itself: the row must still be claimed by `worker_id`
    with a claim that has not run out at `now`. A claim that ran out may already have been taken
    over by another worker (or be about to be), which then owns the send.
    """
    now = require_aware(now)
    if not job_ids:
        return []
    unique = list(dict.fromkeys(job_ids))
    stmt = (
        sa.update(_OUTBOX)
        .where(
            _OUTBOX.c.job_id.in_(unique),
            _OUTBOX.c.claimed_by == worker_id,
            _OUTBOX.c.claim_expires > now,
            _OUTBOX.c.status.in_([s.value for s in CLAIMABLE]),
        )
        .values(
            status=S.SUBMITTING.value,
            attempts=_OUTBOX.c.attempts + 1,
            claim_expires=now + timedelta(seconds=lease_seconds),
            hold_until=None,
            updated_at=now,
        )
        .returning(_OUTBOX.c.job_id)
    )
    moved = set(session.execute(stmt).scalars().all())
    if moved:
        # Events in the callers' order, so a job's history reads the same as with one call each.
        _add_events(
            session,
            [j for j in unique if j in moved],
            status=S.SUBMITTING,
            source=EventSource.DISPATCHER,
            now=now,
        )
    answers: list[bool] = []
    for job_id in job_ids:
        answers.append(job_id in moved)
        moved.discard(job_id)  # a second position of the same job is answered False
    return answers


def unsubmit(session: Session, job_id: str, worker_id: str, *, now: datetime, detail: str) -> bool:
    """Undo mark_submitting when the worker knows the create call was never made (it stopped
    before the call): back to 'planned', unclaimed, the attempt not counted. Only for the worker
    that holds the claim; a job whose call may have begun must go to 'unknown' instead."""
    now = require_aware(now)
    stmt = (
        sa.update(_OUTBOX)
        .where(
            _OUTBOX.c.job_id == job_id,
            _OUTBOX.c.claimed_by == worker_id,
            _OUTBOX.c.status == S.SUBMITTING.value,
        )
        .values(
            status=S.PLANNED.value,
            attempts=_OUTBOX.c.attempts - 1,
            claimed_by=None,
            claim_expires=None,
            updated_at=now,
        )
        .returning(_OUTBOX.c.job_id)
    )
    if session.execute(stmt).first() is None:
        return False
    _add_events(session, [job_id], status=S.PLANNED, source=EventSource.DISPATCHER, now=now, detail=detail)
    return True


def mark_sent(
    session: Session,
    job_id: str,
    *,
    sid: str,
    twilio_status: str,
    now: datetime,
    source: EventSource = EventSource.DISPATCHER,
) -> bool:
    """Record Twilio's answer to a create call (or a reconciliation that found the message).

    Stores the SID and moves the status forward only (a callback may already have said more).
    Returns True when something changed.
    """
    changed = mark_sent_many(session, [Accepted(job_id, sid, twilio_status)], now=now, source=source)
    return job_id in changed


@dataclass(frozen=True)
class Accepted:
    """Twilio's answer to one create call: the job, its SID and the status in the answer."""

    job_id: str
    sid: str
    twilio_status: str


def mark_sent_many(
    session: Session,
    accepted: Sequence[Accepted],
    *,
    now: datetime,
    source: EventSource = EventSource.DISPATCHER,
) -> set[str]:
    """mark_sent for several answers in one transaction (rows locked in one statement).

    Returns the job ids where something changed. LookupError if a job is not in the outbox.
    """
    now = require_aware(now)
    if not accepted:
        return set()
    job_ids = list(dict.fromkeys(a.job_id for a in accepted))
    # The few columns needed, not ORM rows (this runs once per send).
    found = session.execute(
        sa.select(_OUTBOX.c.id, _OUTBOX.c.job_id, _OUTBOX.c.channel, _OUTBOX.c.twilio_sid, _OUTBOX.c.status)
        .where(_OUTBOX.c.job_id.in_(job_ids))
        .order_by(_OUTBOX.c.id)  # one lock order for every writer: no deadlock
        .with_for_update()
    ).all()
    rows = {r.job_id: r for r in found}
    missing = [j for j in job_ids if j not in rows]
    if missing:
        raise LookupError(f"outbox has no job {missing[0]!r}")
    # (sid, status) per job as this batch leaves it: a later answer for the same job sees the
    # earlier one.
    state = {j: (r.twilio_sid, S(r.status)) for j, r in rows.items()}
    changed: set[str] = set()
    events: list[dict[str, Any]] = []
    for a in accepted:
        row = rows[a.job_id]
        known_sid, current = state[a.job_id]
        if known_sid is not None and known_sid != a.sid:
            # Two SIDs for one job means two sends happened: keep the first, make the second visible.
            log.error("outbox: job %s already has sid %s, Twilio reported %s", a.job_id, known_sid, a.sid)
            events.append(
                _event(
                    a.job_id,
                    status=current,
                    source=source,
                    now=now,
                    twilio_status=a.twilio_status,
                    detail=f"second Twilio sid {a.sid} for this job (kept {known_sid})",
                    changed=False,
                )
            )
            continue
        new = map_twilio_status(row.channel, a.twilio_status) or S.QUEUED
        advance = is_advance(current, new)
        if not advance and known_sid is not None:
            continue
        values: dict[str, Any] = {
            "twilio_sid": a.sid,
            "claimed_by": None,
            "claim_expires": None,
            "updated_at": now,
        }
        if advance:
            values.update(status=new.value, twilio_status=a.twilio_status)
        session.execute(sa.update(_OUTBOX).where(_OUTBOX.c.id == row.id).values(**values))
        state[a.job_id] = (a.sid, new if advance else current)
        changed.add(a.job_id)
        events.append(
            _event(
                a.job_id,
                status=new if advance else current,
                source=source,
                now=now,
                twilio_status=a.twilio_status,
                detail=f"sid {a.sid}",
                changed=advance,
            )
        )
    if events:
        session.execute(sa.insert(_EVENTS), events)
    return changed


def mark_failed(
    session: Session,
    job_id: str,
    *,
    code: str | int | None,
    message: str | None,
    now: datetime,
    source: EventSource = EventSource.DISPATCHER,
) -> bool:
    """A permanent failure before Twilio accepted the message (e.g. 21211 invalid To). Terminal."""
    return _transition(
        session,
        job_id,
        allowed_from=CLAIMABLE | IN_DOUBT,
        to=S.FAILED,
        now=now,
        source=source,
        error_code=code,
        detail=message,
        extra={"error_message": message},
    )


def mark_unknown(session: Session, job_id: str, *, now: datetime, detail: str | None = None) -> bool:
    """The create call's outcome is unknown (timeout, connection reset, 5xx): reconcile, do not resend."""
    return _transition(
        session,
        job_id,
        allowed_from=frozenset({S.SUBMITTING}),
        to=S.UNKNOWN,
        now=now,
        source=EventSource.DISPATCHER,
        detail=detail,
    )


def requeue(
    session: Session,
    job_id: str,
    *,
    next_attempt_at: datetime,
    now: datetime,
    error_code: str | int | None = None,
    detail: str | None = None,
    source: EventSource = EventSource.DISPATCHER,
) -> bool:
    """Back to 'planned', due at `next_attempt_at`: only when Twilio certainly did not take it
    (429/20429 "not processed", a local rate budget, or a reconciliation that found nothing)."""
    return _transition(
        session,
        job_id,
        allowed_from=CLAIMABLE | IN_DOUBT,
        to=S.PLANNED,
        now=now,
        source=source,
        error_code=error_code,
        detail=detail,
        extra={"next_attempt_at": require_aware(next_attempt_at, "next_attempt_at")},
    )


def hold(session: Session, job_id: str, *, until: datetime, now: datetime, reason: str | None = None) -> bool:
    """Hold a message (quiet hours) until `until`; it becomes claimable again then."""
    until = require_aware(until, "until")
    return _transition(
        session,
        job_id,
        allowed_from=CLAIMABLE,
        to=S.HELD,
        now=now,
        source=EventSource.DISPATCHER,
        detail=reason or f"held until {until.isoformat()}",
        extra={"hold_until": until, "next_attempt_at": until},
    )


def mark_skipped(
    session: Session, job_id: str, *, reason: str, now: datetime, code: str | None = None
) -> bool:
    """Decided not to send (after planning). Terminal, with the reason."""
    return _transition(
        session,
        job_id,
        allowed_from=CLAIMABLE,
        to=S.SKIPPED,
        now=now,
        source=EventSource.DISPATCHER,
        error_code=code,
        detail=reason,
        extra={"error_message": reason},
    )


def mark_opted_out(
    session: Session, job_id: str, *, now: datetime, code: str | int | None = None, reason: str | None = None
) -> bool:
    """The recipient opted out: found in the registry before sending, or Twilio answered 21610."""
    text = reason or "recipient has opted out"
    return _transition(
        session,
        job_id,
        allowed_from=CLAIMABLE | IN_DOUBT,
        to=S.OPTED_OUT,
        now=now,
        source=EventSource.DISPATCHER,
        error_code=code,
        detail=text,
        extra={"error_message": text},
    )


def release_claim(session: Session, job_id: str, worker_id: str, *, now: datetime) -> bool:
    """Give back an unsent claimed message (e.g. on shutdown) so another worker can take it at once."""
    now = require_aware(now)
    stmt = (
        sa.update(_OUTBOX)
        .where(
            _OUTBOX.c.job_id == job_id,
            _OUTBOX.c.claimed_by == worker_id,
            _OUTBOX.c.status.in_([s.value for s in CLAIMABLE | {S.UNKNOWN}]),
        )
        .values(claimed_by=None, claim_expires=None, updated_at=now)
        .returning(_OUTBOX.c.job_id)
    )
    return session.execute(stmt).first() is not None


# --- Twilio status callbacks ---------------------------------------------------------------------


def apply_status(
    session: Session,
    *,
    twilio_status: str,
    now: datetime,
    sid: str | None = None,
    job_id: str | None = None,
    error_code: str | int | None = None,
    params: Mapping[str, Any] | None = None,
    source: EventSource = EventSource.CALLBACK,
) -> bool:
    """Apply a Twilio status report to the message with `sid` (or, failing that, `job_id`).

    Returns True only when the message's status moved. A callback for an unknown message returns
    False and stores nothing. Each (sid, status) is recorded once, so a replayed callback is a
    no-op; an out-of-order one is recorded in the history but does not move the status back.
    """
    moved = apply_status_report(
        session,
        twilio_status=twilio_status,
        now=now,
        sid=sid,
        job_id=job_id,
        error_code=error_code,
        params=params,
        source=source,
    )
    return moved is True


def apply_status_report(
    session: Session,
    *,
    twilio_status: str,
    now: datetime,
    sid: str | None = None,
    job_id: str | None = None,
    error_code: str | int | None = None,
    params: Mapping[str, Any] | None = None,
    source: EventSource = EventSource.CALLBACK,
) -> bool | None:
    """apply_status, telling "no such message" (None) from "recorded, nothing moved" (False).

    The status webhook's path: one locking read of the few columns needed, the event insert, and
    the row update when something changed (no separate existence check, no ORM object).
    """
    now = require_aware(now)
    if sid is None and job_id is None:
        raise ValueError("apply_status needs a sid or a job_id")
    row: Any = None
    if sid is not None:
        row = _lock_status_row(session, _OUTBOX.c.twilio_sid == sid)
    if row is None and job_id is not None:
        row = _lock_status_row(session, _OUTBOX.c.job_id == job_id)
    if row is None:
        return None
    word = twilio_status.strip().lower()
    code = None if error_code in (None, "") else str(error_code)
    plain_params = dict(params) if params is not None else None
    if sid is not None and row.twilio_sid is not None and row.twilio_sid != sid:
        log.error(
            "outbox: status for job %s names sid %s, but the job has sid %s", row.job_id, sid, row.twilio_sid
        )
        _add_events(
            session,
            [row.job_id],
            status=S(row.status),
            source=source,
            now=now,
            twilio_status=word,
            error_code=code,
            params=plain_params,
            detail=f"status for another sid {sid} (job has {row.twilio_sid})",
            dedupe_key=f"{sid}:{word}",
            changed=False,
        )
        return False
    effective_sid = sid or row.twilio_sid
    dedupe_key = f"{effective_sid}:{word}" if effective_sid else f"job:{row.job_id}:{word}"
    current = S(row.status)
    new = map_twilio_status(row.channel, word)
    advance = new is not None and is_advance(current, new)
    event = {
        "job_id": row.job_id,
        "status": new.value if new is not None else word,
        "twilio_status": word,
        "source": _text(source),
        "error_code": code,
        "params": plain_params,
        "dedupe_key": dedupe_key[:128],
        "changed": advance,
        "at": now,
    }
    recorded = insert_ignoring_conflicts(
        session, _EVENTS, [event], conflict_columns=["dedupe_key"], returning=_EVENTS.c.id
    )
    if not recorded:
        return False  # this exact report was applied before
    values: dict[str, Any] = {"updated_at": now}
    if row.twilio_sid is None and sid is not None:
        values["twilio_sid"] = sid
    if advance and new is not None:
        values.update(status=new.value, twilio_status=word, claimed_by=None, claim_expires=None)
        if code is not None:
            values["error_code"] = code
    session.execute(sa.update(_OUTBOX).where(_OUTBOX.c.id == row.id).values(**values))
    return advance


# --- internals -----------------------------------------------------------------------------------


def _lock_status_row(session: Session, where: Any) -> Any:
    """The columns a status report needs, row locked (FOR UPDATE), or None."""
    return session.execute(
        sa.select(_OUTBOX.c.id, _OUTBOX.c.job_id, _OUTBOX.c.twilio_sid, _OUTBOX.c.status, _OUTBOX.c.channel)
        .where(where)
        .limit(1)
        .with_for_update()
    ).first()


def _transition(
    session: Session,
    job_id: str,
    *,
    allowed_from: Iterable[MessageStatus],
    to: MessageStatus,
    now: datetime,
    source: EventSource,
    error_code: str | int | None = None,
    detail: str | None = None,
    extra: Mapping[str, Any] | None = None,
) -> bool:
    """Move one message to `to` if its status is in `allowed_from`; release its claim; record the event."""
    now = require_aware(now)
    code = None if error_code is None else str(error_code)
    values: dict[str, Any] = {
        "status": to.value,
        "claimed_by": None,
        "claim_expires": None,
        "updated_at": now,
    }
    if code is not None:
        values["error_code"] = code
    values.update(extra or {})
    stmt = (
        sa.update(_OUTBOX)
        .where(_OUTBOX.c.job_id == job_id, _OUTBOX.c.status.in_([s.value for s in allowed_from]))
        .values(**values)
        .returning(_OUTBOX.c.job_id)
    )
    if session.execute(stmt).first() is None:
        return False
    _add_events(session, [job_id], status=to, source=source, now=now, error_code=code, detail=detail)
    return True


def _event(
    job_id: str,
    *,
    status: MessageStatus,
    source: EventSource,
    now: datetime,
    twilio_status: str | None = None,
    error_code: str | None = None,
    detail: str | None = None,
    params: dict[str, Any] | None = None,
    dedupe_key: str | None = None,
    changed: bool = True,
) -> dict[str, Any]:
    return {
        "job_id": job_id,
        "status": status.value,
        "twilio_status": twilio_status,
        "source": _text(source),
        "error_code": error_code,
        "detail": detail,
        "params": params,
        "dedupe_key": dedupe_key,
        "changed": changed,
        "at": now,
    }


def _add_events(
    session: Session,
    job_ids: Sequence[str],
    *,
    status: MessageStatus,
    source: EventSource,
    now: datetime,
    twilio_status: str | None = None,
    error_code: str | None = None,
    detail: str | None = None,
    params: dict[str, Any] | None = None,
    dedupe_key: str | None = None,
    changed: bool = True,
) -> None:
    rows = [
        _event(
            job_id,
            status=status,
            source=source,
            now=now,
            twilio_status=twilio_status,
            error_code=error_code,
            detail=detail,
            params=params,
            dedupe_key=dedupe_key,
            changed=changed,
        )
        for job_id in job_ids
    ]
    if dedupe_key is not None:
        insert_ignoring_conflicts(
            session, _EVENTS, rows, conflict_columns=["dedupe_key"], returning=_EVENTS.c.id
        )
    else:
        session.execute(sa.insert(_EVENTS), rows)


def count_due(session: Session, *, now: datetime) -> int:
    """Outbox messages a dispatcher may claim now (claimable status, next attempt not in the future)."""
    return int(
        session.exec(
            select(sa.func.count())
            .select_from(OutboxMessage)
            .where(col(OutboxMessage.status).in_([s.value for s in CLAIMABLE]))
            .where(col(OutboxMessage.next_attempt_at) <= now)
        ).one()
    )


def count_by_rule(session: Session) -> list[tuple[str, int]]:
    """How many outbox rows each rule planned, whatever became of them."""
    rows = session.exec(select(OutboxMessage.rule_id, sa.func.count()).group_by(OutboxMessage.rule_id)).all()
    return [(rule_id, int(count)) for rule_id, count in rows]


def submitted_at(session: Session, message: OutboxMessage) -> datetime:
    """When the last create call for this job began (its latest 'submitting' event)."""
    at = session.exec(
        select(MessageEvent.at)
        .where(MessageEvent.job_id == message.job_id, MessageEvent.status == MessageStatus.SUBMITTING.value)
        .order_by(col(MessageEvent.id).desc())
        .limit(1)
    ).first()
    return at or message.updated_at


def sids_owned_elsewhere(session: Session, sids: Sequence[str], job_id: str) -> set[str]:
    if not sids:
        return set()
    rows = session.exec(
        select(OutboxMessage.twilio_sid).where(
            col(OutboxMessage.twilio_sid).in_(list(sids)), OutboxMessage.job_id != job_id
        )
    ).all()
    return {s for s in rows if s}


def stale_in_flight(
    session: Session, statuses: Sequence[str], *, quiet_since: datetime, oldest: datetime, limit: int
) -> list[OutboxMessage]:
    """Sends with a SID in `statuses`, not updated since `quiet_since` and born after `oldest`,
    the longest quiet first."""
    rows = session.exec(
        select(OutboxMessage)
        .where(
            col(OutboxMessage.status).in_(statuses),
            col(OutboxMessage.twilio_sid).is_not(None),
            col(OutboxMessage.updated_at) < quiet_since,
            col(OutboxMessage.created_at) >= oldest,
        )
        .order_by(col(OutboxMessage.updated_at))
        .limit(limit)
    ).all()
    return list(rows)


def touch(session: Session, job_id: str, *, now: datetime) -> None:
    """Mark a message as looked at now (its updated_at), without changing its status."""
    session.execute(
        sa.update(OutboxMessage).where(col(OutboxMessage.job_id) == job_id).values(updated_at=now)
    )


# --- reconciliation and its review by a person ---------------------------------------------------


class ReviewError(ValueError):
    """An operator's resolution that does not fit the job (wrong status, a SID another job owns)."""


def mark_needs_review(
    session: Session, job_id: str, worker_id: str, *, code: str, detail: str, now: datetime
) -> bool:
    """The reconciler holding `job_id` could prove neither that Twilio holds it nor that it does
    not: the job waits for a person (resolve_sent / resolve_not_sent) and is never resent on its own.
    A status callback naming the job still resolves it (apply_status: needs_review ranks as unknown)."""
    return _reconciler_moves(
        session, job_id, worker_id, to=S.NEEDS_REVIEW, now=now, code=code, detail=detail, extra={}
    )


def requeue_unknown(session: Session, job_id: str, worker_id: str, *, now: datetime, detail: str) -> bool:
    """Back to 'planned' for a real send, by the reconciler holding `job_id`, once it has proof that
    Twilio has no such message."""
    return _reconciler_moves(
        session,
        job_id,
        worker_id,
        to=S.PLANNED,
        now=now,
        code=None,
        detail=detail,
        extra={"next_attempt_at": now},
    )


def defer_unknown(session: Session, job_id: str, worker_id: str, *, until: datetime, now: datetime) -> bool:
    """The reconciler holding `job_id` cannot decide yet: it stays 'unknown', unclaimed, and is not
    looked at again before `until` (a status callback naming it may resolve it meanwhile)."""
    now = require_aware(now)
    stmt = (
        sa.update(_OUTBOX)
        .where(
            _OUTBOX.c.job_id == job_id,
            _OUTBOX.c.status == S.UNKNOWN.value,
            _OUTBOX.c.claimed_by == worker_id,
        )
        .values(
            next_attempt_at=require_aware(until, "until"), claimed_by=None, claim_expires=None, updated_at=now
        )
        .returning(_OUTBOX.c.job_id)
    )
    return session.execute(stmt).first() is not None


def _reconciler_moves(
    session: Session,
    job_id: str,
    worker_id: str,
    *,
    to: MessageStatus,
    now: datetime,
    code: str | None,
    detail: str,
    extra: Mapping[str, Any],
) -> bool:
    """An 'unknown' job moved by the reconciler that still holds its claim (checked in the UPDATE:
    a reconciler whose lease ran out, and whose job another one took, changes nothing)."""
    now = require_aware(now)
    values: dict[str, Any] = {
        "status": to.value,
        "claimed_by": None,
        "claim_expires": None,
        "updated_at": now,
    }
    if to is S.NEEDS_REVIEW:
        values.update(error_code=code, error_message=detail)
    values.update(extra)
    stmt = (
        sa.update(_OUTBOX)
        .where(
            _OUTBOX.c.job_id == job_id,
            _OUTBOX.c.status == S.UNKNOWN.value,
            _OUTBOX.c.claimed_by == worker_id,
            _OUTBOX.c.claim_expires >= now,
        )
        .values(**values)
        .returning(_OUTBOX.c.job_id)
    )
    if session.execute(stmt).first() is None:
        return False
    _add_events(
        session, [job_id], status=to, source=EventSource.RECONCILE, now=now, error_code=code, detail=detail
    )
    return True


def _review_row(session: Session, job_id: str) -> Any:
    row = session.execute(
        sa.select(_OUTBOX.c.id, _OUTBOX.c.status, _OUTBOX.c.recipient, _OUTBOX.c.channel)
        .where(_OUTBOX.c.job_id == job_id)
        .with_for_update()
    ).first()
    if row is None:
        raise ReviewError(f"job {job_id!r}: no such job in the outbox")
    if row.status != S.NEEDS_REVIEW.value:
        raise ReviewError(f"job {job_id!r}: status is {row.status!r}, not 'needs_review'; nothing to resolve")
    return row


def review_target(session: Session, job_id: str) -> tuple[str | None, str]:
    """The recipient and channel of a job awaiting review (ReviewError if it is not awaiting one)."""
    row = _review_row(session, job_id)
    return row.recipient, row.channel


def resolve_sent(
    session: Session,
    job_id: str,
    *,
    sid: str,
    twilio_status: str,
    actor: str,
    reason: str,
    now: datetime,
) -> None:
    """An operator found the job's message at Twilio: it is recorded with that SID, never resent.
    One audit entry says who and why."""
    _review_row(session, job_id)
    if sids_owned_elsewhere(session, [sid], job_id):
        raise ReviewError(f"sid {sid}: already recorded for another job")
    mark_sent_many(session, [Accepted(job_id, sid, twilio_status)], now=now, source=EventSource.OPERATOR)
    record_audit(
        session,
        actor=actor,
        action="message.resolved_sent",
        subject=job_id,
        now=now,
        details={"sid": sid, "twilio_status": twilio_status, "reason": reason},
    )


def resolve_not_sent(session: Session, job_id: str, *, actor: str, reason: str, now: datetime) -> None:
    """An operator established that Twilio has no such message: the job goes back to 'planned' and
    is sent once more. One audit entry says who and why."""
    _review_row(session, job_id)
    _transition(
        session,
        job_id,
        allowed_from=frozenset({S.NEEDS_REVIEW}),
        to=S.PLANNED,
        now=now,
        source=EventSource.OPERATOR,
        detail=f"not at Twilio, says {actor}: {reason}",
        extra={"next_attempt_at": require_aware(now), "error_code": None, "error_message": None},
    )
    record_audit(
        session,
        actor=actor,
        action="message.resolved_not_sent",
        subject=job_id,
        now=now,
        details={"reason": reason},
    )
