"""Reconciliation over a shared number: the recipient's Messages list is read back to the job's submit
time by date_created, however many newer texts it holds, and absence becomes "not sent" only with
proof. Where the reconciler cannot decide, the job waits for a person in 'needs_review'.

Real HTTP throughout: the connector's Twilio client against the Twilio simulator, which holds the
other texts as Twilio would (created through its API, newest first in its list)."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from typing import Any

import httpx
import pytest

from server.sandbox.stack import Stack
from server.sending.budget import SendBudget
from server.sending.dispatcher import Dispatcher, DispatchPolicy
from server.sending.reconcile import ReconcilePolicy
from server.store import outbox
from server.store.db import session_scope

from .conftest import PHONE, creates, events, insert, message, row

pytestmark = pytest.mark.timeout(240)

NEWER = 1_100  # more than Twilio's largest page (PageSize 1000) and more than the old 1,000 cut-off


def advance(stack: Stack, seconds: float) -> None:
    stack.clock.advance(timedelta(seconds=seconds))  # type: ignore[attr-defined]


def dispatcher(stack: Stack, **reconcile: Any) -> Dispatcher:
    return Dispatcher(
        stack.services,
        policy=DispatchPolicy(rate_limit_pause_seconds=0.01),
        reconcile_policy=ReconcilePolicy(**{"grace_seconds": 120.0, "interval_seconds": 0.0, **reconcile}),
        budget=SendBudget(1000.0),
    )


async def texts_to(stack: Stack, to: str, count: int, *, body: str | None = None) -> list[str]:
    """`count` texts to `to` created at the simulator through its REST API by someone else on the
    account (another desk's tool sharing the number); returns their SIDs."""
    sim = stack.twilio_sim
    url = f"{sim.base_url}/2010-04-01/Accounts/{sim.account_sid}/Messages.json"
    sids: list[str] = []
    async with httpx.AsyncClient(auth=(sim.account_sid, sim.auth_token), timeout=30) as client:
        for start in range(0, count, 50):

            async def one(n: int) -> str:
                form = {"To": to, "From": sim.from_number, "Body": body or f"Desk traffic {n}"}
                response = await client.post(url, data=form)
                assert response.status_code == 201, response.text
                return str(response.json()["sid"])

            sids.extend(await asyncio.gather(*(one(n) for n in range(start, min(count, start + 50)))))
    return sids


def sent_with_body(stack: Stack, body: str) -> int:
    """Messages the simulator holds with this Body (what the recipient got)."""
    return sum(1 for m in stack.twilio_sim.messages() if m["body"] == body)


def interrupted(stack: Stack, job: str) -> None:
    """A worker committed 'submitting' for `job` and died before its request left."""
    now = stack.clock.now()
    with session_scope(stack.services.db) as session:
        outbox.claim_due(session, "dead-worker", now=now, limit=1, lease_seconds=5)
    with session_scope(stack.services.db) as session:
        assert outbox.mark_submitting(session, job, "dead-worker", now=now, lease_seconds=5)


async def test_a_message_behind_more_than_a_thousand_newer_texts_is_found_not_resent(
    any_stack: Stack,
) -> None:
    stack = any_stack
    stack.twilio_sim.auto_advance = False  # no status callback resolves it first
    stack.twilio_sim.drop_after_accept_next(1)  # Twilio takes it; the answer is lost
    (job,) = insert(stack, row(1))
    sender = dispatcher(stack)
    await sender.run_once()
    assert message(stack, job).status == "unknown"
    (original,) = [m["sid"] for m in stack.twilio_sim.messages()]

    advance(stack, 1)
    await texts_to(stack, PHONE, NEWER)
    advance(stack, 121)  # past the grace period
    await sender.run_once()

    found = message(stack, job)
    assert (found.status, found.twilio_sid, found.attempts) == ("queued", original, 1)
    assert sent_with_body(stack, row(1).body) == 1
    assert [r.form_dict()["Body"] for r in creates(stack)].count([row(1).body]) == 1
    assert [(e.status, e.source) for e in events(stack, job)][-1] == ("queued", "reconcile")


async def test_a_send_that_never_left_is_sent_once_when_the_list_was_read_back_to_its_submit(
    stack: Stack,
) -> None:
    """Proof of absence: every text created since the submit (less the clock skew) was listed."""
    await texts_to(stack, PHONE, 3, body="Older text")
    advance(stack, 3600)
    (job,) = insert(stack, row(1))
    interrupted(stack, job)
    advance(stack, 10)
    await texts_to(stack, PHONE, NEWER)
    advance(stack, 121)

    await dispatcher(stack).run_once()

    sent = message(stack, job)
    assert (sent.status, sent.attempts) == ("queued", 2)
    assert sent_with_body(stack, row(1).body) == 1
    assert ("planned", "reconcile") in [(e.status, e.source) for e in events(stack, job)]


async def test_a_list_longer_than_the_safety_bound_is_left_for_a_person(any_stack: Stack) -> None:
    stack = any_stack
    (job,) = insert(stack, row(1))
    interrupted(stack, job)
    advance(stack, 10)
    await texts_to(stack, PHONE, NEWER)
    advance(stack, 121)

    await dispatcher(stack, max_listed=500, page_size=100).run_once()

    review = message(stack, job)
    assert (review.status, review.attempts, review.claimed_by) == ("needs_review", 1, None)
    assert sent_with_body(stack, row(1).body) == 0
    (last,) = events(stack, job)[-1:]
    assert (last.status, last.source, last.error_code) == ("needs_review", "reconcile", "list-too-long")
    lists = [r for r in stack.twilio_sim.requests(path_contains="/Messages.json") if r.method == "GET"]
    assert len(lists) == 5  # 500 listed, page by page, then it stopped

    advance(stack, 3600)
    await dispatcher(stack).run_once()  # never picked up again on its own
    assert message(stack, job).status == "needs_review"
    assert sent_with_body(stack, row(1).body) == 0


async def test_two_texts_that_could_each_be_the_job_are_left_for_a_person(stack: Stack) -> None:
    stack.twilio_sim.auto_advance = False
    stack.twilio_sim.drop_after_accept_next(1)
    (job,) = insert(stack, row(1))
    sender = dispatcher(stack)
    await sender.run_once()
    assert message(stack, job).status == "unknown"
    advance(stack, 1)
    await texts_to(stack, PHONE, 1, body=row(1).body)  # the same words, sent by someone else
    advance(stack, 121)

    await sender.run_once()

    review = message(stack, job)
    assert (review.status, review.twilio_sid, review.error_code) == ("needs_review", None, "ambiguous")
    assert sent_with_body(stack, row(1).body) == 2  # nothing more was sent


async def test_a_listing_cut_short_by_older_texts_is_no_proof_while_twilio_may_still_queue_it(
    stack: Stack,
) -> None:
    """Twilio orders lists by DateSent, null while a message is queued: where queued messages sort is
    not documented, so a listing that stopped at older texts, not at the end, proves absence only once
    the message could no longer be waiting in Twilio's queue (ValidityPeriod, at most 36,000 s)."""
    await texts_to(stack, PHONE, 150, body="Older text")
    advance(stack, 3600)
    (job,) = insert(stack, row(1))
    interrupted(stack, job)
    advance(stack, 121)
    sender = dispatcher(stack, page_size=100)

    await sender.run_once()

    assert message(stack, job).status == "unknown"  # still waiting: not found is not proof yet
    lists = [r for r in stack.twilio_sim.requests(path_contains="/Messages.json") if r.method == "GET"]
    assert len(lists) == 1  # the first page already reached back past the submit time
    assert sent_with_body(stack, row(1).body) == 0

    advance(stack, 36_000)
    await sender.run_once()
    assert (message(stack, job).status, sent_with_body(stack, row(1).body)) == ("queued", 1)


async def test_the_reconcilers_lease_comes_from_settings(stack: Stack) -> None:
    """MLC_RECONCILE_LEASE_SECONDS: how long the jobs of a reconciler that died stay with it."""
    stack.services.settings.reconcile_lease_seconds = 42.0
    (job,) = insert(stack, row(1))
    interrupted(stack, job)
    advance(stack, 10)
    stack.twilio_sim.delay_next(1, 1.0)  # the listing is slow: look at the row meanwhile
    reconciler = Dispatcher(stack.services, budget=SendBudget(1000.0)).reconciler
    running = asyncio.create_task(reconciler.run_once(force=True))
    for _ in range(200):
        if stack.twilio_sim.requests(path_contains="/Messages.json"):
            break
        await asyncio.sleep(0.01)

    held = message(stack, job)
    assert (held.status, held.claimed_by) == ("unknown", reconciler.worker_id)
    assert held.claim_expires == stack.clock.now() + timedelta(seconds=42)
    await running


async def test_a_listing_twilio_refuses_is_left_for_a_person_and_one_it_cannot_answer_waits(
    stack: Stack,
) -> None:
    first, second = insert(stack, row(1), row(2))
    interrupted(stack, first)
    advance(stack, 121)
    stack.twilio_sim.fail_next(1, status=400, code=20001)  # a refusal: asking again will not help

    await dispatcher(stack).reconciler.run_once(force=True)

    refused = message(stack, first)
    assert (refused.status, refused.error_code) == ("needs_review", "list-failed")
    interrupted(stack, second)
    advance(stack, 121)
    stack.twilio_sim.fail_next(20, status=503)  # Twilio down: nothing learnt, try again later
    await dispatcher(stack).reconciler.run_once(force=True)
    assert message(stack, second).status == "unknown"
    assert sent_with_body(stack, row(1).body) + sent_with_body(stack, row(2).body) == 0
