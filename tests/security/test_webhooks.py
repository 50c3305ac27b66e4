"""Forged, unsigned and replayed webhooks; BC notifications with the wrong secret; handshake tokens with
markup. Each is refused (or answered exactly as the contract says) and changes nothing."""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import urlencode

import httpx
import pytest

from server.sandbox.stack import Stack
from server.twilio.signatures import sign

from .conftest import row_counts, write_figures

STATUS = "/webhooks/twilio/status"
INBOUND = "/webhooks/twilio/inbound"
FORM = {"Content-Type": "application/x-www-form-urlencoded"}


def signed(stack: Stack, path: str, params: dict[str, str], *, token: str | None = None) -> dict[str, str]:
    url = stack.url + path
    return {
        **FORM,
        "X-Twilio-Signature": sign(url, list(params.items()), token or stack.twilio_sim.auth_token),
    }


async def test_twilio_callbacks_unsigned_forged_or_replayed_change_nothing(stack: Stack) -> None:
    params = {"MessageSid": "SM" + "a" * 32, "MessageStatus": "delivered", "AccountSid": "AC" + "b" * 32}
    stop = {
        "From": "+447700900555",
        "To": stack.twilio_sim.from_number,
        "Body": "STOP",
        "MessageSid": "SM" + "c" * 32,
    }
    before = row_counts(stack)
    attempts = 0
    async with httpx.AsyncClient(base_url=stack.url, timeout=10) as http:
        for path, body in ((STATUS + "?job=j1", params), (INBOUND, stop)):
            good = signed(stack, path, body)
            cases: list[tuple[dict[str, str], dict[str, str]]] = [
                (FORM, body),  # unsigned
                ({**FORM, "X-Twilio-Signature": "AAAA"}, body),  # garbage
                (signed(stack, path, body, token="not-the-auth-token"), body),  # signed with another key
                (good, {**body, "MessageStatus": "failed", "Body": "START"}),  # replayed, params changed
                (good, {**body, "Extra": "1"}),  # replayed with a parameter added
            ]
            for headers, sent in cases:
                response = await http.post(path, content=urlencode(sent), headers=headers)
                attempts += 1
                assert response.status_code == 403, (path, sent, response.text)
            # A signed callback for a message we never sent: accepted (Twilio must not retry) and ignored.
            if path.startswith(STATUS):
                response = await http.post(path, content=urlencode(body), headers=good)
                assert response.status_code == 200
    assert row_counts(stack) == before
    write_figures("webhooks-twilio", {"forged_or_replayed": attempts, "accepted": 0})


@pytest.mark.parametrize("method", ["GET", "POST"])
async def test_validation_token_with_markup_is_echoed_as_plain_text(stack: Stack, method: str) -> None:
    token = '<script>alert("x")</script><img src=x onerror=alert(1)>&amp;'
    async with httpx.AsyncClient(base_url=stack.url, timeout=10) as http:
        response = await http.request(method, "/webhooks/bc", params={"validationToken": token})
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    assert response.text == token


async def test_bc_notifications_with_a_wrong_secret_or_unknown_subscription_are_dropped(stack: Stack) -> None:
    await stack.run("subscriptions")
    subs = stack.bc_sim.subscriptions()
    assert subs, "the subscription manager created subscriptions with BC's handshake"
    sub = subs[0]
    company = stack.bc_sim.companies[0]
    entity = sub["resource"].rsplit("/", 1)[-1]
    record = stack.bc_sim.records(company, entity)[0]["id"]

    def item(**overrides: Any) -> dict[str, Any]:
        base = {
            "subscriptionId": sub["subscriptionId"],
            "clientState": "wrong-secret",
            "expirationDateTime": sub["expirationDateTime"],
            "resource": f"api/v2.0/companies({company})/{entity}({record})",
            "changeType": "updated",
            "lastModifiedDateTime": "2026-11-25T09:00:00Z",
        }
        base.update(overrides)
        return {k: v for k, v in base.items() if v is not None}

    bodies = [
        {"value": [item()]},  # wrong clientState
        {"value": [item(clientState=None)]},  # missing clientState
        {"value": [item(subscriptionId="0" * 32)]},  # unknown subscription
        {"value": [item(subscriptionId="0" * 32, clientState=sub.get("clientState"))]},
        {"value": [item(clientState="wrong-secret" * 200)]},
    ]
    before = row_counts(stack)
    async with httpx.AsyncClient(base_url=stack.url, timeout=10) as http:
        for body in bodies:
            response = await http.post(
                "/webhooks/bc", content=json.dumps(body), headers={"Content-Type": "application/json"}
            )
            # 403, not 404/400: BC deletes a subscription after any other 4xx but 408/429, and a forger
            # learns nothing about which subscriptions exist.
            assert response.status_code == 403, response.text
    assert row_counts(stack) == before
    write_figures("webhooks-bc", {"forged": len(bodies), "stored": 0})


async def test_admin_api_needs_the_bearer_token(stack: Stack) -> None:
    async with httpx.AsyncClient(base_url=stack.url, timeout=10) as http:
        for path in ("/api/messages", "/api/changes", "/api/pauses", "/api/messages/x", "/api/changes/1"):
            for headers in (
                {},
                {"Authorization": "Bearer wrong"},
                {"Authorization": stack.api_token},
                {"Authorization": f"Bearer {stack.api_token}x"},
                {"Authorization": f"Basic {stack.api_token}"},
            ):
                response = await http.get(path, headers=headers)
                assert response.status_code == 401, (path, headers, response.status_code)
                assert stack.api_token not in response.text
            ok = await http.get(path, headers={"Authorization": f"Bearer {stack.api_token}"})
            assert ok.status_code in (200, 404)
