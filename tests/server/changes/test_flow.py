"""Propose -> Verify code -> PATCH with If-Match, over real HTTP against both simulators."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from typing import Any

import httpx
from sqlmodel import col, select

from server.runtime.clock import ManualClock
from server.sandbox.stack import Stack
from server.store.db import read_scope
from server.store.tables import AuditEntry, PendingChange
from tests.server.changes.conftest import APPROVER, CONTROLLER, record_id

NEW_IBAN = "GB82WEST12345698765432"


def audit_actions(stack: Stack, change_id: int) -> list[str]:
    with read_scope(stack.services.db) as session:
        rows = session.exec(
            select(AuditEntry).where(AuditEntry.subject == f"change:{change_id}").order_by(col(AuditEntry.id))
        ).all()
        return [r.action for r in rows]


def bc_record(stack: Stack, company: str, entity: str, record: str) -> dict[str, Any]:
    found = stack.bc_sim.get_record(company, entity, record)
    assert found is not None, f"no {entity} {record} in the simulator"
    return found


def bank_patches(stack: Stack) -> list[dict[str, Any]]:
    return stack.bc_sim.requests(path_contains="vendorBankAccounts", method="PATCH")


async def propose_bank_change(api: httpx.AsyncClient, stack: Stack, **extra: Any) -> dict[str, Any]:
    account = record_id(stack, "vendorBankAccounts", "code", "MAIN")
    body = {
        "entity": "vendorBankAccounts",
        "record_id": account,
        "company_id": stack.bc_sim.companies[0],
        "changes": {"iban": "gb82 west 1234 5698 7654 32", "bankAccountNumber": "98765432"},
        "approver": "treasury",
        **extra,
    }
    response = await api.post("/api/changes", json=body)
    assert response.status_code == 201, response.text
    data: dict[str, Any] = response.json()
    return data


async def test_approved_code_writes_the_bank_details_once_with_if_match(
    stack: Stack, alice: httpx.AsyncClient, dave: httpx.AsyncClient
) -> None:
    company = stack.bc_sim.companies[0]
    account = record_id(stack, "vendorBankAccounts", "code", "MAIN")
    etag_before = bc_record(stack, company, "vendorBankAccounts", account)["@odata.etag"]

    change = await propose_bank_change(alice, stack)
    assert change["status"] == "pending"
    assert (change["requested_by"], change["approver_identity"]) == ("alice", "dave")
    assert change["changes"] == {"iban": NEW_IBAN, "bankAccountNumber": "98765432"}
    assert bank_patches(stack) == []  # nothing written before the code is checked
    [verification] = [v for v in stack.twilio_sim.verifications() if v["to"] == APPROVER]
    assert verification["channel"] == "sms"

    code = stack.twilio_sim.verification_code(APPROVER)
    assert code is not None
    confirmed = await dave.post(f"/api/changes/{change['id']}/confirm", json={"code": code})
    assert confirmed.status_code == 200, confirmed.text
    assert confirmed.json()["outcome"] == "written"
    assert confirmed.json()["change"]["status"] == "written"

    [patch] = bank_patches(stack)
    assert patch["headers"]["if-match"] == etag_before
    record = bc_record(stack, company, "vendorBankAccounts", account)
    assert record["iban"] == NEW_IBAN
    assert record["bankAccountNumber"] == "98765432"

    again = await dave.post(f"/api/changes/{change['id']}/confirm", json={"code": code})
    assert again.status_code == 409
    assert "only a pending change can be confirmed" in again.text
    assert len(bank_patches(stack)) == 1  # never twice

    assert audit_actions(stack, change["id"]) == [
        "change.proposed",
        "change.verification_started",
        "change.approved",
        "change.writing",
        "change.written",
    ]


def wrong(code: str) -> str:
    return "000000" if code != "000000" else "111111"


async def test_wrong_codes_are_counted_then_the_change_is_rejected(
    stack: Stack, alice: httpx.AsyncClient, dave: httpx.AsyncClient
) -> None:
    change = await propose_bank_change(alice, stack)
    code = stack.twilio_sim.verification_code(APPROVER)
    assert code is not None
    url = f"/api/changes/{change['id']}/confirm"
    first = await dave.post(url, json={"code": wrong(code)})
    assert first.status_code == 400
    assert first.json()["outcome"] == "wrong_code"
    assert first.json()["message"] == "wrong code; 2 attempt(s) left"
    assert first.json()["change"]["status"] == "pending"
    assert (await dave.post(url, json={"code": wrong(code)})).json()["change"]["attempts"] == 2
    third = await dave.post(url, json={"code": wrong(code)})
    assert third.status_code == 429
    assert third.json()["change"]["status"] == "rejected"
    assert third.json()["change"]["reason"] == "too many wrong codes"
    # The right code no longer helps, and the verification was closed at Twilio.
    late = await dave.post(url, json={"code": code})
    assert late.status_code == 409
    assert [v["status"] for v in stack.twilio_sim.verifications()] == ["canceled"]
    assert bank_patches(stack) == []
    assert audit_actions(stack, change["id"])[2:] == [
        "change.code_wrong",
        "change.code_wrong",
        "change.code_wrong",
        "change.rejected",
    ]


async def test_twilio_check_limit_60202_rejects(
    stack: Stack, alice: httpx.AsyncClient, dave: httpx.AsyncClient
) -> None:
    change = await propose_bank_change(alice, stack)
    code = stack.twilio_sim.verification_code(APPROVER)
    assert code is not None
    # Someone burns Twilio's five checks outside the gate: the next check is 429 / 60202.
    for _ in range(5):
        result = await stack.services.twilio.check_verification(wrong(code), to=APPROVER)
        assert result.status == "pending"
    response = await dave.post(f"/api/changes/{change['id']}/confirm", json={"code": code})
    assert response.status_code == 429
    assert response.json()["change"]["status"] == "rejected"
    assert response.json()["change"]["reason"] == "too many attempts (Twilio 60202)"
    assert bank_patches(stack) == []


async def test_expired_code_20404_is_recorded(
    stack: Stack, alice: httpx.AsyncClient, dave: httpx.AsyncClient, clock: ManualClock
) -> None:
    change = await propose_bank_change(alice, stack)
    code = stack.twilio_sim.verification_code(APPROVER)
    assert code is not None
    clock.advance(timedelta(minutes=11))  # Verify codes live 10 minutes; the change 15
    response = await dave.post(f"/api/changes/{change['id']}/confirm", json={"code": code})
    assert response.status_code == 410
    assert response.json()["outcome"] == "code_expired"
    assert response.json()["change"]["reason"] == "the code expired or was already used (Twilio 20404)"
    assert bank_patches(stack) == []


async def test_unconfirmed_change_expires(
    stack: Stack, alice: httpx.AsyncClient, dave: httpx.AsyncClient, clock: ManualClock
) -> None:
    change = await propose_bank_change(alice, stack)
    code = stack.twilio_sim.verification_code(APPROVER)
    assert code is not None
    clock.advance(timedelta(minutes=16))
    shown = await alice.get(f"/api/changes/{change['id']}")
    assert shown.json()["status"] == "expired"
    response = await dave.post(f"/api/changes/{change['id']}/confirm", json={"code": code})
    assert response.status_code == 410
    assert response.json()["outcome"] == "expired"
    assert bank_patches(stack) == []
    assert audit_actions(stack, change["id"])[-1] == "change.expired"


async def test_record_changed_in_bc_meanwhile_is_a_conflict(
    stack: Stack, alice: httpx.AsyncClient, dave: httpx.AsyncClient
) -> None:
    company = stack.bc_sim.companies[0]
    account = record_id(stack, "vendorBankAccounts", "code", "MAIN")
    change = await propose_bank_change(alice, stack)
    stack.bc_sim.update_record(company, "vendorBankAccounts", account, {"name": "Renamed in BC"})
    code = stack.twilio_sim.verification_code(APPROVER)
    assert code is not None
    response = await dave.post(f"/api/changes/{change['id']}/confirm", json={"code": code})
    assert response.status_code == 409
    assert response.json()["outcome"] == "conflict"
    assert response.json()["change"]["status"] == "conflict"
    [patch] = bank_patches(stack)
    assert patch["status"] == 409
    record = bc_record(stack, company, "vendorBankAccounts", account)
    assert record["iban"] != NEW_IBAN
    assert record["name"] == "Renamed in BC"


async def test_racing_confirmations_write_once(
    stack: Stack, alice: httpx.AsyncClient, dave: httpx.AsyncClient
) -> None:
    change = await propose_bank_change(alice, stack)
    code = stack.twilio_sim.verification_code(APPROVER)
    assert code is not None
    url = f"/api/changes/{change['id']}/confirm"
    responses = await asyncio.gather(*(dave.post(url, json={"code": code}) for _ in range(4)))
    statuses = sorted(r.status_code for r in responses)
    assert statuses.count(200) == 1
    assert set(statuses) - {200} <= {409}
    assert len(bank_patches(stack)) == 1
    actions = audit_actions(stack, change["id"])
    assert actions.count("change.written") == 1
    assert "change.code_expired" not in actions  # a racing 20404 must not end an approved change


async def test_bc_unavailable_keeps_the_approval_and_a_second_confirm_writes(
    stack: Stack, alice: httpx.AsyncClient, dave: httpx.AsyncClient
) -> None:
    change = await propose_bank_change(alice, stack)
    code = stack.twilio_sim.verification_code(APPROVER)
    assert code is not None
    stack.bc_sim.inject_fault(status=503, retry_after=0, remaining=None, method="PATCH")
    url = f"/api/changes/{change['id']}/confirm"
    busy = await dave.post(url, json={"code": code})
    assert busy.status_code == 503
    assert "the approval stands" in busy.text
    assert (await alice.get(f"/api/changes/{change['id']}")).json()["status"] == "approved"
    stack.bc_sim.clear_faults()
    # The verification is used up (20404 now); the recorded approval is what allows the retry.
    retried = await dave.post(url, json={"code": code})
    assert retried.status_code == 200, retried.text
    assert retried.json()["change"]["status"] == "written"


async def test_role_approver_by_call_on_a_standard_vendor(
    stack: Stack, alice: httpx.AsyncClient, carol: httpx.AsyncClient
) -> None:
    company = stack.bc_sim.companies[0]
    vendor = record_id(stack, "vendors", "number", "V01050")
    response = await alice.post(
        "/api/changes",
        json={
            "entity": "vendors",
            "record_id": vendor,
            "company_id": company,
            "changes": {"email": "remit@cascadepack.example", "addressLine1": "1 New Street"},
            "approver": "finance-controller",
            "channel": "call",
        },
    )
    assert response.status_code == 201, response.text
    assert response.json()["approver"] == CONTROLLER
    assert response.json()["approver_role"] == "finance-controller"
    assert response.json()["approver_identity"] == "carol"
    assert response.json()["requested_by"] == "alice"
    [verification] = stack.twilio_sim.verifications()
    assert (verification["to"], verification["channel"]) == (CONTROLLER, "call")
    confirmed = await carol.post(
        f"/api/changes/{response.json()['id']}/confirm", json={"code": verification["code"]}
    )
    assert confirmed.status_code == 200, confirmed.text
    [patch] = stack.bc_sim.requests(path_contains="/api/v2.0/", method="PATCH")
    assert f"vendors({vendor})" in patch["path"]
    assert bc_record(stack, company, "vendors", vendor)["email"] == "remit@cascadepack.example"
    with read_scope(stack.services.db) as session:
        written = session.exec(select(AuditEntry).where(AuditEntry.action == "change.written")).one()
        assert written.actor == "carol"  # the identity her token resolves to, not a name in the body
        row = session.get(PendingChange, response.json()["id"])
        assert row is not None and row.written_at is not None


async def test_list_and_show(stack: Stack, alice: httpx.AsyncClient) -> None:
    first = await propose_bank_change(alice, stack)
    second = await propose_bank_change(alice, stack, approver="finance-controller")
    listed = (await alice.get("/api/changes", params={"limit": 1})).json()
    assert [c["id"] for c in listed["items"]] == [second["id"]]
    rest = (await alice.get("/api/changes", params={"cursor": listed["next_cursor"]})).json()
    assert [c["id"] for c in rest["items"]] == [first["id"]]
    assert rest["next_cursor"] is None
    assert (await alice.get("/api/changes", params={"status": "written"})).json()["items"] == []
    bad = await alice.get("/api/changes", params={"status": "done"})
    assert bad.status_code == 400
    assert "status: unknown value(s) done" in bad.text
    assert (await alice.get("/api/changes/999")).status_code == 404
    assert (await alice.get("/api/changes", headers={"Authorization": "Bearer nope"})).status_code == 401


async def test_409_when_bc_already_holds_the_approved_values_counts_as_written(
    stack: Stack, alice: httpx.AsyncClient, dave: httpx.AsyncClient
) -> None:
    # What a retried PATCH sees when its first try went through: the etag moved, the values are ours.
    company = stack.bc_sim.companies[0]
    account = record_id(stack, "vendorBankAccounts", "code", "MAIN")
    change = await propose_bank_change(alice, stack)
    stack.bc_sim.update_record(
        company, "vendorBankAccounts", account, {"iban": NEW_IBAN, "bankAccountNumber": "98765432"}
    )
    code = stack.twilio_sim.verification_code(APPROVER)
    assert code is not None
    response = await dave.post(f"/api/changes/{change['id']}/confirm", json={"code": code})
    assert response.status_code == 200, response.text
    assert response.json()["message"] == "BC already holds the approved values"
    [patch] = bank_patches(stack)
    assert patch["status"] == 409
