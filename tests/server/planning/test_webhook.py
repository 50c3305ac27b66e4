"""`/webhooks/bc` over real loopback HTTP: handshake, clientState checks, store-then-202, BC's 4xx/5xx rules."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
import sqlalchemy as sa

from server.sandbox.stack import Stack
from server.store.tables import BcSubscription
from tests.server.planning.conftest import (
    GB,
    client_state_at_bc,
    inbox_rows,
    record_by_number,
    subscription_rows,
)

pytestmark = pytest.mark.timeout(60)


async def post(
    stack: Stack, body: Any = None, *, content: bytes | None = None, **params: str
) -> httpx.Response:
    async with httpx.AsyncClient(timeout=10) as client:
        if content is not None:
            return await client.post(f"{stack.url}/webhooks/bc", params=params, content=content)
        return await client.post(f"{stack.url}/webhooks/bc", params=params, json=body)


def item(
    sub: BcSubscription, secret: str, record_id: str, *, client_state: str | None = "keep", **extra: Any
) -> dict[str, Any]:
    out: dict[str, Any] = {
        "subscriptionId": sub.subscription_id,
        "clientState": secret if client_state == "keep" else client_state,
        "expirationDateTime": "2026-11-28T09:00:00Z",
        "resource": f"api/v2.0/companies({GB})/{sub.entity}({record_id})",
        "changeType": "updated",
        "lastModifiedDateTime": "2026-11-25T09:00:05Z",
    }
    if client_state is None:
        del out["clientState"]
    out.update(extra)
    return out


async def customers_subscription(stack: Stack) -> tuple[BcSubscription, str]:
    """The customers subscription and its clientState (as BC holds it: our store keeps a hash)."""
    await stack.run("subscriptions")
    sub = next(s for s in subscription_rows(stack, "active") if s.entity == "customers")
    return sub, client_state_at_bc(stack, sub)


@pytest.mark.parametrize("method", ["POST", "GET"])
async def test_handshake_echoes_the_token_as_plain_text(lite_stack: Stack, method: str) -> None:
    async with httpx.AsyncClient(timeout=10) as client:
        response = await client.request(
            method, f"{lite_stack.url}/webhooks/bc", params={"validationToken": "abc-123_XYZ"}
        )
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    assert response.text == "abc-123_XYZ"


async def test_handshake_token_with_markup_is_only_ever_text(lite_stack: Stack) -> None:
    token = "<script>alert(1)</script>&amp;"
    async with httpx.AsyncClient(timeout=10) as client:
        response = await client.get(f"{lite_stack.url}/webhooks/bc", params={"validationToken": token})
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    assert response.text == token  # raw, unescaped, and never served as HTML


async def test_wrong_missing_or_unknown_client_state_is_refused_and_nothing_stored(stack: Stack) -> None:
    sub, secret = await customers_subscription(stack)
    adatum = record_by_number(stack, "customers", "C10000")["id"]
    wrong = await post(stack, {"value": [item(sub, secret, adatum, client_state="not-the-secret")]})
    missing = await post(stack, {"value": [item(sub, secret, adatum, client_state=None)]})
    unknown = await post(stack, {"value": [item(sub, secret, adatum, subscriptionId="0" * 32)]})
    for response in (wrong, missing, unknown):
        assert response.status_code == 403
        assert secret not in response.text
    assert inbox_rows(stack) == []


async def test_mixed_batch_stores_only_the_good_items_and_answers_202(lite_stack: Stack) -> None:
    sub, secret = await customers_subscription(lite_stack)
    adatum = record_by_number(lite_stack, "customers", "C10000")["id"]
    trey = record_by_number(lite_stack, "customers", "C10010")["id"]
    other_company = "00000000-0000-4000-8000-000000000001"
    body = {
        "value": [
            item(sub, secret, adatum),
            item(sub, secret, trey, client_state="forged"),
            item(sub, secret, trey, resource=f"api/v2.0/companies({other_company})/customers({trey})"),
            item(sub, secret, trey, changeType="exploded"),
        ]
    }
    response = await post(lite_stack, body)
    assert response.status_code == 202
    rows = inbox_rows(lite_stack)
    assert [(r.entity, r.record_id, r.change_type, r.status) for r in rows] == [
        ("customers", adatum, "updated", "pending")
    ]


async def test_an_overlong_record_id_is_dropped_not_a_batch_failure(stack: Stack) -> None:
    # The inbox's record_id is 64 characters: on PostgreSQL a longer one failed the whole insert,
    # and the 503 made BC retry the batch for 36 hours.
    sub, secret = await customers_subscription(stack)
    adatum = record_by_number(stack, "customers", "C10000")["id"]
    body = {"value": [item(sub, secret, "x" * 65), item(sub, secret, adatum)]}
    response = await post(stack, body)
    assert response.status_code == 202
    assert [r.record_id for r in inbox_rows(stack)] == [adatum]


async def test_malformed_json_is_2xx_and_stores_nothing(lite_stack: Stack) -> None:
    """Never a 4xx: BC deletes every subscription on the URL after one (codeunit 6154)."""
    for content in (b"{not json", b'{"items": []}', b'{"value": [{"resource": "\xff"}]}'):
        response = await post(lite_stack, content=content)
        assert response.status_code == 202, content
        assert response.text.startswith("nothing stored: "), response.text
    assert inbox_rows(lite_stack) == []


async def test_redelivery_of_the_same_notification_is_stored_once(stack: Stack) -> None:
    sub, secret = await customers_subscription(stack)
    adatum = record_by_number(stack, "customers", "C10000")["id"]
    body = {"value": [item(sub, secret, adatum)]}
    assert (await post(stack, body)).status_code == 202
    assert (await post(stack, body)).status_code == 202
    assert len(inbox_rows(stack)) == 1


async def test_database_failure_answers_503_so_bc_retries(lite_stack: Stack) -> None:
    sub, secret = await customers_subscription(lite_stack)
    adatum = record_by_number(lite_stack, "customers", "C10000")["id"]
    with lite_stack.services.db.begin() as conn:
        conn.execute(sa.text("ALTER TABLE notification_inbox RENAME TO notification_inbox_away"))
    response = await post(lite_stack, {"value": [item(sub, secret, adatum)]})
    assert response.status_code == 503  # 5xx: BC retries for 36 hours; a 4xx would delete the subscription
    with lite_stack.services.db.begin() as conn:
        conn.execute(sa.text("ALTER TABLE notification_inbox_away RENAME TO notification_inbox"))
    assert (await post(lite_stack, {"value": [item(sub, secret, adatum)]})).status_code == 202
    assert len(inbox_rows(lite_stack)) == 1


async def test_notifications_from_the_simulator_are_stored_and_acknowledged(stack: Stack) -> None:
    await stack.run("subscriptions")
    adatum = record_by_number(stack, "customers", "C10000")
    stack.bc_sim.update_record(GB, "customers", adatum["id"], {"phoneNumber": "+44 20 7946 0019"})
    assert await stack.bc_sim.aflush_notifications() == ["delivered"]
    rows = inbox_rows(stack)
    assert [(r.entity, r.record_id, r.change_type) for r in rows] == [("customers", adatum["id"], "updated")]
