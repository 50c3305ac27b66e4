"""Fixtures for the reminders tests: invoices, and a migrated SQLite store (the shipped rules come from
tests/server/planning/conftest.py)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine
from sqlmodel import col, select

from server.planning.sweep import Sweeper
from server.runtime.clock import ManualClock
from server.sandbox.stack import Stack
from server.store.db import read_scope
from server.store.tables import OutboxMessage
from simulators.bc.seeds.demo import GB_COMPANY_ID
from tests.server.conftest import migrated_engine

NORTHWIND = {
    "id": "b7e2d4a1-5c3f-ef11-8a6b-6045bde9c1a2",
    "number": "C00420",
    "displayName": "Northwind Outdoor Supply",
    "phoneNumber": "503-555-0142",
    "blocked": " ",
}


def invoice(number: str, due: str, amount: float = 100.0, **changes: Any) -> dict[str, Any]:
    record: dict[str, Any] = {
        "id": f"inv-{number.lower()}",
        "number": number,
        "status": "Open",
        "dueDate": due,
        "remainingAmount": amount,
        "currencyCode": "USD",
        "customerId": NORTHWIND["id"],
        "customerNumber": NORTHWIND["number"],
        "customer": dict(NORTHWIND),
    }
    record.update(changes)
    return record


@pytest.fixture
def db(sqlite_url: str) -> Iterator[Engine]:
    with migrated_engine(sqlite_url) as engine:
        yield engine


# --- end-to-end helpers: the stack (both simulators + the connector) at a chosen moment -----------


@pytest.fixture
async def stacks() -> AsyncIterator[list[Stack]]:
    """Stacks a test starts (each at its own clock), stopped at the end."""
    running: list[Stack] = []
    yield running
    for stack in running:
        await stack.stop()


async def start(tmp_path: Path, at: datetime) -> tuple[Stack, ManualClock]:
    clock = ManualClock(at)
    stack = await Stack(database_url=f"sqlite:///{tmp_path / 'c.sqlite3'}", clock=clock).start()
    return stack, clock


def customer_with_invoice(stack: Stack, phone: str, due: date, number: str) -> None:
    customer = stack.bc_sim.create_record(
        GB_COMPANY_ID,
        "customers",
        {
            "number": f"C{number[-4:]}",
            "displayName": f"Customer {number}",
            "phoneNumber": phone,
            "blocked": " ",
        },
    )
    stack.bc_sim.create_record(
        GB_COMPANY_ID,
        "salesInvoices",
        {
            "number": number,
            "customerId": customer["id"],
            "invoiceDate": (due - timedelta(days=30)).isoformat(),
            "postingDate": (due - timedelta(days=30)).isoformat(),
            "dueDate": due.isoformat(),
            "totalAmountIncludingTax": 99.0,
            "remainingAmount": 99.0,
            "status": "Open",
        },
    )


def row_for(stack: Stack, number: str) -> OutboxMessage:
    with read_scope(stack.services.db) as session:
        row = session.exec(select(OutboxMessage).where(col(OutboxMessage.record_number) == number)).one()
        session.expunge(row)
        return row


def texts_to(stack: Stack, phone: str) -> list[str]:
    return [m["body"] for m in stack.twilio_sim.messages() if m["to"] == phone]


async def sweep_and_dispatch(stack: Stack) -> None:
    await Sweeper(stack.services).sweep_now()
    await stack.run("dispatcher")
    await stack.twilio_sim.asettle()
