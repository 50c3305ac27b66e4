"""The dispatcher: the only code that sends. Claims due outbox jobs and hands them to Twilio.

One pass (run_once):
1. reconcile 'unknown' jobs first (server/reconcile.py), so nothing stays unknown;
2. claim due jobs (store: FOR UPDATE SKIP LOCKED on PostgreSQL, BEGIN IMMEDIATE on SQLite);
3. decide per job, in one transaction: recipient opted out -> 'opted_out' (recorded, not sent);
   inside the rule's quiet hours -> 'held' until the window ends; else send;
4. per send: wait for the messages-per-second budget (a burst is smoothed, not refused), commit
   'submitting' BEFORE the HTTP call, call Twilio with StatusCallback = public URL + ?job=<job id>,
   record the SID. Errors, by the client's classification (server/twilio/errors.py):
   - RetryableError / RateLimitedError (429 "was not processed", reference 20429): requeue with
     exponential backoff and full jitter (Retry-After as a floor), failed after max_send_attempts;
     a 429 also pauses this process's budget so the rest of the batch does not hammer Twilio;
   - OptedOutError (21610): 'opted_out' and into the opt-out registry, never retried;
   - PermanentRecipientError (21211, 21614, ...): 'failed' with the code, never retried;
   - ConfigurationError (20003, 21606, ...): 'failed' with the code, an error log, and the
     dispatcher stops sending for a while (every other job would fail the same way);
   - InvalidRequestError and other delivery errors: 'failed' with the code (a bug on our side);
   - OutcomeUnknownError, or anything unexpected after 'submitting': 'unknown', reconciled later,
     never resent blind.

Quiet hours come from the rule as loaded now (services.ruleset.get(rule_id)), so a window edited in
the rule file applies to jobs already queued; a job whose rule is gone uses the window it was
planned with (stored on the row).
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from enum import StrEnum
from urllib.parse import quote

from server.logs import get_logger
from server.metrics import observe_send
from server.ratelimit import SendBudget, backoff_delay
from server.recheck import ReleaseCheck
from server.reconcile import ReconcilePolicy, Reconciler
from server.sendwindow import hold_until_for_row
from server.services import Services
from server.settings import Settings
from server.store import optouts, outbox
from server.store.db import read_scope, session_scope
from server.store.messages import count_by_status
from server.store.states import Channel, MessageStatus
from server.store.tables import OutboxMessage
from server.twilio.errors import (
    ConfigurationError,
    DeliveryError,
    OptedOutError,
    OutcomeUnknownError,
    PermanentRecipientError,
    RateLimitedError,
    RetryableError,
)
from server.twilio.twiml import say_twiml
from server.webhooks_twilio import STATUS_PATH, sender_key

# What `drain` waits for: jobs still to be sent or whose send is under way.
DRAIN_PENDING = (MessageStatus.PLANNED, MessageStatus.HELD, MessageStatus.SUBMITTING)

log = get_logger("ml_connector.dispatcher")

# Ask for every call progress event: 'initiated' arrives as soon as Twilio places the call, which
# is what lets an unknown-outcome call be reconciled (reconcile.py).
CALL_EVENTS: tuple[str, ...] = ("initiated", "ringing", "answered", "completed")
NO_SENDER = "no-sender"
NO_VOICE_SENDER = "no-voice-sender"
BAD_TWIML = "twiml-too-long"


@dataclass(frozen=True)
class DispatchPolicy:
    batch_size: int = 50
    claim_seconds: float = 300.0  # a claimed job not yet submitted; another worker takes it after
    # 'submitting' must outlast the client's whole call including its in-line retries; after it
    # the job is presumed interrupted and goes to reconciliation.
    submit_seconds: float = 900.0
    backoff_base_seconds: float = 5.0
    backoff_cap_seconds: float = 1800.0
    rate_limit_pause_seconds: float = 1.0  # budget pause after a 429 without Retry-After
    configuration_pause_seconds: float = 60.0  # stop sending after a configuration error
    max_budget_burst: float = 1.0

    @classmethod
    def from_settings(cls, settings: Settings) -> DispatchPolicy:
        # The leases bound how long a restarted service waits for the claims of the one that died.
        return cls(claim_seconds=settings.claim_seconds, submit_seconds=settings.submit_lease_seconds)


class Decision(StrEnum):
    SEND = "send"
    OPTED_OUT = "opted_out"
    HELD = "held"
    LOST = "lost"  # the claim moved on (another worker took it after our lease)


@dataclass
class PassReport:
    """What one run_once did (for logs and tests)."""

    reconciled: int = 0
    sent: int = 0
    held: int = 0
    opted_out: int = 0
    requeued: int = 0
    failed: int = 0
    unknown: int = 0
    not_sent_at_release: int = 0  # held reminders skipped or held again by the release re-check
    errors: list[str] = field(default_factory=list)

    @property
    def handled(self) -> int:
        return (
            self.reconciled
            + self.sent
            + self.held
            + self.opted_out
            + self.requeued
            + self.failed
            + self.unknown
            + self.not_sent_at_release
        )


def status_callback_url(public_base_url: str, job_id: str) -> str:
    """Where Twilio reports this job's status; the job id rides in the query (Twilio's resource
    does not echo it back, but the callback URL is called exactly as given)."""
    return f"{public_base_url.rstrip('/')}{STATUS_PATH}?job={quote(job_id, safe='')}"


class Dispatcher:
    def __init__(
        self,
        services: Services,
        *,
        policy: DispatchPolicy | None = None,
        reconcile_policy: ReconcilePolicy | None = None,
        budget: SendBudget | None = None,
        rng: random.Random | None = None,
    ) -> None:
        self.services = services
        self.policy = policy or DispatchPolicy.from_settings(services.settings)
        self.worker_id = f"{services.instance_id}:dispatch"
        self.budget = budget or SendBudget(
            services.settings.messages_per_second, burst=self.policy.max_budget_burst
        )
        self.reconciler = Reconciler(services, reconcile_policy)
        self.release_check = ReleaseCheck(services)
        self._rng = rng or random.SystemRandom()
        self._halted_until: datetime | None = None
        self.last_pass = PassReport()

    # ------------------------------------------------------------------ the pass

    async def drain(self, *, within: float, idle: float = 0.01) -> tuple[int, int]:
        """Pass after pass until no job is left to send (planned, held, submitting) anywhere: for
        batch runs (several processes sharing one queue) and tests. Returns (sent, passes);
        TimeoutError when jobs are still pending after `within` seconds."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + within
        sent = passes = 0
        while loop.time() < deadline:
            passes += 1
            if await self.run_once() > 0:
                sent += self.last_pass.sent
                continue
            with read_scope(self.services.db) as session:
                counts = count_by_status(session)
            if not any(counts.get(status, 0) for status in DRAIN_PENDING):
                return sent, passes
            await asyncio.sleep(idle)  # another process may hold the rest of the claims
        raise TimeoutError(f"jobs still pending after {within:.0f} s")

    async def run_once(self) -> int:
        report = PassReport()
        self.last_pass = report
        report.reconciled = await self.reconciler.run_once()
        now = self.services.clock.now()
        if self._halted_until is not None and now < self._halted_until:
            return report.handled
        self._halted_until = None
        batch = await asyncio.to_thread(self._claim, now)
        if not batch:
            return report.handled
        # A reminder held for its send window may have been paid meanwhile: re-read it from BC.
        checked = await self.release_check.check(batch, self.worker_id)
        report.not_sent_at_release = len(batch) - len(checked)
        batch = checked
        decisions = await asyncio.to_thread(self._decide, batch, now, report)
        to_send = [m for m in batch if decisions.get(m.job_id) is Decision.SEND]
        await self._send_all(to_send, report)
        if report.handled:
            log.info("dispatch pass", **{k: v for k, v in vars(report).items() if v and k != "errors"})
        return report.handled

    def _claim(self, now: datetime) -> list[OutboxMessage]:
        with session_scope(self.services.db) as session:
            return outbox.claim_due(
                session,
                self.worker_id,
                now=now,
                limit=self.policy.batch_size,
                lease_seconds=self.policy.claim_seconds,
            )

    def send_window_until(self, message: OutboxMessage, now: datetime) -> datetime | None:
        """When this job may be sent, if it is outside its rule's send window now (quiet hours,
        days, holidays), evaluated in the recipient's local time where the rule says so."""
        return hold_until_for_row(message, self.services.ruleset, now)

    def _decide(
        self, batch: Sequence[OutboxMessage], now: datetime, report: PassReport
    ) -> dict[str, Decision]:
        decisions: dict[str, Decision] = {}
        sender = sender_key(self.services.settings)
        with session_scope(self.services.db) as session:
            blocked = optouts.opted_out_numbers(
                session, [m.recipient for m in batch if m.recipient], sender=sender or None
            )
            for m in batch:
                if m.recipient in blocked:
                    moved = outbox.mark_opted_out(
                        session, m.job_id, now=now, reason="recipient opted out (STOP); not sent"
                    )
                    decisions[m.job_id] = Decision.OPTED_OUT if moved else Decision.LOST
                    report.opted_out += moved
                    continue
                until = self.send_window_until(m, now)
                if until is not None:
                    moved = outbox.hold(
                        session,
                        m.job_id,
                        until=until,
                        now=now,
                        reason=f"outside the send window until {until.isoformat()}",
                    )
                    decisions[m.job_id] = Decision.HELD if moved else Decision.LOST
                    report.held += moved
                    continue
                decisions[m.job_id] = Decision.SEND
        return decisions

    async def _send_all(self, batch: Sequence[OutboxMessage], report: PassReport) -> None:
        remaining = list(batch)
        try:
            while remaining:
                message = remaining[0]
                if self._halted_until is not None:
                    break
                await self.send(message, report)
                remaining.pop(0)
        finally:
            # Halted, or cancelled (shutdown): give the unsent claims back at once.
            if remaining:
                await asyncio.shield(asyncio.to_thread(self._release, [m.job_id for m in remaining]))

    def _release(self, job_ids: Sequence[str]) -> None:
        now = self.services.clock.now()
        with session_scope(self.services.db) as session:
            for job_id in job_ids:
                outbox.release_claim(session, job_id, self.worker_id, now=now)

    # ------------------------------------------------------------------ one send

    async def send(self, message: OutboxMessage, report: PassReport) -> None:
        settings = self.services.settings
        twiml: str | None = None
        if not (settings.twilio.from_number or settings.twilio.messaging_service_sid):
            # Checked before 'submitting': a request we cannot build must not become 'unknown'.
            log.error(
                "TWILIO CONFIGURATION ERROR: set MLC_TWILIO__FROM_NUMBER or MLC_TWILIO__MESSAGING_SERVICE_SID",
                job=message.job_id,
            )
            await self._fail(
                message, NO_SENDER, "no sender configured (From number or Messaging Service)", report
            )
            self._halted_until = self.services.clock.now() + timedelta(
                seconds=self.policy.configuration_pause_seconds
            )
            return
        if message.channel == Channel.VOICE:
            if not settings.twilio.from_number:
                log.error(
                    "voice job failed: MLC_TWILIO__FROM_NUMBER is required for calls", job=message.job_id
                )
                await self._fail(
                    message, NO_VOICE_SENDER, "no From number configured for voice calls", report
                )
                return
            try:
                twiml = say_twiml(message.body)
            except ValueError as exc:
                await self._fail(message, BAD_TWIML, str(exc), report)
                return
        await self.budget.acquire()
        submitted = await asyncio.to_thread(self._mark_submitting, message.job_id)
        if not submitted:
            log.warning("claim lost before sending; another worker owns the job", job=message.job_id)
            return
        callback = status_callback_url(settings.public_base_url, message.job_id)
        twilio = self.services.twilio
        recipient = message.recipient or ""
        try:
            if twiml is not None:
                call = await twilio.place_call(
                    recipient,
                    from_=settings.twilio.from_number,
                    twiml=twiml,
                    status_callback=callback,
                    status_callback_events=CALL_EVENTS,
                )
                sid, status = call.sid, call.status
            else:
                sms = await twilio.send_sms(
                    recipient,
                    message.body,
                    from_=settings.twilio.from_number or None,
                    messaging_service_sid=None
                    if settings.twilio.from_number
                    else (settings.twilio.messaging_service_sid or None),
                    status_callback=callback,
                )
                sid, status = sms.sid, sms.status
        except asyncio.CancelledError:
            await asyncio.shield(asyncio.to_thread(self._unknown, message.job_id, "cancelled mid-call"))
            raise
        except DeliveryError as exc:
            await self._on_error(message, exc, report)
            return
        except Exception as exc:  # after "submitting", any surprise means "maybe sent"
            log.exception("unexpected error while sending; outcome unknown", job=message.job_id)
            await asyncio.to_thread(self._unknown, message.job_id, f"{type(exc).__name__}: {exc}")
            report.unknown += 1
            return
        await asyncio.to_thread(self._sent, message.job_id, sid, status)
        observe_send(self.services, message.channel, message.created_at)
        report.sent += 1

    def _mark_submitting(self, job_id: str) -> bool:
        now = self.services.clock.now()
        with session_scope(self.services.db) as session:
            return outbox.mark_submitting(
                session, job_id, self.worker_id, now=now, lease_seconds=self.policy.submit_seconds
            )

    def _sent(self, job_id: str, sid: str, status: str) -> None:
        with session_scope(self.services.db) as session:
            outbox.mark_sent(session, job_id, sid=sid, twilio_status=status, now=self.services.clock.now())

    def _unknown(self, job_id: str, detail: str) -> None:
        with session_scope(self.services.db) as session:
            outbox.mark_unknown(session, job_id, now=self.services.clock.now(), detail=detail)

    async def _fail(
        self, message: OutboxMessage, code: str | int | None, text: str, report: PassReport
    ) -> None:
        def fail() -> bool:
            with session_scope(self.services.db) as session:
                return outbox.mark_failed(
                    session, message.job_id, code=code, message=text, now=self.services.clock.now()
                )

        report.failed += await asyncio.to_thread(fail)

    async def _on_error(self, message: OutboxMessage, exc: DeliveryError, report: PassReport) -> None:
        code = exc.code if exc.code is not None else (exc.status or None)
        report.errors.append(f"{message.job_id}: {exc}")
        if isinstance(exc, OutcomeUnknownError):
            log.warning(
                "send outcome unknown; will reconcile, not resend", job=message.job_id, error=str(exc)
            )
            await asyncio.to_thread(self._unknown, message.job_id, str(exc))
            report.unknown += 1
        elif isinstance(exc, RetryableError):
            if isinstance(exc, RateLimitedError):
                self.budget.pause(exc.retry_after or self.policy.rate_limit_pause_seconds)
            await self._retry_later(message, exc, code, report)
        elif isinstance(exc, OptedOutError):
            await asyncio.to_thread(self._opted_out_by_twilio, message, exc)
            report.opted_out += 1
        elif isinstance(exc, PermanentRecipientError):
            log.warning("recipient cannot receive this message", job=message.job_id, code=code)
            await self._fail(message, code, exc.message, report)
        elif isinstance(exc, ConfigurationError):
            pause = self.policy.configuration_pause_seconds
            log.error(
                "TWILIO CONFIGURATION ERROR: sending stopped; fix the credentials/sender",
                job=message.job_id,
                code=code,
                error=str(exc),
                pause_seconds=pause,
            )
            await self._fail(message, code, exc.message, report)
            self._halted_until = self.services.clock.now() + timedelta(seconds=pause)
        else:
            log.error("Twilio refused the request (a bug on our side?)", job=message.job_id, error=str(exc))
            await self._fail(message, code, exc.message, report)

    async def _retry_later(
        self, message: OutboxMessage, exc: RetryableError, code: str | int | None, report: PassReport
    ) -> None:
        attempts = message.attempts + 1  # mark_submitting counted this try in the row
        limit = self.services.settings.max_send_attempts
        if attempts >= limit:
            log.error(
                "gave up after repeated retryable errors", job=message.job_id, attempts=attempts, code=code
            )
            await self._fail(message, code, f"gave up after {attempts} attempts: {exc.message}", report)
            return
        delay = backoff_delay(
            attempts,
            base=self.policy.backoff_base_seconds,
            cap=self.policy.backoff_cap_seconds,
            rng=self._rng,
            retry_after=exc.retry_after,
        )

        def requeue() -> bool:
            now = self.services.clock.now()
            with session_scope(self.services.db) as session:
                return outbox.requeue(
                    session,
                    message.job_id,
                    next_attempt_at=now + timedelta(seconds=delay),
                    now=now,
                    error_code=code,
                    detail=f"{exc.message}; retry in {delay:.1f}s (attempt {attempts} of {limit})",
                )

        report.requeued += await asyncio.to_thread(requeue)

    def _opted_out_by_twilio(self, message: OutboxMessage, exc: DeliveryError) -> None:
        now = self.services.clock.now()
        with session_scope(self.services.db) as session:
            outbox.mark_opted_out(
                session, message.job_id, now=now, code=exc.code or 21610, reason=exc.message
            )
            if message.recipient:
                optouts.set_opt_out(
                    session,
                    message.recipient,
                    source="21610",
                    now=now,
                    sender=sender_key(self.services.settings) or optouts.ALL_SENDERS,
                )
