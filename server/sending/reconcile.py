"""Reconciliation: what happened to a send whose outcome we do not know?

A job is 'unknown' when the create call left us but no answer came back (read timeout, dropped
connection, a gateway 502/504), or when a worker died while 'submitting' (store.outbox
recover_stale_submissions). Twilio may hold the message, so resending blindly could text a customer
twice. Instead:

- SMS: read the account's Messages to the recipient, newest first and without a DateSent filter
  (a message still queued has no date_sent, so `DateSent>=` would hide it:
  https://www.twilio.com/docs/messaging/api/message-resource#read-multiple-message-resources), page
  by page back to the job's submit time less a clock-skew margin, and look for ours: same To and
  Body, the same sender, created at or after that time, not a SID another job already owns.
  Twilio's Message resource does not echo our StatusCallback, so the job id cannot be matched; the
  status callback, which does carry it (?job=...), may reconcile the job first through apply_status.
  - One such message -> mark_sent with that SID.
  - None, and the list read to its end -> proof that Twilio has no such message: after a grace
    period (the list can lag the create) the job is requeued for a real send.
  - None, and the list stopped at a page reaching back past the submit time -> proof for every
    message Twilio has sent, but a message still in Twilio's queue has no date_sent, and where such
    messages sort in a list ordered by DateSent is not documented. So this is proof only once the
    message could no longer be queued (Twilio drops a queued message after its ValidityPeriod, at
    most 36,000 s); until then the job is looked at again now and then.
  - Cannot decide: two or more messages could each be ours, the list is longer than the safety
    bound (MLC_RECONCILE_MAX_LISTED) before it reaches the submit time, or Twilio refuses the
    listing -> 'needs_review': a person resolves it (`ml-connector messages resolve`). Twilio has
    no idempotency key for creates, so absence is never assumed.
- Voice: the client has no Calls list, so only the call's status callbacks (we ask for
  'initiated', sent as soon as Twilio places the call) can tell. With no callback after a longer
  grace period the job is marked failed with code 'outcome-unknown' and logged loudly for a
  person to check: a second phone call is worse than a missing one, so it is never re-placed blind.
- A job already carrying a SID is looked up directly (fetch_message / fetch_call).
- Lost status callbacks: Twilio retries a callback once
  (https://www.twilio.com/docs/usage/webhooks/webhooks-connection-overrides), so callbacks sent while
  the service was down are gone. A send still queued/sending/sent `status_poll_after_seconds` after
  its last update (and younger than `status_poll_max_age_hours`) is fetched by SID and its status
  applied like a callback's, so every send reaches a final status in the audit.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum

from server.runtime.logs import get_logger
from server.services import Services
from server.settings import Settings
from server.store import outbox
from server.store.db import session_scope
from server.store.states import Channel, EventSource, MessageStatus
from server.store.tables import OutboxMessage
from server.twilio.errors import DeliveryError, InvalidRequestError, NotFoundError
from server.twilio.models import MessageRecord

log = get_logger("ml_connector.reconcile")

OUTCOME_UNKNOWN_CODE = "outcome-unknown"


@dataclass(frozen=True)
class ReconcilePolicy:
    grace_seconds: float = 120.0  # how long Twilio's Messages list may lag a create
    voice_grace_seconds: float = 900.0  # a placed call's 'initiated' callback comes long before this
    clock_skew_seconds: float = 300.0  # Twilio's date_created versus our clock
    interval_seconds: float = 10.0  # at most one pass per interval (clock time)
    batch_size: int = 20
    lease_seconds: float = 300.0  # MLC_RECONCILE_LEASE_SECONDS
    max_listed: int = 20_000  # MLC_RECONCILE_MAX_LISTED: messages read for one job, at most
    page_size: int = 1000  # Twilio's largest PageSize: fewest requests for a long list
    # A queued message is dropped after its ValidityPeriod (the dispatcher sets none: Twilio's
    # default and maximum, 36,000 s, https://www.twilio.com/docs/messaging/api/message-resource).
    queue_seconds: float = 36_000.0
    recheck_seconds: float = 900.0  # how often a job that cannot be decided yet is looked at again
    status_poll_after_seconds: float = 3600.0
    status_poll_max_age_seconds: float = 72 * 3600.0

    @classmethod
    def from_settings(cls, settings: Settings) -> ReconcilePolicy:
        return cls(
            grace_seconds=settings.reconcile_grace_seconds,
            interval_seconds=settings.reconcile_interval_seconds,
            lease_seconds=settings.reconcile_lease_seconds,
            max_listed=settings.reconcile_max_listed,
            status_poll_after_seconds=settings.status_poll_after_seconds,
            status_poll_max_age_seconds=settings.status_poll_max_age_hours * 3600.0,
        )


class Outcome(StrEnum):
    FOUND = "found"
    REQUEUED = "requeued"
    WAITING = "waiting"
    FAILED = "failed"
    NEEDS_REVIEW = "needs_review"


# Why a job was left for a person (its error_code in the outbox and the audit).
AMBIGUOUS = "ambiguous"
LIST_TOO_LONG = "list-too-long"
LIST_FAILED = "list-failed"


class Reach(StrEnum):
    """How far back a listing got, which is what its not finding a message proves."""

    END = "end"  # the whole list was read: nothing more exists
    PAST_SUBMIT = "past-submit"  # a page reached back before the submit: every sent message was seen
    BOUND = "bound"  # the safety bound came first: proves nothing


@dataclass(frozen=True)
class Search:
    """What a listing found for one job: the messages that could be it, and how far it read."""

    candidates: tuple[MessageRecord, ...]
    reach: Reach
    listed: int


def is_ours(record: MessageRecord, message: OutboxMessage, *, since: datetime, sender: str | None) -> bool:
    """Could `record` be the message this job created at or after `since`?"""
    if record.to != message.recipient or (record.body or "") != message.body:
        return False
    if record.direction is not None and not record.direction.startswith("outbound"):
        return False
    if sender and record.from_ and record.from_ != sender:
        return False
    return record.date_created is None or record.date_created >= since


class Reconciler:
    """Resolves 'unknown' jobs. Run from the dispatcher's run_once (or on its own)."""

    def __init__(self, services: Services, policy: ReconcilePolicy | None = None) -> None:
        self.services = services
        self.policy = policy or ReconcilePolicy.from_settings(services.settings)
        self.worker_id = f"{services.instance_id}:reconcile"
        self._next_pass: datetime | None = None

    def due(self, now: datetime) -> bool:
        return self._next_pass is None or now >= self._next_pass

    async def run_once(self, *, force: bool = False) -> int:
        """One pass over claimable 'unknown' jobs; returns how many were resolved (found/requeued/failed)."""
        now = self.services.clock.now()
        if not force and not self.due(now):
            return 0
        self._next_pass = now + timedelta(seconds=self.policy.interval_seconds)
        batch = await asyncio.to_thread(self._claim, now)
        resolved = 0
        for message in batch:
            # The batch shares one lease, and each look-up may take one Twilio request's timeouts:
            # each job gets a whole lease when its turn comes, or is left to whoever holds it now.
            if not await asyncio.to_thread(self._renew, message.job_id):
                continue
            try:
                outcome = await self.reconcile(message)
            except DeliveryError as exc:
                # Twilio unreachable or refusing: leave the rest for the next pass.
                log.warning("reconcile: cannot ask Twilio now", job=message.job_id, error=str(exc))
                await asyncio.to_thread(self._release, [m.job_id for m in batch])
                break
            if outcome is not Outcome.WAITING:
                resolved += 1
        return resolved + await self.poll_statuses(now)

    # -- lost callbacks ----------------------------------------------------------------------------

    def _stale_in_flight(self, now: datetime) -> list[OutboxMessage]:
        quiet_since = now - timedelta(seconds=self.policy.status_poll_after_seconds)
        oldest = now - timedelta(seconds=self.policy.status_poll_max_age_seconds)
        in_flight = [s.value for s in (MessageStatus.QUEUED, MessageStatus.SENDING, MessageStatus.SENT)]
        with session_scope(self.services.db) as session:
            rows = outbox.stale_in_flight(
                session, in_flight, quiet_since=quiet_since, oldest=oldest, limit=self.policy.batch_size
            )
            session.expunge_all()
            return list(rows)

    async def poll_statuses(self, now: datetime) -> int:
        """Look up sends whose callbacks stopped coming; returns how many moved to a later status."""
        moved = 0
        for message in await asyncio.to_thread(self._stale_in_flight, now):
            assert message.twilio_sid is not None
            try:
                if message.channel == Channel.VOICE:
                    status = (await self.services.twilio.fetch_call(message.twilio_sid)).status
                else:
                    status = (await self.services.twilio.fetch_message(message.twilio_sid)).status
            except DeliveryError as exc:
                log.warning("reconcile: status lookup failed", job=message.job_id, error=str(exc))
                break
            moved += await asyncio.to_thread(self._apply_polled, message, status)
        return moved

    def _apply_polled(self, message: OutboxMessage, status: str) -> bool:
        now = self.services.clock.now()
        assert message.twilio_sid is not None
        with session_scope(self.services.db) as session:
            advanced = outbox.apply_status(
                session, twilio_status=status, now=now, sid=message.twilio_sid, source=EventSource.RECONCILE
            )
            if not advanced:
                # Nothing new at Twilio (e.g. 'sent' with no delivery receipt): look again later, not
                # on every pass.
                outbox.touch(session, message.job_id, now=now)
        if advanced:
            log.info("reconcile: status caught up from Twilio", job=message.job_id, status=status)
        return advanced

    def _claim(self, now: datetime) -> list[OutboxMessage]:
        with session_scope(self.services.db) as session:
            return outbox.claim_unknown(
                session,
                self.worker_id,
                now=now,
                limit=self.policy.batch_size,
                lease_seconds=self.policy.lease_seconds,
            )

    def _renew(self, job_id: str) -> bool:
        now = self.services.clock.now()
        with session_scope(self.services.db) as session:
            renewed = outbox.renew_claims(
                session,
                [job_id],
                self.worker_id,
                now=now,
                lease_seconds=self.policy.lease_seconds,
                statuses=[MessageStatus.UNKNOWN],
            )
        return job_id in renewed

    def _release(self, job_ids: Sequence[str]) -> None:
        now = self.services.clock.now()
        with session_scope(self.services.db) as session:
            for job_id in job_ids:
                outbox.release_claim(session, job_id, self.worker_id, now=now)

    async def reconcile(self, message: OutboxMessage) -> Outcome:
        twilio = self.services.twilio
        if message.twilio_sid:
            if message.channel == Channel.VOICE:
                call = await twilio.fetch_call(message.twilio_sid)
                return await asyncio.to_thread(self._found, message, call.sid, call.status)
            record = await twilio.fetch_message(message.twilio_sid)
            return await asyncio.to_thread(self._found, message, record.sid, record.status)

        def read_since() -> datetime:
            with session_scope(self.services.db) as session:
                return outbox.submitted_at(session, message)

        since = await asyncio.to_thread(read_since)
        now = self.services.clock.now()
        waited = (now - since).total_seconds()
        if message.channel == Channel.VOICE:
            if waited < self.policy.voice_grace_seconds:
                await asyncio.to_thread(self._release, [message.job_id])
                return Outcome.WAITING
            log.error(
                "reconcile: call outcome unknown and no status callback came; not re-placing it",
                job=message.job_id,
                waited_seconds=int(waited),
            )
            await asyncio.to_thread(self._fail_unknown, message, now)
            return Outcome.FAILED

        try:
            search = await self.search(message, since)
        except (InvalidRequestError, NotFoundError) as exc:
            # Twilio refuses the listing itself: asking again the same way will not help.
            return await asyncio.to_thread(
                self._review, message, now, LIST_FAILED, f"Twilio refused the Messages list: {exc}"
            )
        if len(search.candidates) == 1:
            (record,) = search.candidates
            return await asyncio.to_thread(self._found, message, record.sid, record.status)
        if len(search.candidates) > 1:
            sids = ", ".join(c.sid for c in search.candidates[:5])
            return await asyncio.to_thread(
                self._review,
                message,
                now,
                AMBIGUOUS,
                f"{len(search.candidates)} messages at Twilio could each be this one ({sids})",
            )
        if search.reach is Reach.BOUND:
            return await asyncio.to_thread(
                self._review,
                message,
                now,
                LIST_TOO_LONG,
                f"not among the recipient's {search.listed} newest messages, which do not reach back "
                f"to the submit at {since.isoformat()}: found neither sent nor absent",
            )
        if waited < self.policy.grace_seconds:
            await asyncio.to_thread(self._release, [message.job_id])
            return Outcome.WAITING
        if search.reach is Reach.PAST_SUBMIT and waited < self.policy.queue_seconds:
            until = min(
                since + timedelta(seconds=self.policy.queue_seconds),
                now + timedelta(seconds=self.policy.recheck_seconds),
            )
            await asyncio.to_thread(self._defer, message, until)
            return Outcome.WAITING
        await asyncio.to_thread(self._requeue, message, now, waited, search)
        return Outcome.REQUEUED

    async def search(self, message: OutboxMessage, since: datetime) -> Search:
        """The messages at Twilio that could be this job's (no other job owns them), read back to
        `since` less the clock-skew margin by date_created, within the safety bound."""
        if not message.recipient:
            return Search((), Reach.END, 0)
        cutoff = since - timedelta(seconds=self.policy.clock_skew_seconds)
        settings = self.services.settings.twilio
        sender = settings.from_number or None
        candidates: list[MessageRecord] = []
        listed = 0
        reach = Reach.BOUND
        pages = self.services.twilio.list_message_pages(to=message.recipient, page_size=self.policy.page_size)
        async for page in pages:
            past_submit = False
            for record in page.messages:
                listed += 1
                if is_ours(record, message, since=cutoff, sender=sender):
                    candidates.append(record)
                # Sent before the cutoff, and so created before it: whether the list is ordered by
                # date_sent or by date_created, everything after it was created before the cutoff.
                sent = record.date_sent
                if sent is not None and sent < cutoff and (record.date_created or sent) < cutoff:
                    past_submit = True
            if page.last:
                reach = Reach.END
                break
            if past_submit:
                reach = Reach.PAST_SUBMIT
                break
            if listed >= self.policy.max_listed:
                log.warning(
                    "reconcile: the recipient's list is longer than the safety bound",
                    job=message.job_id,
                    listed=listed,
                )
                break
        await pages.aclose()
        if not candidates:
            return Search((), reach, listed)

        def owned() -> set[str]:
            with session_scope(self.services.db) as session:
                return outbox.sids_owned_elsewhere(session, [c.sid for c in candidates], message.job_id)

        taken = await asyncio.to_thread(owned)
        return Search(tuple(c for c in candidates if c.sid not in taken), reach, listed)

    def _found(self, message: OutboxMessage, sid: str, status: str) -> Outcome:
        now = self.services.clock.now()
        with session_scope(self.services.db) as session:
            outbox.mark_sent(
                session, message.job_id, sid=sid, twilio_status=status, now=now, source=EventSource.RECONCILE
            )
            outbox.release_claim(session, message.job_id, self.worker_id, now=now)
        log.info("reconcile: found the message at Twilio", job=message.job_id, sid=sid, status=status)
        return Outcome.FOUND

    def _review(self, message: OutboxMessage, now: datetime, code: str, detail: str) -> Outcome:
        with session_scope(self.services.db) as session:
            moved = outbox.mark_needs_review(
                session, message.job_id, self.worker_id, code=code, detail=detail, now=now
            )
        if moved:
            log.error(
                "reconcile: cannot tell whether Twilio has it; left for a person",
                job=message.job_id,
                code=code,
            )
        return Outcome.NEEDS_REVIEW

    def _defer(self, message: OutboxMessage, until: datetime) -> None:
        now = self.services.clock.now()
        with session_scope(self.services.db) as session:
            outbox.defer_unknown(session, message.job_id, self.worker_id, until=until, now=now)
        log.info("reconcile: not found yet; Twilio may still hold it queued", job=message.job_id, until=until)

    def _requeue(self, message: OutboxMessage, now: datetime, waited: float, search: Search) -> None:
        limit = self.services.settings.max_send_attempts
        with session_scope(self.services.db) as session:
            if message.attempts >= limit:
                outbox.mark_failed(
                    session,
                    message.job_id,
                    code=OUTCOME_UNKNOWN_CODE,
                    message=f"not found at Twilio after {message.attempts} attempt(s); giving up",
                    now=now,
                    source=EventSource.RECONCILE,
                )
                log.error("reconcile: gave up on a job never found at Twilio", job=message.job_id)
                return
            how = "the whole list" if search.reach is Reach.END else "the list back past the submit"
            if not outbox.requeue_unknown(
                session,
                message.job_id,
                self.worker_id,
                now=now,
                detail=f"not at Twilio {int(waited)}s after submit ({how}, {search.listed} read): "
                "sending again",
            ):
                return
        log.warning("reconcile: message not at Twilio, requeued for a real send", job=message.job_id)

    def _fail_unknown(self, message: OutboxMessage, now: datetime) -> None:
        with session_scope(self.services.db) as session:
            outbox.mark_failed(
                session,
                message.job_id,
                code=OUTCOME_UNKNOWN_CODE,
                message="call outcome unknown: no status callback; check Twilio before calling again",
                now=now,
                source=EventSource.RECONCILE,
            )
