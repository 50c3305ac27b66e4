"""Fixtures for the OTP-gated changes: the whole stack over loopback, on SQLite and PostgreSQL."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest
from cryptography.fernet import Fernet

from server.runtime.clock import ManualClock
from server.sandbox.stack import Stack
from server.settings import ChangeSettings

START = datetime(2026, 11, 25, 9, 0, tzinfo=UTC)
APPROVER = "+447700900123"
CONTROLLER = "+447700900456"


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock(START)


@pytest.fixture
def secret_key() -> str:
    return Fernet.generate_key().decode()


def change_settings(**overrides: Any) -> ChangeSettings:
    values: dict[str, Any] = {
        "approver_roles": {"finance-controller": CONTROLLER},
        "bank_page_publisher": "contoso",
        "bank_page_group": "finance",
        "bank_page_version": "v1.0",
        "bank_page_entity_set": "vendorBankAccounts",
        "expiry_minutes": 15,
        "max_attempts": 3,
    }
    values.update(overrides)
    return ChangeSettings(**values)


@pytest.fixture
async def stack(database_url: str, clock: ManualClock, secret_key: str) -> AsyncIterator[Stack]:
    overrides = {"changes": change_settings(), "secret_key": secret_key}
    async with Stack(database_url=database_url, clock=clock, settings_overrides=overrides) as running:
        yield running


@pytest.fixture
async def api(stack: Stack) -> AsyncIterator[httpx.AsyncClient]:
    headers = {"Authorization": f"Bearer {stack.api_token}"}
    async with httpx.AsyncClient(base_url=stack.url, headers=headers, timeout=30) as http:
        yield http


def record_id(stack: Stack, entity: str, number_field: str, number: str) -> str:
    company = stack.bc_sim.companies[0]
    for record in stack.bc_sim.records(company, entity):
        if record.get(number_field) == number:
            return str(record["id"])
    raise AssertionError(f"no {entity} {number} in the seed")
