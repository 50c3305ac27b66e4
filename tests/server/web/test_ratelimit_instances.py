"""Two connector instances on one PostgreSQL database share the rate-limit counts and the lockout."""

from __future__ import annotations

import secrets
from collections.abc import AsyncIterator

import httpx
import pytest

from server.runtime.clock import ManualClock
from server.sandbox.stack import Stack
from server.settings import RateLimitSettings

pytestmark = pytest.mark.postgres

LIMITS = RateLimitSettings(api_per_token=6, lockout_failures=4)
TOKEN = secrets.token_urlsafe(24)


@pytest.fixture
async def pair(postgres_url: str, clock: ManualClock) -> AsyncIterator[tuple[httpx.AsyncClient, ...]]:
    overrides = {"rate_limits": LIMITS, "api_token": TOKEN}
    async with (
        Stack(database_url=postgres_url, clock=clock, settings_overrides=overrides) as one,
        Stack(database_url=postgres_url, clock=clock, settings_overrides=overrides) as two,
    ):
        assert one.url != two.url
        async with (
            httpx.AsyncClient(base_url=one.url, timeout=30) as first,
            httpx.AsyncClient(base_url=two.url, timeout=30) as second,
        ):
            yield first, second


async def test_the_per_token_count_is_shared(pair: tuple[httpx.AsyncClient, ...]) -> None:
    headers = {"Authorization": f"Bearer {TOKEN}"}
    for n in range(LIMITS.api_per_token):
        assert (await pair[n % 2].get("/api/messages", headers=headers)).status_code == 200
    for http in pair:
        over = await http.get("/api/messages", headers=headers)
        assert over.status_code == 429 and over.headers["retry-after"] == "60"


async def test_failures_on_either_instance_lock_the_address_out_on_both(
    pair: tuple[httpx.AsyncClient, ...],
) -> None:
    for n in range(LIMITS.lockout_failures):
        wrong = await pair[n % 2].get("/api/messages", headers={"Authorization": f"Bearer guess-{n}"})
        assert wrong.status_code == 401
    for http in pair:
        locked = await http.get("/api/messages", headers={"Authorization": f"Bearer {TOKEN}"})
        assert locked.status_code == 429 and locked.headers["retry-after"] == str(LIMITS.lockout_seconds)
