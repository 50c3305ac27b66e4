"""Fixtures for the OTP-gated changes: the whole stack over loopback, on SQLite and PostgreSQL."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from cryptography.fernet import Fernet

from server.sandbox.stack import Stack
from server.settings import ChangeSettings
from tests.server.changes.people import APPROVER, CONTROLLER, ROLES, identity_settings, person

__all__ = ["APPROVER", "CONTROLLER"]


@pytest.fixture
def secret_key() -> str:
    return Fernet.generate_key().decode()


def change_settings(**overrides: Any) -> ChangeSettings:
    values: dict[str, Any] = {
        "approver_roles": ROLES,
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
def stack_settings(secret_key: str) -> dict[str, Any]:
    return {"changes": change_settings(), "secret_key": secret_key, **identity_settings()}


@pytest.fixture
async def alice(stack: Stack) -> AsyncIterator[httpx.AsyncClient]:
    """Alice in accounts payable: she proposes changes."""
    async with person(stack, "alice") as client:
        yield client


@pytest.fixture
async def dave(stack: Stack) -> AsyncIterator[httpx.AsyncClient]:
    """Dave in treasury: the approver of the 'treasury' role (his phone is APPROVER)."""
    async with person(stack, "dave") as client:
        yield client


@pytest.fixture
async def carol(stack: Stack) -> AsyncIterator[httpx.AsyncClient]:
    """Carol, the finance controller (her phone is CONTROLLER)."""
    async with person(stack, "carol") as client:
        yield client


def record_id(stack: Stack, entity: str, number_field: str, number: str) -> str:
    company = stack.bc_sim.companies[0]
    for record in stack.bc_sim.records(company, entity):
        if record.get(number_field) == number:
            return str(record["id"])
    raise AssertionError(f"no {entity} {number} in the seed")
