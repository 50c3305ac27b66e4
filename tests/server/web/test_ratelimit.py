"""Rate limits and lockout on the bearer API and the audit sign-in, over real HTTP to the served app.

The counts live in the store, so they are checked on both backends; the clock is the manual one of
tests/conftest.py, so a window ends only when a test moves time (Retry-After is then exact).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import httpx
import pytest
from sqlmodel import select

from server.runtime.clock import ManualClock
from server.sandbox.stack import Stack
from server.settings import RateLimitSettings
from server.store.db import read_scope
from server.store.tables import AuditEntry

LIMITS = RateLimitSettings(
    api_per_token=5,
    api_per_ip=3,
    api_window_seconds=60,
    login_attempts=4,
    login_window_seconds=300,
    lockout_failures=3,
    lockout_window_seconds=300,
    lockout_seconds=900,
)
# The manual clock starts on a whole minute: a 60 s window has 60 s left, a 300 s one 300 s.
API_WINDOW_LEFT = "60"
LOGIN_WINDOW_LEFT = "300"
LOCKOUT_LEFT = "900"


@pytest.fixture
def stack_settings() -> dict[str, Any]:
    return {"rate_limits": LIMITS}


@pytest.fixture
async def http(stack: Stack) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=stack.url, timeout=30) as client:
        yield client


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


@dataclass(frozen=True)
class Lockout:
    actor: str
    subject: str
    details: dict[str, Any]


def lockout_events(stack: Stack) -> list[Lockout]:
    with read_scope(stack.services.db) as session:
        rows = session.exec(select(AuditEntry).where(AuditEntry.action == "rate-limit-lockout")).all()
        return [Lockout(row.actor, row.subject, dict(row.details)) for row in rows]


async def test_traffic_under_the_limits_is_unaffected(stack: Stack, http: httpx.AsyncClient) -> None:
    for _ in range(LIMITS.api_per_token):
        response = await http.get("/api/messages", headers=bearer(stack.api_token))
        assert response.status_code == 200
        assert "retry-after" not in response.headers
    assert lockout_events(stack) == []


async def test_requests_over_the_per_token_limit_get_429_until_the_window_ends(
    stack: Stack, http: httpx.AsyncClient, clock: ManualClock
) -> None:
    for _ in range(LIMITS.api_per_token):
        assert (await http.get("/api/messages", headers=bearer(stack.api_token))).status_code == 200
    over = await http.get("/api/messages", headers=bearer(stack.api_token))
    assert over.status_code == 429
    assert over.headers["retry-after"] == API_WINDOW_LEFT
    assert over.json() == {"status_code": 429, "detail": "too many requests: try again in 60 s"}
    # The bearer /metrics and audit pages share the token's count.
    assert (await http.get("/metrics", headers=bearer(stack.api_token))).status_code == 429
    assert (await http.get("/audit", headers=bearer(stack.api_token))).status_code == 429
    clock.advance(timedelta(seconds=60))
    assert (await http.get("/api/messages", headers=bearer(stack.api_token))).status_code == 200


async def test_requests_without_a_token_are_limited_per_ip(http: httpx.AsyncClient) -> None:
    for _ in range(LIMITS.api_per_ip):
        assert (await http.get("/api/messages")).status_code == 401
    over = await http.get("/api/messages")
    assert over.status_code == 429
    assert over.headers["retry-after"] == API_WINDOW_LEFT


async def test_wrong_tokens_lock_the_address_out_with_one_audit_event(
    stack: Stack, http: httpx.AsyncClient, clock: ManualClock
) -> None:
    for n in range(LIMITS.lockout_failures - 1):
        assert (await http.get("/api/messages", headers=bearer(f"guess-{n}"))).status_code == 401
    assert lockout_events(stack) == []
    # The failure that reaches the threshold is still answered 401, and starts the lockout.
    assert (await http.get("/api/messages", headers=bearer("guess-last"))).status_code == 401
    assert len(lockout_events(stack)) == 1
    for n in range(5):
        refused = await http.get("/api/messages", headers=bearer(f"more-{n}"))
        assert refused.status_code == 429
        assert refused.headers["retry-after"] == LOCKOUT_LEFT
    # Even the right token, from that address, waits for the lockout to end.
    locked = await http.get("/api/messages", headers=bearer(stack.api_token))
    assert locked.status_code == 429
    assert locked.json()["detail"] == "too many failed sign-ins: try again in 900 s"
    events = lockout_events(stack)
    assert len(events) == 1
    assert events[0].actor == "rate-limit"
    assert events[0].subject == "ip:127.0.0.1"
    assert events[0].details["failures"] == LIMITS.lockout_failures
    assert events[0].details["seconds"] == LIMITS.lockout_seconds
    text = repr((events[0].subject, events[0].details))
    assert "guess-" not in text and stack.api_token not in text
    clock.advance(timedelta(seconds=LIMITS.lockout_seconds))
    assert (await http.get("/api/messages", headers=bearer(stack.api_token))).status_code == 200


async def test_sign_in_attempts_are_limited_per_ip_with_an_html_answer(
    stack: Stack, http: httpx.AsyncClient
) -> None:
    for _ in range(LIMITS.login_attempts):
        ok = await http.post("/audit/login", data={"token": stack.api_token, "next": "/audit"})
        assert ok.status_code == 303
    over = await http.post("/audit/login", data={"token": stack.api_token, "next": "/audit"})
    assert over.status_code == 429
    assert over.headers["retry-after"] == LOGIN_WINDOW_LEFT
    assert over.headers["content-type"].startswith("text/html")
    assert "Too many sign-in attempts. Try again in 5 minutes." in over.text
    assert "mlc_audit_session" not in over.headers.get("set-cookie", "")


async def test_wrong_sign_ins_lock_out_even_the_right_token(stack: Stack, http: httpx.AsyncClient) -> None:
    for n in range(LIMITS.lockout_failures):
        wrong = await http.post("/audit/login", data={"token": f"guess-{n}", "next": "/audit"})
        assert wrong.status_code == 401
    right = await http.post("/audit/login", data={"token": stack.api_token, "next": "/audit"})
    assert right.status_code == 429
    assert right.headers["retry-after"] == LOCKOUT_LEFT
    assert "mlc_audit_session" not in right.headers.get("set-cookie", "")
    # The same address is locked out of the bearer API too.
    assert (await http.get("/api/messages", headers=bearer(stack.api_token))).status_code == 429
    assert [e.subject for e in lockout_events(stack)] == ["ip:127.0.0.1"]


async def test_webhooks_and_probes_are_never_limited(stack: Stack, http: httpx.AsyncClient) -> None:
    for n in range(LIMITS.lockout_failures):
        await http.get("/api/messages", headers=bearer(f"guess-{n}"))
    assert (await http.get("/api/messages", headers=bearer(stack.api_token))).status_code == 429
    for _ in range(3 * LIMITS.api_per_token):
        # BC's handshake (a 4xx would make BC delete the subscription), Twilio's signed callbacks
        # (refused on their signature, never on a count) and the probes.
        handshake = await http.post("/webhooks/bc", params={"validationToken": "abc"})
        assert handshake.status_code == 200 and handshake.text == "abc"
        assert (await http.post("/webhooks/twilio/status", data={"MessageSid": "SM1"})).status_code == 403
        assert (await http.get("/health")).status_code == 200
        assert (await http.get("/ready")).status_code == 200


async def test_forwarded_for_is_ignored_unless_the_proxy_is_trusted(http: httpx.AsyncClient) -> None:
    for n in range(LIMITS.lockout_failures):
        forged = {**bearer(f"guess-{n}"), "X-Forwarded-For": f"203.0.113.{n}"}
        assert (await http.get("/api/messages", headers=forged)).status_code == 401
    # Each guess claimed another address; the socket peer is what counted.
    again = {**bearer("guess-x"), "X-Forwarded-For": "198.51.100.7"}
    assert (await http.get("/api/messages", headers=again)).status_code == 429


@pytest.mark.parametrize(
    "stack_settings",
    [{"rate_limits": LIMITS.model_copy(update={"trusted_proxies": ["127.0.0.0/8"]})}],
)
async def test_a_trusted_proxy_names_the_client_in_forwarded_for(
    stack: Stack, http: httpx.AsyncClient
) -> None:
    attacker = "203.0.113.9, 127.0.0.2"  # the client as the first proxy saw it, then a trusted hop
    for n in range(LIMITS.lockout_failures):
        headers = {**bearer(f"guess-{n}"), "X-Forwarded-For": attacker}
        assert (await http.get("/api/messages", headers=headers)).status_code == 401
    locked = {**bearer(stack.api_token), "X-Forwarded-For": attacker}
    assert (await http.get("/api/messages", headers=locked)).status_code == 429
    other = {**bearer(stack.api_token), "X-Forwarded-For": "198.51.100.7"}
    assert (await http.get("/api/messages", headers=other)).status_code == 200
    assert [e.subject for e in lockout_events(stack)] == ["ip:203.0.113.9"]


@pytest.mark.parametrize("stack_settings", [{"rate_limits": LIMITS.model_copy(update={"enabled": False})}])
async def test_limits_can_be_switched_off(stack: Stack, http: httpx.AsyncClient) -> None:
    for n in range(3 * LIMITS.lockout_failures):
        assert (await http.get("/api/messages", headers=bearer(f"guess-{n}"))).status_code == 401
    assert (await http.get("/api/messages", headers=bearer(stack.api_token))).status_code == 200
