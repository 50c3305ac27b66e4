"""End-to-end fixtures: both simulators and the connector over loopback, on SQLite and PostgreSQL."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime

import pytest

from server.runtime.clock import ManualClock
from server.sandbox.stack import Stack

START = datetime(2026, 11, 25, 9, 0, tzinfo=UTC)


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock(START)


@pytest.fixture
async def stack(database_url: str, clock: ManualClock) -> AsyncIterator[Stack]:
    async with Stack(database_url=database_url, clock=clock) as running:
        yield running
