"""Fixtures for the BC client tests: the simulator, client and webhook receiver fixtures are the
simulator tests' own (tests/simulators/bc/conftest.py); the client's retry waits are recorded here."""

from __future__ import annotations

import pytest

from tests.simulators.bc.conftest import client, clock_start, company, receiver, sim

__all__ = ["RecordingSleep", "client", "clock_start", "company", "receiver", "recording_sleep", "sim"]


class RecordingSleep:
    """Stands in for asyncio.sleep in the client's retry policy: records the waits, waits nothing."""

    def __init__(self) -> None:
        self.delays: list[float] = []

    async def __call__(self, seconds: float) -> None:
        self.delays.append(seconds)


@pytest.fixture
def recording_sleep() -> RecordingSleep:
    return RecordingSleep()
