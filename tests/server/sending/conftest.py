"""The Twilio side of the service over loopback: the connector (uvicorn on a real port), the Twilio
simulator and a store on SQLite (and PostgreSQL for the key tests). Outbox rows are inserted
directly with insert_planned: these tests need no BC."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import pytest
import sqlalchemy as sa
from sqlmodel import col, select

from server.runtime.clock import ManualClock
from server.sandbox.stack import Stack
from server.sending.budget import SendBudget
from server.sending.dispatcher import Dispatcher, DispatchPolicy
from server.sending.reconcile import ReconcilePolicy
from server.store import outbox
from server.store.db import read_scope, session_scope
from server.store.outbox import PlannedRow
from server.store.tables import MessageEvent, OptOut, OutboxMessage
from simulators.twilio.app import RecordedRequest

# 12:00 UTC on a weekday: outside the test windows unless a test moves the clock.
START = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)
PHONE = "+447700900123"
RULE = "test-notice"  # not a shipped rule: the row's own send window applies


# A fast send budget: the budget itself is tested on its own, without wall-clock waits.
FAST_BUDGET: dict[str, Any] = {"messages_per_second": 1000.0}


@pytest.fixture
def clock_start() -> datetime:
    return START


async def open_stack(database_url: str, clock: ManualClock) -> Stack:
    stack = Stack(database_url=database_url, clock=clock, settings_overrides=dict(FAST_BUDGET))
    return await stack.start()


@pytest.fixture
def stack_url(sqlite_url: str) -> str:
    """`stack` (tests/conftest.py) runs on SQLite; `any_stack` on both backends."""
    return sqlite_url


@pytest.fixture
def stack_settings() -> dict[str, Any]:
    return dict(FAST_BUDGET)


@pytest.fixture
async def any_stack(database_url: str, clock: ManualClock) -> AsyncIterator[Stack]:
    """The same tests on SQLite and on PostgreSQL."""
    running = await open_stack(database_url, clock)
    try:
        yield running
    finally:
        await running.stop()


def make_dispatcher(stack: Stack, **policy: Any) -> Dispatcher:
    return Dispatcher(
        stack.services,
        policy=DispatchPolicy(**{"rate_limit_pause_seconds": 0.01, **policy}),
        reconcile_policy=ReconcilePolicy(grace_seconds=120, interval_seconds=0),
        budget=SendBudget(1000.0),
    )


Row = Callable[..., PlannedRow]


def row(n: int = 1, **overrides: Any) -> PlannedRow:
    fields: dict[str, Any] = {
        "job_id": f"{RULE}:{n:05d}:2026-11-25",
        "rule_id": RULE,
        "entity": "salesInvoices",
        "record_id": f"rec-{n:05d}",
        "record_number": f"SI-{n:05d}",
        "channel": "sms",
        "to": PHONE,
        "body": f"Invoice SI-{n:05d} is 7 days overdue.",
        "dedupe_key": f"{RULE}|rec-{n:05d}",
        "reason": "test",
    }
    fields.update(overrides)
    return PlannedRow(**fields)


def insert(stack: Stack, *rows: PlannedRow) -> list[str]:
    with session_scope(stack.services.db) as session:
        return outbox.insert_planned(session, rows, company_id="c1", now=stack.clock.now())


def message(stack: Stack, job_id: str) -> OutboxMessage:
    with read_scope(stack.services.db) as session:
        found = session.exec(select(OutboxMessage).where(OutboxMessage.job_id == job_id)).one()
        session.expunge(found)  # read_scope rolls back on exit, which would expire it
        return found


@dataclass(frozen=True)
class Event:
    status: str
    source: str
    twilio_status: str | None
    error_code: str | None
    changed: bool


def events(stack: Stack, job_id: str) -> list[Event]:
    with read_scope(stack.services.db) as session:
        rows = session.exec(
            select(MessageEvent).where(MessageEvent.job_id == job_id).order_by(col(MessageEvent.id))
        ).all()
        return [Event(e.status, e.source, e.twilio_status, e.error_code, e.changed) for e in rows]


def statuses(stack: Stack) -> dict[str, int]:
    with read_scope(stack.services.db) as session:
        rows = session.exec(
            select(OutboxMessage.status, sa.func.count()).group_by(col(OutboxMessage.status))
        ).all()
        return {status: count for status, count in rows}


def opt_outs(stack: Stack) -> list[tuple[str, str, bool, str]]:
    with read_scope(stack.services.db) as session:
        rows = session.exec(select(OptOut).order_by(col(OptOut.phone), col(OptOut.sender))).all()
        return [(o.phone, o.sender, o.active, o.source) for o in rows]


def creates(stack: Stack, resource: str = "Messages.json") -> list[RecordedRequest]:
    """Create requests the simulator received (any answer)."""
    return [r for r in stack.twilio_sim.requests(path_contains=f"/{resource}") if r.method == "POST"]


def accepted_bodies(stack: Stack) -> list[str]:
    """The Body of every message create the simulator accepted (201)."""
    return [r.form_dict()["Body"][0] for r in creates(stack) if r.status == 201]


async def drain(dispatcher: Dispatcher, stack: Stack, *, passes: int = 50, step_seconds: float = 0) -> int:
    """Run the dispatcher until a pass does nothing; returns the passes run. Bounded."""
    from datetime import timedelta

    for n in range(1, passes + 1):
        done = await dispatcher.run_once()
        if step_seconds:
            stack.clock.advance(timedelta(seconds=step_seconds))  # type: ignore[attr-defined]
        if done == 0 and not step_seconds:
            return n
    return passes


async def without_inline_retries(stack: Stack) -> None:
    """Swap in a Twilio client that does not retry in-line, so every 429/5xx reaches the dispatcher."""
    from server.runtime.retry import RetryPolicy
    from server.twilio.client import TwilioClient, TwilioClientConfig

    old = stack.services.twilio
    config = TwilioClientConfig.from_settings(
        stack.services.settings.twilio, retry=RetryPolicy(max_attempts=1)
    )
    stack.services.twilio = TwilioClient(config)
    await old.aclose()
