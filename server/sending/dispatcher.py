"""The dispatcher: the only code that sends. Claims due outbox jobs and hands them to Twilio.

One pass (run_once):
1. reconcile 'unknown' jobs first (server/reconcile.py), so nothing stays unknown;
2. claim due jobs (store: FOR UPDATE SKIP LOCKED on PostgreSQL, BEGIN IMMEDIATE on SQLite);
3. decide per job, in one transaction: recipient opted out -> 'opted_out' (recorded, not sent);
   inside the rule's quiet hours -> 'held' until the window ends; else send;
4. per send: wait for the messages-per-second budget (a burst is smoothed, not refused), commit
   'submitting' BEFORE the HTTP call, call Twilio with StatusCallback = public URL + ?job=<job id>,
   record the SID. Up to `concurrency` create calls are in flight at once (MLC_SEND_CONCURRENCY), so
   the round trips to the database and to Twilio overlap instead of capping the rate; the budget
   alone paces them. Once fewer than half a batch wait their turn, the next batch is claimed and
   decided (2-3) while these are sent, so a burst flows at the budget with no pause at the end of
   each batch; the pass ends when a claim finds nothing due and the last send is answered. At
   start and after a halt, the first send goes alone (a configuration error then
   stops the pass before others are in flight). Sends begin in claim order, but one may be
   answered before an earlier one: nothing depends on the order texts reach a phone (Twilio does
   not promise it; a ladder plans only the highest stage reached, a grouped reminder's members are
   skipped rows), and one recipient may be sent many texts at once (the credit control desk of
   credit-limit-crossed gets every customer's alert), so sends are not queued per recipient.
   The 'submitting' and SID writes of sends that are ready together share one transaction (a
   group commit: alone, a write goes at once). Errors, by the client's classification
   (server/twilio/errors.py):
   - RetryableError / RateLimitedError (429 "was not processed", https://www.twilio.com/docs/api/errors/20429): requeue with
     exponential backoff and full jitter (Retry-After as a floor), failed after max_send_attempts;
     a 429 also pauses this process's budget, for the sends waiting for their turn too, so the
     rest of the batch does not hammer Twilio;
   - OptedOutError (21610): 'opted_out' and into the opt-out registry, never retried;
   - PermanentRecipientError (21211, 21614, ...): 'failed' with the code, never retried;
   - ConfigurationError (20003, 21606, ...): 'failed' with the code, an error log, and the
     dispatcher stops sending for a while (every other job would fail the same way);
   - InvalidRequestError and other delivery errors: 'failed' with the code (a bug on our side);
   - OutcomeUnknownError, or anything unexpected after 'submitting': 'unknown', reconciled later,
     never resent blind.

A job is in flight at most once per process: the dispatcher keeps the ids of the jobs it holds
(claimed and not yet finished), a claim never takes one of them again (even once its claim has
run out), and a job is admitted only if it is not held already. While a claimed job waits for its
turn, its claim is renewed every third of the claim lease, so a slow Twilio answer holding every
slot does not let the claim run out under it. The 'submitting' write is the last word: it
succeeds only for the claim holder with an unexpired claim (checked in the SQL), once per job, so
a job whose claim did run out (or was taken over) is never sent by this process.

Quiet hours come from the rule as loaded now (services.ruleset.get(rule_id)), so a window edited in
the rule file applies to jobs already queued; a job whose rule is gone uses the window it was
planned with (stored on the row).
"""

from __future__ import annotations

import asyncio
import random
from collections import deque
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from enum import StrEnum
from urllib.parse import quote

from server.metrics import observe_send
from server.runtime.clock import monotonic
from server.runtime.groupcommit import GroupCommit
from server.runtime.logs import get_logger
from server.runtime.retry import backoff_delay
from server.sending.budget import SendBudget
from server.sending.reconcile import ReconcilePolicy, Reconciler
from server.sending.release import ReleaseCheck
from server.sending.sendwindow import hold_until_for_row
from server.sending.status import STATUS_PATH, sender_key
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
    NotSentError,
    OptedOutError,
    OutcomeUnknownError,
    PermanentRecipientError,
    RateLimitedError,
    RetryableError,
)
from server.twilio.twiml import say_twiml

# What `drain` waits for: jobs still to be sent, whose send is under way, or whose send's outcome
# is unknown (a timeout after the request went out): reconciliation finds those at Twilio or puts
# them back to be sent, so the queue is not drained before it has.
DRAIN_PENDING = (
    MessageStatus.PLANNED,
    MessageStatus.HELD,
    MessageStatus.SUBMITTING,
    MessageStatus.UNKNOWN,
)

log = get_logger("ml_connector.dispatcher")

# Ask for every call progress event: 'initiated' arrives as soon as Twilio places the call, which
# is what lets an unknown-outcome call be reconciled (reconcile.py).
CALL_EVENTS: tuple[str, ...] = ("initiated", "ringing", "answered", "completed")
NO_SENDER = "no-sender"
NO_VOICE_SENDER = "no-voice-sender"
BAD_TWIML = "twiml-too-long"
# Sends under way (turn in the budget, then a slot for the commit and the call) per slot: the turns
# are taken ahead, so a late wake-up does not cost a turn.
UNDER_WAY_PER_SLOT = 4
# A pass that found nothing due while sends are still in flight looks again after this long.
CLAIM_AGAIN_SECONDS = 0.05


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
    concurrency: int = 32  # create calls in flight at once, all within the send budget

    @classmethod
    def from_settings(cls, settings: Settings) -> DispatchPolicy:
        # The leases bound how long a restarted service waits for the claims of the one that died.
        return cls(
            claim_seconds=settings.claim_seconds,
            submit_seconds=settings.submit_lease_seconds,
            concurrency=settings.send_concurrency,
        )


@dataclass(eq=False)
class _Submit:
    """One send's 'submitting' write in the group commit. Compared by identity: the commit answers
    each write on its own, so two writes for one job id can never both be told to send."""

    job_id: str


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
    not_sent_at_release: int = 0  # held reminders skipped or held again by the release check
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
        # Until one send has been answered (at start, after a halt), a pass sends its first job
        # alone: a configuration error then stops the pass before others are in flight.
        self._probe = True
        # One writer for both of a send's writes: 'submitting' (a job id) before the call, the SID
        # (outbox.Accepted) after it. Sends at the budget overlap, so one send's 'submitting'
        # usually shares its transaction with an earlier send's SID.
        # A thread of its own: in asyncio's shared pool these writes queued behind the fetcher's
        # and the webhooks' work, and every send waits for its 'submitting' commit.
        self._writer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="dispatcher-writes")
        self._writes: GroupCommit[_Submit | outbox.Accepted, set[_Submit]] = GroupCommit(
            self._write, self._writer
        )
        # Jobs this process holds: claimed and not yet finished (sent, recorded, given back). Never
        # claimed or admitted again while held. `_waiting` is the part whose 'submitting' write is
        # not queued yet: their claims are renewed while they wait.
        self._held: set[str] = set()
        self._waiting: set[str] = set()
        services.on_close(self.close)  # the thread ends with the service (or the test's services)
        self._last_turn: asyncio.Future[None] | None = None  # the latest send to take a turn
        self.last_pass = PassReport()

    def close(self) -> None:
        """End the writer thread once its last write is done (the worker loop has stopped)."""
        self._writer.shutdown(wait=True)

    # ------------------------------------------------------------------ the pass

    async def drain(self, *, within: float, idle: float = 0.01) -> tuple[int, int]:
        """Pass after pass until no job is left to send (DRAIN_PENDING) anywhere: for
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
        if self._halted_until is not None:
            self._probe = True  # the error may still be there: one send first, alone
        self._halted_until = None
        renewer = asyncio.create_task(self._renew_claims(), name="dispatcher:renew-claims")
        try:
            batch = await self._next_batch(report)
            if batch is None:
                return report.handled
            await self._send_all(batch, report)
        finally:
            renewer.cancel()
            await asyncio.gather(renewer, return_exceptions=True)
        if report.handled:
            log.info("dispatch pass", **{k: v for k, v in vars(report).items() if v and k != "errors"})
        return report.handled

    async def _refill(self, report: PassReport, began: datetime) -> list[OutboxMessage] | None:
        """The next batch of a pass still sending. A pass may go on for as long as jobs keep
        coming, so once it has lasted a reconcile interval (at least a second), reconciliation
        runs between its batches too whenever it is due."""
        now = self.services.clock.now()
        interval = timedelta(seconds=max(1.0, self.reconciler.policy.interval_seconds))
        if now - began >= interval and self.reconciler.due(now):
            report.reconciled += await self.reconciler.run_once()
        return await self._next_batch(report)

    async def _next_batch(self, report: PassReport) -> list[OutboxMessage] | None:
        """Claim the next due jobs and decide them: the ones to send, in claim order (held and
        opted-out ones are recorded on the way). None when no job was due."""
        now = self.services.clock.now()
        claimed = await asyncio.to_thread(self._claim, now, frozenset(self._held))
        # Admitted once: a job this process already holds is never taken a second time (the claim
        # excluded them already; this holds even if a claim returned one).
        batch = [m for m in claimed if m.job_id not in self._held]
        if len(batch) < len(claimed):
            log.error("claim returned jobs this process already holds; not admitted twice")
        if not batch:
            return None
        ids = [m.job_id for m in batch]
        self._held.update(ids)
        self._waiting.update(ids)
        try:
            # A reminder held for its send window may have been paid meanwhile: re-read it from BC.
            checked = await self.release_check.check(batch, self.worker_id)
            report.not_sent_at_release += len(batch) - len(checked)
            decisions = await asyncio.to_thread(self._decide, checked, now, report)
        except BaseException:
            await asyncio.shield(asyncio.to_thread(self._release, ids))
            raise
        sending = [m for m in checked if decisions.get(m.job_id) is Decision.SEND]
        self._forget(set(ids) - {m.job_id for m in sending})
        return sending

    def _claim(self, now: datetime, held: frozenset[str]) -> list[OutboxMessage]:
        with session_scope(self.services.db) as session:
            return outbox.claim_due(
                session,
                self.worker_id,
                now=now,
                limit=self.policy.batch_size,
                lease_seconds=self.policy.claim_seconds,
                exclude=held,
            )

    def _renew(self, job_ids: set[str]) -> set[str]:
        with session_scope(self.services.db) as session:
            return outbox.renew_claims(
                session,
                job_ids,
                self.worker_id,
                now=self.services.clock.now(),
                lease_seconds=self.policy.claim_seconds,
            )

    def _forget(self, job_ids: set[str] | Sequence[str]) -> None:
        """These jobs are no longer held by this process (finished, decided or given back)."""
        self._held.difference_update(job_ids)
        self._waiting.difference_update(job_ids)

    async def _renew_claims(self) -> None:
        """While the pass runs: every third of the claim lease, renew the claims of the jobs still
        waiting for their turn. A job whose claim could not be renewed (it ran out, e.g. the
        database was unreachable for longer) is not sent by this process: its 'submitting' write
        checks the claim and fails."""
        interval = max(0.05, self.policy.claim_seconds / 3)
        while True:
            await asyncio.sleep(interval)
            waiting = set(self._waiting)
            if not waiting:
                continue
            try:
                renewed = await asyncio.to_thread(self._renew, waiting)
            except Exception:  # the next renewal tries again; the 'submitting' check stays safe
                log.exception("could not renew the claims of waiting jobs")
                continue
            lost = (waiting & self._waiting) - renewed
            if lost:
                log.warning("claims ran out before their turn; not sent by this process", jobs=len(lost))

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
        waiting = deque(batch)  # claimed, not handed to a send yet: given back if we stop
        recording: asyncio.Task[None] | None = None  # the probe's SID write
        try:
            if waiting and self._probe and self._halted_until is None:
                probe = waiting.popleft()
                answer = await self._create(probe, report, None)
                if isinstance(answer, outbox.Accepted):
                    # Twilio took it, so the configuration works: the others start now and the
                    # probe's SID is written beside their first 'submitting' (one commit less
                    # before the burst flows; a pause at its start otherwise).
                    recording = asyncio.ensure_future(self._answered(probe, answer, report))
                else:
                    await self._answered(probe, answer, report)
                self._probe = self._halted_until is not None
                self._forget([probe.job_id])
            if self._halted_until is None:
                await self._send_concurrently(waiting, report)
        finally:
            # Halted, failed or cancelled (shutdown): give the unsent claims back at once.
            if waiting:
                await asyncio.shield(asyncio.to_thread(self._release, [m.job_id for m in waiting]))
            if recording is not None:
                await asyncio.shield(recording)

    async def _send_concurrently(self, waiting: deque[OutboxMessage], report: PassReport) -> None:
        """Up to policy.concurrency create calls at once, begun in claim order, until no job is due.

        The next batch is claimed (and decided) while this one is still being sent, once fewer than
        half a batch wait their turn: a burst flows through at the send budget without a pause at
        each batch's end, and the pass ends when a claim finds nothing due. A slot is taken just
        before the job's 'submitting' commit and given back as soon as Twilio answers (the SID
        write holds none).

        After a halt or an unexpected error no further send starts and nothing more is claimed;
        those in flight finish (a create call is never abandoned half-way unless the dispatcher
        itself is cancelled). What was claimed and not started stays in `waiting`: released.
        """
        began = self.services.clock.now()
        slots = asyncio.Semaphore(max(1, self.policy.concurrency))
        # Sends begun and not yet answered: each holds its turn in the budget, then a slot for its
        # 'submitting' commit and its call. Bounded so that the turns taken do not run far ahead of
        # the calls (and a halt stops the rest soon).
        under_way = asyncio.Semaphore(UNDER_WAY_PER_SLOT * max(1, self.policy.concurrency))
        low_water = self.policy.batch_size // 2  # 0 (batch_size 1): one batch per pass
        loop = asyncio.get_running_loop()
        errors: list[BaseException] = []
        sends: set[asyncio.Task[None]] = set()
        refill: asyncio.Task[list[OutboxMessage] | None] | None = None
        found_nothing = False  # the last claim found no due job
        claim_after = 0.0  # after a claim that found nothing, the next one waits a moment

        def stopped() -> bool:
            return self._halted_until is not None or bool(errors)

        def take_refill() -> None:
            nonlocal refill, found_nothing, claim_after
            if refill is None or not refill.done():
                return
            done, refill = refill, None
            if done.cancelled():
                found_nothing = True
            elif (exc := done.exception()) is not None:
                errors.append(exc)  # raised once the sends in flight are done
            elif (claimed := done.result()) is None:
                found_nothing, claim_after = True, loop.time() + CLAIM_AGAIN_SECONDS
            else:
                found_nothing = False
                waiting.extend(claimed)

        async def one(message: OutboxMessage) -> None:
            try:
                await self.send(message, report, slot=slots, under_way=under_way)
            except Exception as exc:  # raised once all are done; the others stop starting
                errors.append(exc)

        try:
            while True:
                take_refill()
                if stopped():
                    break
                if refill is None and len(waiting) < low_water and loop.time() >= claim_after:
                    refill = asyncio.create_task(self._refill(report, began), name="dispatcher:claim")
                if waiting:
                    await under_way.acquire()  # FIFO: the sends begin in claim order
                    if stopped():
                        under_way.release()
                        break
                    task = asyncio.create_task(one(waiting.popleft()))
                    sends.add(task)
                    task.add_done_callback(sends.discard)
                    continue
                if refill is not None:
                    await asyncio.wait([refill])
                    continue
                if not sends and (found_nothing or low_water == 0):
                    break  # nothing waiting, in flight or due: the pass ends
                # Sends in flight and nothing due a moment ago: the rules may still be planning
                # (a burst), so look again shortly rather than end the pass with the last send.
                timeout = max(0.0, claim_after - loop.time()) if low_water else None
                await asyncio.wait(set(sends), timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
            if sends:
                await asyncio.wait(set(sends))
            if refill is not None:  # stopped while claiming: what it claimed is released
                await asyncio.wait([refill])
                take_refill()
        except asyncio.CancelledError:
            # Shutdown: each send records what it must (a call cut off mid-way is 'unknown').
            for task in sends:
                task.cancel()
            if sends:
                await asyncio.wait(set(sends))
            if refill is not None:  # a claim under way finishes, so that its jobs are given back
                await asyncio.wait([refill], timeout=10)
                take_refill()
            raise
        if errors:
            raise errors[0]

    def _release(self, job_ids: Sequence[str]) -> None:
        now = self.services.clock.now()
        with session_scope(self.services.db) as session:
            for job_id in job_ids:
                outbox.release_claim(session, job_id, self.worker_id, now=now)
        self._forget(job_ids)  # given back (a set's updates are atomic under the GIL)

    # ------------------------------------------------------------------ one send

    async def send(
        self,
        message: OutboxMessage,
        report: PassReport,
        *,
        slot: asyncio.Semaphore | None = None,
        under_way: asyncio.Semaphore | None = None,
    ) -> None:
        """One send: its turn in the budget, 'submitting' committed, the create call, Twilio's
        answer recorded.

        `slot` is taken just before the 'submitting' commit and held until Twilio answers: it
        bounds create calls in flight (with their commit), not the SID write that follows.
        `under_way`, acquired by the caller, is released at the same moment.
        """
        try:
            try:
                answer = await self._create(message, report, slot)
            finally:
                if under_way is not None:
                    under_way.release()
            await self._answered(message, answer, report)
        finally:
            self._forget([message.job_id])

    async def _answered(
        self, message: OutboxMessage, answer: outbox.Accepted | DeliveryError | None, report: PassReport
    ) -> None:
        """Twilio's answer recorded: the SID of an accepted message, or the error handled."""
        if isinstance(answer, DeliveryError):
            await self._on_error(message, answer, report)
        elif answer is not None:
            await asyncio.shield(self._writes.add(answer))
            observe_send(self.services, message.channel, message.created_at)
            report.sent += 1

    async def _create(
        self, message: OutboxMessage, report: PassReport, slot: asyncio.Semaphore | None
    ) -> outbox.Accepted | DeliveryError | None:
        """Up to Twilio's answer: the accepted message, the error to handle, or None when the send
        ended before or without an answer (recorded here). `slot` is held from just before the
        'submitting' commit to Twilio's answer."""
        settings = self.services.settings
        twiml: str | None = None
        if not (settings.twilio.from_number or settings.twilio.messaging_service_sid):
            # Checked before 'submitting': a request we cannot build must not become 'unknown'.
            log.error(
                "TWILIO CONFIGURATION ERROR: set MLC_TWILIO__FROM_NUMBER or MLC_TWILIO__MESSAGING_SERVICE_SID",
                job=message.job_id,
            )
            # Halted before the write: no concurrent send starts meanwhile.
            self._halted_until = self.services.clock.now() + timedelta(
                seconds=self.policy.configuration_pause_seconds
            )
            await self._fail(
                message, NO_SENDER, "no sender configured (From number or Messaging Service)", report
            )
            return None
        if message.channel == Channel.VOICE:
            if not settings.twilio.from_number:
                log.error(
                    "voice job failed: MLC_TWILIO__FROM_NUMBER is required for calls", job=message.job_id
                )
                await self._fail(
                    message, NO_VOICE_SENDER, "no From number configured for voice calls", report
                )
                return None
            try:
                twiml = say_twiml(message.body)
            except ValueError as exc:
                await self._fail(message, BAD_TWIML, str(exc), report)
                return None
        # Turns in the budget are reserved in claim order (the sends start in that order); the
        # slots and the 'submitting' writes are taken in that order too, each after the one before
        # it (the turns' wake-ups a few milliseconds apart may come out of order).
        before, mine = self._last_turn, asyncio.get_running_loop().create_future()
        self._last_turn = mine
        holding = False  # a slot, from before the 'submitting' commit to Twilio's answer
        try:
            try:
                await self.budget.acquire()
                if before is not None:
                    await asyncio.shield(before)
                if slot is not None:
                    # Taken before the commit, never after it: a job 'submitting' that waited
                    # for a slot could outlive its submit lease and be reconciled and sent again.
                    await slot.acquire()
                    holding = True
                if self._halted_until is not None:  # stopped while this send waited for its turn
                    await asyncio.to_thread(self._release, [message.job_id])
                    return None
                # The submit lease runs from the commit of 'submitting', which is after this.
                deadline = monotonic() + self._call_window()
                token = _Submit(message.job_id)
                self._waiting.discard(message.job_id)  # its claim is checked by this write
                submitting = self._writes.add(token)
            finally:
                if not mine.done():
                    mine.set_result(None)
            if not await self._submitted(token, submitting):
                log.warning("claim lost before sending; another worker owns the job", job=message.job_id)
                return None
            return await self._call(message, report, twiml, deadline)
        finally:
            if holding:
                assert slot is not None
                slot.release()

    def _call_window(self) -> float:
        """Seconds after 'submitting' in which a create attempt may still begin. Past the submit
        lease the job is taken for crashed, reconciled and, found nowhere at Twilio, sent again: an
        attempt must end before then, so none begins later than the lease less the longest an
        attempt can take (the client's timeouts; at most half the lease)."""
        lease = self.policy.submit_seconds
        config = self.services.twilio.config
        longest = config.connect_timeout + config.write_timeout + config.read_timeout
        return lease - min(longest, lease / 2)

    async def _call(
        self, message: OutboxMessage, report: PassReport, twiml: str | None, deadline: float
    ) -> outbox.Accepted | DeliveryError | None:
        """The create call, 'submitting' committed; no attempt begins after `deadline`."""
        settings = self.services.settings
        callback = status_callback_url(settings.public_base_url, message.job_id)
        twilio = self.services.twilio
        recipient = message.recipient or ""
        try:
            if self._halted_until is not None:
                # A concurrent send met a configuration error meanwhile: no call is made.
                await asyncio.to_thread(self._unsubmit, message.job_id, "sending stopped before the call")
                return None
            # A 429 seen by a concurrent send while this one was being recorded: wait it out too.
            await self.budget.wait_unpaused()
            if twiml is not None:
                call = await twilio.place_call(
                    recipient,
                    from_=settings.twilio.from_number,
                    twiml=twiml,
                    status_callback=callback,
                    status_callback_events=CALL_EVENTS,
                    deadline=deadline,
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
                    deadline=deadline,
                )
                sid, status = sms.sid, sms.status
        except asyncio.CancelledError:
            await asyncio.shield(asyncio.to_thread(self._unknown, message.job_id, "cancelled mid-call"))
            raise
        except NotSentError as exc:  # e.g. a 429 pause outlasted the window: back in the queue
            log.warning("send not attempted in time; requeued", job=message.job_id, error=str(exc))
            await asyncio.to_thread(self._unsubmit, message.job_id, str(exc))
            return None
        except DeliveryError as exc:
            return exc
        except Exception as exc:  # after "submitting", any surprise means "maybe sent"
            log.exception("unexpected error while sending; outcome unknown", job=message.job_id)
            await asyncio.to_thread(self._unknown, message.job_id, f"{type(exc).__name__}: {exc}")
            report.unknown += 1
            return None
        return outbox.Accepted(message.job_id, sid, status)

    async def _submitted(self, token: _Submit, future: asyncio.Future[set[_Submit]]) -> bool:
        """Wait for the commit of 'submitting' for this send (queued with `_writes.add`, sharing its
        transaction with whichever writes are ready at the same moment); True when the job is ours
        to send. Only after this returns may the create call be made."""
        try:
            return token in await asyncio.shield(future)
        except asyncio.CancelledError:
            # Moved, and no call will follow: say so, so that reconciliation looks at it now. A
            # write still under way is not waited for (the loop may be closing): its 'submitting'
            # becomes 'unknown' when the submit lease runs out, as after a crash.
            written = future.done() and not future.cancelled() and future.exception() is None
            if written and token in future.result():
                await asyncio.shield(
                    asyncio.to_thread(self._unknown, token.job_id, "stopped before the call")
                )
            raise

    def _write(self, items: list[_Submit | outbox.Accepted]) -> set[_Submit]:
        """One transaction: the SIDs of answered sends, then 'submitting' for the sends about to
        call Twilio. Returns the sends whose job moved to 'submitting' (only those may call), each
        answered on its own: of two writes for one job, one at most."""
        accepted = [item for item in items if isinstance(item, outbox.Accepted)]
        sends = [item for item in items if isinstance(item, _Submit)]
        now = self.services.clock.now()
        with session_scope(self.services.db) as session:
            if accepted:
                outbox.mark_sent_many(session, accepted, now=now)
            if not sends:
                return set()
            answers = outbox.mark_submitting_each(
                session,
                [send.job_id for send in sends],
                self.worker_id,
                now=now,
                lease_seconds=self.policy.submit_seconds,
            )
        return {send for send, moved in zip(sends, answers, strict=True) if moved}

    def _unsubmit(self, job_id: str, detail: str) -> None:
        with session_scope(self.services.db) as session:
            outbox.unsubmit(session, job_id, self.worker_id, now=self.services.clock.now(), detail=detail)

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

        # Awaited first: `report.failed += await ...` would read the count before the wait and
        # lose the increments of concurrent sends.
        moved = await asyncio.to_thread(fail)
        report.failed += moved

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
        elif isinstance(exc, ConfigurationError) and self._halted_until is not None:
            # A concurrent send met the same error and stopped sending: this job is not at fault.
            await self._requeue_after_halt(message, exc, code, report, self._halted_until)
        elif isinstance(exc, ConfigurationError):
            pause = self.policy.configuration_pause_seconds
            log.error(
                "TWILIO CONFIGURATION ERROR: sending stopped; fix the credentials/sender",
                job=message.job_id,
                code=code,
                error=str(exc),
                pause_seconds=pause,
            )
            self._halted_until = self.services.clock.now() + timedelta(seconds=pause)
            await self._fail(message, code, exc.message, report)
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

        moved = await asyncio.to_thread(requeue)
        report.requeued += moved  # awaited first (see _fail)

    async def _requeue_after_halt(
        self,
        message: OutboxMessage,
        exc: DeliveryError,
        code: str | int | None,
        report: PassReport,
        until: datetime,
    ) -> None:
        def requeue() -> bool:
            with session_scope(self.services.db) as session:
                return outbox.requeue(
                    session,
                    message.job_id,
                    next_attempt_at=until,
                    now=self.services.clock.now(),
                    error_code=code,
                    detail=f"{exc.message}; sending stopped until {until.isoformat()}",
                )

        moved = await asyncio.to_thread(requeue)
        report.requeued += moved  # awaited first (see _fail)

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
