"""The OTP gate under abuse: codes are limited per change, one code never approves two changes, and the
bearer token is required everywhere on the admin API."""

from __future__ import annotations

import httpx

from server.sandbox.stack import Stack

from .conftest import APPROVER, row_counts


def customers(stack: Stack) -> list[dict[str, object]]:
    return stack.bc_sim.records(stack.bc_sim.companies[0], "customers")


async def propose(api: httpx.AsyncClient, stack: Stack, record_id: object, email: str) -> httpx.Response:
    return await api.post(
        "/api/changes",
        json={
            "entity": "customers",
            "record_id": record_id,
            "company_id": stack.bc_sim.companies[0],
            "changes": {"email": email},
            "approver": APPROVER,
            "requested_by": "security suite",
        },
    )


async def test_one_code_can_never_approve_two_changes(stack: Stack, api: httpx.AsyncClient) -> None:
    first, second = customers(stack)[:2]
    created = await propose(api, stack, first["id"], "first@example.com")
    assert created.status_code == 201, created.text
    # Twilio Verify sends the SAME code to a number while a verification is pending, so a second change
    # for that approver would be approved by the first change's code: refused, clearly, not a 500.
    before = row_counts(stack)
    refused = await propose(api, stack, second["id"], "second@example.com")
    assert refused.status_code == 409, refused.text
    assert f"change {created.json()['id']}" in refused.json()["detail"]
    assert row_counts(stack)["pending_changes"] == before["pending_changes"]
    assert len(stack.twilio_sim.verifications()) == 1


async def test_wrong_codes_are_limited_per_change(stack: Stack, api: httpx.AsyncClient) -> None:
    target = customers(stack)[0]
    created = await propose(api, stack, target["id"], "limited@example.com")
    change_id = created.json()["id"]
    real = stack.twilio_sim.verification_code(APPROVER)
    wrong = "000000" if real != "000000" else "111111"
    outcomes = []
    for _ in range(5):
        answer = await api.post(f"/api/changes/{change_id}/confirm", json={"code": wrong})
        outcomes.append(answer.status_code)
    assert outcomes[:2] == [400, 400] and outcomes[2] == 429  # max_attempts=3, then rejected
    assert all(code == 409 for code in outcomes[3:])
    # Even the right code cannot revive a rejected change, and nothing reached BC.
    late = await api.post(f"/api/changes/{change_id}/confirm", json={"code": real})
    assert late.status_code == 409
    assert [r for r in stack.bc_sim.requests(method="PATCH") if target["id"] in r["path"]] == []
