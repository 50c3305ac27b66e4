"""Several sends in flight at once (DispatchPolicy.concurrency): still exactly once, 'submitting'
committed before each call, a 429 pausing every waiting send, unknown outcomes reconciled, sends
begun in claim order. The simulator answers slowly (delay_next) so the sends overlap."""

from __future__ import annotations

import asyncio
import threading
from collections import Counter
from collections.abc import Callable
from datetime import timedelta
from typing import Any
from urllib.parse import parse_qs, urlsplit

from sqlmodel import col, select

from server.runtime.clock import ManualClock
from server.runtime.groupcommit import GroupCommit
from server.runtime.retry import RetryPolicy
from server.sandbox.stack import Stack
from server.sending.budget import SendBudget
from server.store.db import read_scope
from server.store.tables import MessageEvent, OutboxMessage
from server.twilio.client import TwilioClient, TwilioClientConfig
from server.twilio.errors import DeliveryError
from server.twilio.models import SendResult

from .conftest import (
    accepted_bodies,
    creates,
    events,
    insert,
    make_dispatcher,
    message,
    open_stack,
    row,
    statuses,
)

SLOW_ANSWER = 0.2  # seconds the simulator holds each answer: long enough for the sends to overlap


class ObservedClient(TwilioClient):
    """The real client, counting what is in flight and noting the job's stored status at each call.

    `on_call(n)` runs as the n-th create call (from 1) begins, before the request leaves.
    """

    def __init__(self, stack: Stack, *, inline_retries: bool = True, now: Callable[[], float] | None = None):
        retry = RetryPolicy() if inline_retries else RetryPolicy(max_attempts=1)
        super().__init__(TwilioClientConfig.from_settings(stack.services.settings.twilio, retry=retry))
        self.stack = stack
        self.now = now
        self.on_call: Callable[[int], None] = lambda n: None
        self.calls = 0
        self.in_flight = 0
        self.most_in_flight = 0
        self.per_recipient: Counter[str] = Counter()
        self.most_per_recipient = 0
        self.status_at_call: dict[str, str] = {}
        self.timeline: list[tuple[str, str, float | None]] = []  # (what, job, budget clock)

    async def send_sms(self, to: str, body: str, **kwargs: Any) -> SendResult:
        job = parse_qs(urlsplit(kwargs["status_callback"]).query)["job"][0]
        self.status_at_call[job] = stored_status(self.stack, job)
        self.calls += 1
        self.on_call(self.calls)
        self.timeline.append(("call", job, self.now() if self.now else None))
        self.in_flight += 1
        self.per_recipient[to] += 1
        self.most_in_flight = max(self.most_in_flight, self.in_flight)
        self.most_per_recipient = max(self.most_per_recipient, self.per_recipient[to])
        try:
            return await super().send_sms(to, body, **kwargs)
        except DeliveryError as exc:
            self.timeline.append((f"error {exc.code}", job, self.now() if self.now else None))
            raise
        finally:
            self.in_flight -= 1
            self.per_recipient[to] -= 1


def stored_status(stack: Stack, job_id: str) -> str:
    with read_scope(stack.services.db) as session:
        return session.exec(select(OutboxMessage.status).where(OutboxMessage.job_id == job_id)).one()


async def observe(stack: Stack, **kwargs: Any) -> ObservedClient:
    client = ObservedClient(stack, **kwargs)
    old, stack.services.twilio = stack.services.twilio, client
    await old.aclose()
    return client


def advance(stack: Stack, seconds: float) -> None:
    clock = stack.clock
    assert isinstance(clock, ManualClock)
    clock.advance(timedelta(seconds=seconds))


def body(n: int) -> str:
    return f"Invoice SI-{n:05d} is 7 days overdue."


async def test_concurrent_sends_go_once_each_after_their_submitting_commit(any_stack: Stack) -> None:
    stack = any_stack
    client = await observe(stack)
    jobs = insert(stack, *(row(n, to=f"+4477009{n:05d}") for n in range(24)))
    stack.twilio_sim.delay_next(24, SLOW_ANSWER)
    dispatcher = make_dispatcher(stack, concurrency=4)

    assert await dispatcher.run_once() == 24

    assert dispatcher.last_pass.sent == 24
    assert client.most_in_flight == 4  # the pipe was full, and never fuller than the setting
    # Every create call began with the job's 'submitting' already committed (read from the store).
    assert client.status_at_call == {job: "submitting" for job in jobs}
    assert Counter(accepted_bodies(stack)) == Counter({body(n): 1 for n in range(24)})
    assert len(creates(stack)) == 24
    assert statuses(stack) == {"queued": 24}
    for job in jobs:
        found = message(stack, job)
        assert found.twilio_sid is not None and found.attempts == 1 and found.claimed_by is None
        assert [(e.status, e.source) for e in events(stack, job)] == [
            ("planned", "engine"),
            ("submitting", "dispatcher"),
            ("queued", "dispatcher"),
        ]
    sids = [message(stack, job).twilio_sid for job in jobs]
    assert len(set(sids)) == 24


class FakeTime:
    """The budget's monotonic clock: sleeping moves it on at once."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.now += seconds


async def test_a_429_pauses_every_waiting_send_and_the_job_is_retried(stack: Stack) -> None:
    fake = FakeTime()
    client = await observe(stack, inline_retries=False, now=fake)
    sim = stack.twilio_sim
    jobs = insert(stack, *(row(n, to=f"+4477009{n:05d}") for n in range(12)))
    sim.delay_next(100, SLOW_ANSWER)
    # The third call arms one 429 with Retry-After 30 s: it lands while other sends are in flight
    # or waiting for their turn.
    client.on_call = lambda n: sim.fail_next(1, status=429, retry_after=30) if n == 3 else None
    dispatcher = make_dispatcher(stack, concurrency=4)
    dispatcher.budget = SendBudget(1000.0, now=fake, sleep=fake.sleep)

    await dispatcher.run_once()

    assert (dispatcher.last_pass.sent, dispatcher.last_pass.requeued) == (11, 1)
    (refused,) = [(job, at) for what, job, at in client.timeline if what == "error 20429"]
    refused_job, refused_at = refused
    assert refused_at is not None
    after = client.timeline[client.timeline.index(("error 20429", refused_job, refused_at)) + 1 :]
    later_calls = [at for what, _job, at in after if what == "call"]
    assert later_calls, "some sends were still waiting when the 429 came"
    # None of them went before the pause was over: the budget held every waiting send.
    assert all(at is not None and at >= refused_at + 30 for at in later_calls)
    requeued = message(stack, refused_job)
    assert (requeued.status, requeued.error_code, requeued.attempts) == ("planned", "20429", 1)
    assert requeued.next_attempt_at >= stack.clock.now() + timedelta(seconds=30)  # Retry-After floor

    advance(stack, 3600)
    await dispatcher.run_once()

    assert Counter(accepted_bodies(stack)) == Counter({body(n): 1 for n in range(12)})
    assert [r.status for r in creates(stack)].count(429) == 1
    assert len(creates(stack)) == 13
    assert message(stack, refused_job).attempts == 2
    await stack.twilio_sim.asettle()
    assert statuses(stack) == {"delivered": 12}
    assert all(message(stack, job).twilio_sid for job in jobs)


async def test_an_unknown_outcome_among_concurrent_sends_is_reconciled_not_resent(any_stack: Stack) -> None:
    stack = any_stack
    client = await observe(stack)
    sim = stack.twilio_sim
    jobs = insert(stack, *(row(n, to=f"+4477009{n:05d}") for n in range(10)))
    sim.delay_next(100, SLOW_ANSWER)
    client.on_call = lambda n: sim.drop_after_accept_next(1) if n == 3 else None
    dispatcher = make_dispatcher(stack, concurrency=4)

    await dispatcher.run_once()

    assert (dispatcher.last_pass.sent, dispatcher.last_pass.unknown) == (9, 1)
    (lost,) = [job for job in jobs if message(stack, job).status == "unknown"]

    await dispatcher.run_once()  # reconcile: the message is in Twilio's list

    found = message(stack, lost)
    held = {m["body"]: m["sid"] for m in sim.messages()}
    assert found.status == "queued" and found.twilio_sid == held[found.body]
    assert ("queued", "reconcile") in [(e.status, e.source) for e in events(stack, lost)]
    assert len(creates(stack)) == 10  # never resent
    assert Counter(accepted_bodies(stack)) == Counter({body(n): 1 for n in range(10)})


async def test_one_recipient_gets_concurrent_sends_begun_in_claim_order(stack: Stack) -> None:
    """credit-limit-crossed texts the credit control desk for every customer: one recipient must not
    serialise a burst. The sends begin ('submitting') in claim order."""
    client = await observe(stack)
    jobs = insert(stack, *(row(n, to="+447700900201") for n in range(12)))
    stack.twilio_sim.delay_next(100, SLOW_ANSWER)
    dispatcher = make_dispatcher(stack, concurrency=4)

    await dispatcher.run_once()

    assert dispatcher.last_pass.sent == 12
    assert client.most_per_recipient == 4
    with read_scope(stack.services.db) as session:
        begun = session.exec(
            select(MessageEvent.job_id)
            .where(MessageEvent.status == "submitting")
            .order_by(col(MessageEvent.id))
        ).all()
    assert list(begun) == jobs
    assert Counter(accepted_bodies(stack)) == Counter({body(n): 1 for n in range(12)})


async def test_configuration_error_in_flight_fails_one_job_and_requeues_the_others(stack: Stack) -> None:
    client = await observe(stack, inline_retries=False)
    sim = stack.twilio_sim
    jobs = insert(stack, *(row(n, to=f"+4477009{n:05d}") for n in range(20)))
    sim.delay_next(100, SLOW_ANSWER)
    # The credentials break after the first send: calls 2-4 may overlap (the first went alone); a
    # send whose call had not begun when the error came back makes none.
    client.on_call = lambda n: sim.fail_next(3, status=401, code=20003) if n == 2 else None
    dispatcher = make_dispatcher(stack, concurrency=3, configuration_pause_seconds=60)

    await dispatcher.run_once()

    rows = {job: message(stack, job) for job in jobs}
    refused = [r for r in rows.values() if r.error_code == "20003"]
    assert 1 <= len(refused) <= 3 and len(refused) == client.calls - 1  # no call after the halt
    assert sorted(r.status for r in refused) == ["failed"] + ["planned"] * (len(refused) - 1)  # one blamed
    assert all(r.attempts == 1 and r.claimed_by is None for r in refused)
    requeued = [r for r in refused if r.status == "planned"]
    assert all(r.next_attempt_at >= stack.clock.now() + timedelta(seconds=60) for r in requeued)
    untouched = [r for r in rows.values() if r.attempts == 0]
    assert len(untouched) == 19 - len(refused)  # never tried; their claims given back
    assert all((r.status, r.claimed_by, r.error_code) == ("planned", None, None) for r in untouched)
    assert len(accepted_bodies(stack)) == 1


async def test_writes_that_pile_up_share_one_transaction() -> None:
    started, release = threading.Event(), threading.Event()
    writes: list[list[str]] = []

    def write(items: list[str]) -> set[str]:
        writes.append(list(items))
        started.set()
        release.wait(5)
        return {i for i in items if i != "refused"}

    group: GroupCommit[str, set[str]] = GroupCommit(write)
    first = group.add("a")
    await asyncio.to_thread(started.wait, 5)  # "a" is being written: the next ones queue up
    rest = [group.add(item) for item in ("b", "refused", "c")]
    release.set()

    assert "a" in await first
    results = await asyncio.gather(*rest)
    assert writes == [["a"], ["b", "refused", "c"]]
    assert [item in result for item, result in zip(("b", "refused", "c"), results, strict=True)] == [
        True,
        False,
        True,
    ]


async def test_a_failed_group_write_fails_each_of_its_callers() -> None:
    def write(items: list[str]) -> set[str]:
        raise OSError("database unreachable")

    group: GroupCommit[str, set[str]] = GroupCommit(write)
    outcomes = await asyncio.gather(group.add("a"), group.add("b"), return_exceptions=True)
    assert [type(o) for o in outcomes] == [OSError, OSError]


async def test_a_pass_claims_the_next_batch_while_sending_until_nothing_is_due(stack: Stack) -> None:
    """A burst larger than a batch flows through one pass: the next batch is claimed while the
    current one is still being sent (no pause at each batch's end), jobs planned meanwhile are
    claimed too, and the sends still begin in claim order, each once, within the concurrency."""
    client = await observe(stack)
    jobs = insert(stack, *(row(n, to=f"+4477009{n:05d}") for n in range(20)))
    late: list[str] = []
    # Planned while the pass is sending (the rules go on planning during a burst).
    client.on_call = lambda n: late.extend(insert(stack, row(20, to="+447700900020"))) if n == 8 else None
    stack.twilio_sim.delay_next(100, 0.02)
    dispatcher = make_dispatcher(stack, batch_size=6, concurrency=3)

    assert await dispatcher.run_once() == 21

    assert dispatcher.last_pass.sent == 21
    assert len(late) == 1
    assert client.most_in_flight == 3
    assert client.status_at_call == {job: "submitting" for job in [*jobs, *late]}
    with read_scope(stack.services.db) as session:
        begun = session.exec(
            select(MessageEvent.job_id)
            .where(MessageEvent.status == "submitting")
            .order_by(col(MessageEvent.id))
        ).all()
    assert list(begun) == [*jobs, *late]
    assert Counter(accepted_bodies(stack)) == Counter({body(n): 1 for n in range(21)})
    assert statuses(stack) == {"queued": 21}
    assert await dispatcher.run_once() == 0  # nothing left


async def test_writer_threads_end_with_the_services(sqlite_url: str, clock: ManualClock) -> None:
    """Each dispatcher's writer thread ends when the services close: a process (or a test) that
    builds many dispatchers does not keep a thread per dispatcher."""

    def writers() -> int:
        return sum(1 for t in threading.enumerate() if t.name.startswith("dispatcher-writes"))

    before = writers()
    stack = await open_stack(sqlite_url, clock)
    try:
        dispatchers = [make_dispatcher(stack) for _ in range(3)]
        for n, dispatcher in enumerate(dispatchers):
            insert(stack, row(n, to=f"+4477008{n:05d}"))
            assert await dispatcher.run_once() == 1  # a send: the dispatcher's writer thread runs
        assert writers() == before + 3
        assert statuses(stack) == {"queued": 3}
    finally:
        await stack.stop()
    assert writers() == before
