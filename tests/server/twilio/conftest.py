"""Fixtures for the Twilio client tests: the simulator, contract and webhook receiver fixtures are the
simulator tests' own (tests/simulators/twilio/conftest.py); a client configured for the simulator here."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from server.runtime.retry import RetryPolicy
from server.twilio.client import TwilioClient, TwilioClientConfig
from simulators.twilio.simulator import TwilioSimulator
from tests.simulators.twilio.conftest import clock_start, contract, receiver, sim

__all__ = ["clock_start", "contract", "make_config", "receiver", "sim", "twilio"]


def make_config(sim: TwilioSimulator, **overrides: object) -> TwilioClientConfig:
    values: dict[str, object] = {
        "account_sid": sim.account_sid,
        "api_key_sid": sim.api_key_sid,
        "api_key_secret": sim.api_key_secret,
        "api_base_url": sim.base_url,
        "verify_base_url": sim.verify_base_url,
        "verify_service_sid": sim.verify_service_sid,
        "retry": RetryPolicy(max_attempts=4, base_delay=0.01, max_delay=0.05, max_retry_after=1.0),
        "read_timeout": 2.0,
    }
    values.update(overrides)
    return TwilioClientConfig(**values)


@pytest.fixture
async def twilio(sim: TwilioSimulator) -> AsyncIterator[TwilioClient]:
    async with TwilioClient(make_config(sim)) as client:
        yield client
