"""Floods of wrong credentials, with the shipped default limits: guessing the API token, by the bearer
API or the audit sign-in form, ends in 429 with Retry-After long before a guess could succeed."""

from __future__ import annotations

import httpx

from server.sandbox.stack import Stack
from server.settings import RateLimitSettings

from .conftest import write_figures

DEFAULTS = RateLimitSettings()
FLOOD = 300


async def test_a_wrong_token_flood_on_the_api_is_locked_out(stack: Stack) -> None:
    assert stack.settings.rate_limits == DEFAULTS
    statuses: list[int] = []
    async with httpx.AsyncClient(base_url=stack.url, timeout=10) as http:
        for n in range(FLOOD):
            response = await http.get("/api/messages", headers={"Authorization": f"Bearer guess-{n:04d}"})
            statuses.append(response.status_code)
            if response.status_code == 429:
                assert int(response.headers["retry-after"]) > 0
        right = await http.get("/api/messages", headers={"Authorization": f"Bearer {stack.api_token}"})
    assert statuses[: DEFAULTS.lockout_failures] == [401] * DEFAULTS.lockout_failures
    assert set(statuses[DEFAULTS.lockout_failures :]) == {429}
    assert right.status_code == 429  # the address stays locked out, whatever it presents
    write_figures("rate-limit-api", {"wrong_tokens": FLOOD, "answered_401": statuses.count(401)})


async def test_a_sign_in_flood_is_limited_per_address(stack: Stack) -> None:
    statuses: list[int] = []
    async with httpx.AsyncClient(base_url=stack.url, timeout=10) as http:
        for n in range(FLOOD):
            response = await http.post("/audit/login", data={"token": f"guess-{n:04d}", "next": "/audit"})
            statuses.append(response.status_code)
        right = await http.post("/audit/login", data={"token": stack.api_token, "next": "/audit"})
    allowed = min(DEFAULTS.login_attempts, DEFAULTS.lockout_failures)
    assert statuses[:allowed] == [401] * allowed
    assert set(statuses[allowed:]) == {429}
    assert right.status_code == 429 and "retry-after" in right.headers
    write_figures("rate-limit-login", {"guesses": FLOOD, "answered_401": statuses.count(401)})
