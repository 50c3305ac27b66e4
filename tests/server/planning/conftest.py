"""Fixtures for the BC side of the service: the BC simulator, the Twilio simulator and the connector
served on a real loopback port (server.sandbox.stack.Stack), on SQLite and on PostgreSQL."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from sqlmodel import col, select

from engine.loader import load_ruleset
from engine.ruleset import RuleSet
from server.runtime.clock import ManualClock
from server.sandbox.stack import Stack
from server.settings import Settings
from server.store.db import read_scope
from server.store.tables import BcSubscription, InboxNotification, OutboxMessage
from simulators.bc.seeds.demo import GB_COMPANY_ID

GB = GB_COMPANY_ID


@pytest.fixture(scope="session")
def shipped(repo_root: Path) -> RuleSet:
    """The rules the project ships (rules/)."""
    return load_ruleset(repo_root / "rules")


@pytest.fixture
def stack_class() -> type[Stack]:
    """`stack` (tests/conftest.py) runs on SQLite and on PostgreSQL, for the key scenarios, with one company."""
    return OneCompanyStack


@pytest.fixture
async def lite_stack(sqlite_url: str, clock: ManualClock) -> AsyncIterator[Stack]:
    """The whole stack on SQLite only (edge cases whose store behaviour the key tests already cover)."""
    async with make_stack(sqlite_url, clock) as running:
        yield running


class OneCompanyStack(Stack):
    def make_settings(self) -> Settings:
        settings = super().make_settings()
        settings.bc.companies = [GB]
        return settings


def make_stack(url: str, clock: ManualClock, **options: Any) -> Stack:
    return OneCompanyStack(database_url=url, clock=clock, **options)


def outbox_rows(stack: Stack, **filters: object) -> list[OutboxMessage]:
    """Outbox rows (oldest first), optionally filtered by column values."""
    with read_scope(stack.services.db) as session:
        stmt = select(OutboxMessage).order_by(col(OutboxMessage.id))
        for name, value in filters.items():
            stmt = stmt.where(getattr(OutboxMessage, name) == value)
        rows = list(session.exec(stmt).all())
        session.expunge_all()
        return rows


def inbox_rows(stack: Stack) -> list[InboxNotification]:
    with read_scope(stack.services.db) as session:
        rows = list(session.exec(select(InboxNotification).order_by(col(InboxNotification.id))).all())
        session.expunge_all()
        return rows


def subscription_rows(stack: Stack, status: str | None = None) -> list[BcSubscription]:
    with read_scope(stack.services.db) as session:
        stmt = select(BcSubscription).order_by(col(BcSubscription.id))
        if status is not None:
            stmt = stmt.where(BcSubscription.status == status)
        rows = list(session.exec(stmt).all())
        session.expunge_all()
        return rows


def record_by_number(stack: Stack, entity: str, number: str, field: str = "number") -> dict[str, Any]:
    return next(r for r in stack.bc_sim.records(GB, entity) if r[field] == number)


async def deliver(stack: Stack) -> list[str]:
    """Close the simulator's 30 s notification windows now and deliver them (no waiting)."""
    return await stack.bc_sim.aflush_notifications()


def client_state_at_bc(stack: Stack, sub: BcSubscription) -> str:
    """The subscription's clientState as BC holds it (the connector's store keeps only its hash)."""
    [remote] = [s for s in stack.bc_sim.subscriptions() if s["subscriptionId"] == sub.subscription_id]
    value: str = remote["clientState"]
    return value
