"""The OTP gate under abuse: no single person can pass it (approvers come only from configured roles,
the proposer never approves, the shared service token approves nothing), codes are limited per
change, one code never approves two changes, and the bearer token is required everywhere on the
admin API."""

from __future__ import annotations

from typing import Any

import httpx
from sqlmodel import col, select

from server.sandbox.stack import Stack
from server.store.db import read_scope
from server.store.tables import AuditEntry
from tests.server.changes.people import ALICE_PHONE, ERIN_PHONE, person

from .conftest import APPROVER, row_counts


def customers(stack: Stack) -> list[dict[str, object]]:
    return stack.bc_sim.records(stack.bc_sim.companies[0], "customers")


async def propose(
    api: httpx.AsyncClient, stack: Stack, record_id: object, email: str, approver: str = "treasury"
) -> httpx.Response:
    return await api.post(
        "/api/changes",
        json={
            "entity": "customers",
            "record_id": record_id,
            "company_id": stack.bc_sim.companies[0],
            "changes": {"email": email},
            "approver": approver,
        },
    )


def refusals(stack: Stack) -> list[tuple[str, dict[str, Any]]]:
    with read_scope(stack.services.db) as session:
        rows = session.exec(
            select(AuditEntry).where(AuditEntry.action == "change.refused").order_by(col(AuditEntry.id))
        ).all()
        return [(r.actor, dict(r.details)) for r in rows]


def patches(stack: Stack) -> list[dict[str, Any]]:
    return stack.bc_sim.requests(method="PATCH")


async def test_a_number_as_approver_is_refused_and_nothing_is_sent(stack: Stack) -> None:
    target = customers(stack)[0]
    before = row_counts(stack)
    async with person(stack, "alice") as alice:
        # The proposer naming her own phone was the self-approval path: a number is never accepted,
        # in any spelling, and not even when it belongs to a configured approver.
        for number in (ALICE_PHONE, "07700 900111", APPROVER):
            answer = await propose(alice, stack, target["id"], "mine@example.com", approver=number)
            assert answer.status_code == 400, answer.text
            assert answer.json()["detail"].startswith("approver: a phone number is not accepted"), answer.text
    assert stack.twilio_sim.verifications() == []
    assert row_counts(stack)["pending_changes"] == before["pending_changes"]
    assert [actor for actor, details in refusals(stack) if details["field"] == "approver"] == ["alice"] * 3


async def test_the_proposer_cannot_approve_her_own_change(stack: Stack) -> None:
    target = customers(stack)[0]
    async with person(stack, "alice") as alice, person(stack, "erin") as erin:
        # 'payables' has alice and erin: alice proposes, so the code goes to erin, never to alice.
        created = await propose(alice, stack, target["id"], "paid@example.com", approver="payables")
        assert created.status_code == 201, created.text
        change = created.json()
        assert (change["approver"], change["approver_identity"], change["requested_by"]) == (
            ERIN_PHONE,
            "erin",
            "alice",
        )
        [verification] = stack.twilio_sim.verifications()
        assert verification["to"] == ERIN_PHONE
        code = verification["code"]
        url = f"/api/changes/{change['id']}/confirm"
        # Alice holds erin's code (read over her shoulder): her own token still cannot confirm.
        own = await alice.post(url, json={"code": code})
        assert own.status_code == 403, own.text
        assert own.json()["detail"] == f"change {change['id']}: the proposer never approves their own change"
        # The shared service token approves nothing.
        async with httpx.AsyncClient(
            base_url=stack.url, headers={"Authorization": f"Bearer {stack.api_token}"}
        ) as service:
            shared = await service.post(url, json={"code": code})
        assert shared.status_code == 403, shared.text
        assert patches(stack) == []
        assert (await alice.get(f"/api/changes/{change['id']}")).json()["attempts"] == 0  # no code used
        done = await erin.post(url, json={"code": code})
        assert done.status_code == 200, done.text
    assert len(patches(stack)) == 1
    assert [(actor, details["reason"]) for actor, details in refusals(stack)] == [
        ("alice", "the proposer never approves their own change"),
        ("service", "only erin, the approver chosen for it, can confirm"),
    ]


async def test_a_role_whose_only_member_is_the_proposer_is_refused(stack: Stack) -> None:
    target = customers(stack)[0]
    async with person(stack, "alice") as alice:
        answer = await propose(alice, stack, target["id"], "solo@example.com", approver="ap-clerks")
    assert answer.status_code == 409, answer.text
    assert answer.json()["detail"] == (
        "approver: role 'ap-clerks' has no member other than alice, who proposes; "
        "the proposer never approves their own change"
    )
    assert stack.twilio_sim.verifications() == []
    [(actor, details)] = refusals(stack)
    assert actor == "alice" and details["role"] == "ap-clerks"


async def test_the_service_token_cannot_propose(stack: Stack, api: httpx.AsyncClient) -> None:
    # The shared token is nobody in particular: a change proposed with it would have no accountable
    # proposer, so the four-eyes rule could not hold.
    answer = await propose(api, stack, customers(stack)[0]["id"], "svc@example.com")
    assert answer.status_code == 403, answer.text
    assert "personal token" in answer.json()["detail"]
    assert stack.twilio_sim.verifications() == []
    assert refusals(stack)[0][0] == "service"


async def test_requested_by_in_the_body_is_refused(stack: Stack) -> None:
    async with person(stack, "bob") as bob:
        answer = await bob.post(
            "/api/changes",
            json={
                "entity": "customers",
                "record_id": customers(stack)[0]["id"],
                "changes": {"email": "who@example.com"},
                "approver": "treasury",
                "requested_by": "someone else",
            },
        )
    assert answer.status_code == 400
    assert "requested_by" in answer.text
    assert stack.twilio_sim.verifications() == []


async def test_one_code_can_never_approve_two_changes(stack: Stack) -> None:
    first, second = customers(stack)[:2]
    async with person(stack, "alice") as alice:
        created = await propose(alice, stack, first["id"], "first@example.com")
        assert created.status_code == 201, created.text
        # Twilio Verify sends the SAME code to a number while a verification is pending, so a second
        # change for that approver would be approved by the first change's code: refused, not a 500.
        before = row_counts(stack)
        refused = await propose(alice, stack, second["id"], "second@example.com")
    assert refused.status_code == 409, refused.text
    assert f"change {created.json()['id']}" in refused.json()["detail"]
    assert row_counts(stack)["pending_changes"] == before["pending_changes"]
    assert len(stack.twilio_sim.verifications()) == 1


async def test_wrong_codes_are_limited_per_change(stack: Stack) -> None:
    target = customers(stack)[0]
    async with person(stack, "alice") as alice, person(stack, "dave") as dave:
        created = await propose(alice, stack, target["id"], "limited@example.com")
        change_id = created.json()["id"]
        real = stack.twilio_sim.verification_code(APPROVER)
        wrong = "000000" if real != "000000" else "111111"
        outcomes = []
        for _ in range(5):
            answer = await dave.post(f"/api/changes/{change_id}/confirm", json={"code": wrong})
            outcomes.append(answer.status_code)
        assert outcomes[:2] == [400, 400] and outcomes[2] == 429  # max_attempts=3, then rejected
        assert all(code == 409 for code in outcomes[3:])
        # Even the right code cannot revive a rejected change, and nothing reached BC.
        late = await dave.post(f"/api/changes/{change_id}/confirm", json={"code": real})
    assert late.status_code == 409
    assert [r for r in patches(stack) if target["id"] in r["path"]] == []
