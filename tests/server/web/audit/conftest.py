"""Fixtures for the audit pages: the connector on a real loopback port with a known outbox."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import httpx
import pytest

from server.runtime.clock import ManualClock
from server.sandbox.stack import Stack
from server.store.db import session_scope
from server.store.outbox import PlannedRow, apply_status, insert_planned, mark_sent

START = datetime(2026, 11, 25, 17, 0, tzinfo=UTC)
COMPANY = "5f0c2a9e-0000-4000-8000-000000000001"
DESK = "+12065550118"
ALPINE = "+14155552671"


@pytest.fixture
def clock_start() -> datetime:
    return START


def planned(job_id: str, rule_id: str, number: str, to: str | None, **extra: object) -> PlannedRow:
    values: dict[str, object] = {
        "job_id": job_id,
        "rule_id": rule_id,
        "entity": "salesInvoices",
        "record_id": f"id-{number}",
        "record_number": number,
        "channel": "sms",
        "to": to,
        "body": f"Invoice {number} is overdue. Please pay or call us.",
        "dedupe_key": f"{number}|stage",
        "reason": "days_overdue reached a stage",
    }
    values.update(extra)
    return PlannedRow(**values)  # type: ignore[arg-type]


def seed_outbox(stack: Stack, clock: ManualClock) -> None:
    """Four messages, oldest first: delivered, failed (30005), skipped (bad phone), undelivered (30003)."""
    db = stack.services.db
    with session_scope(db) as session:
        insert_planned(
            session,
            [planned("mlc-delivered", "invoice-overdue", "PS-INV103001", DESK)],
            company_id=COMPANY,
            now=clock.now(),
        )
        mark_sent(session, "mlc-delivered", sid="SM001", twilio_status="queued", now=clock.now())
        apply_status(session, sid="SM001", twilio_status="delivered", now=clock.now())
    clock.advance(timedelta(minutes=1))
    with session_scope(db) as session:
        insert_planned(
            session,
            [planned("mlc-failed", "invoice-overdue", "PS-INV103004", ALPINE)],
            company_id=COMPANY,
            now=clock.now(),
        )
        mark_sent(session, "mlc-failed", sid="SM002", twilio_status="queued", now=clock.now())
        apply_status(session, sid="SM002", twilio_status="sent", now=clock.now())
        apply_status(session, sid="SM002", twilio_status="failed", error_code="30005", now=clock.now())
    clock.advance(timedelta(minutes=1))
    with session_scope(db) as session:
        insert_planned(
            session,
            [
                planned(
                    "mlc-skipped",
                    "invoice-overdue",
                    "PS-INV103007",
                    None,
                    skip_code="ML402",
                    skip_reason="customer.phoneNumber '020 7946 0123' is too long for US",
                )
            ],
            company_id=COMPANY,
            now=clock.now(),
        )
    clock.advance(timedelta(minutes=1))
    with session_scope(db) as session:
        insert_planned(
            session,
            [
                planned(
                    "mlc-undelivered",
                    "credit-limit-crossed",
                    "C10080",
                    DESK,
                    entity="customers",
                    body="Tailspin Toys is over its credit limit.",
                )
            ],
            company_id=COMPANY,
            now=clock.now(),
        )
        mark_sent(session, "mlc-undelivered", sid="SM004", twilio_status="queued", now=clock.now())
        apply_status(session, sid="SM004", twilio_status="undelivered", error_code="30003", now=clock.now())


@pytest.fixture
def stack(stack: Stack, clock: ManualClock) -> Stack:
    """tests/conftest.py's `stack`, its outbox seeded with the rows the pages show."""
    seed_outbox(stack, clock)
    return stack


@pytest.fixture
async def http(stack: Stack) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=stack.url, timeout=30) as client:
        yield client


@pytest.fixture
async def signed_in(stack: Stack, http: httpx.AsyncClient) -> httpx.AsyncClient:
    response = await http.post("/audit/login", data={"token": stack.api_token, "next": "/audit"})
    assert response.status_code == 303
    return http
