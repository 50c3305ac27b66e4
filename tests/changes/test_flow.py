"""Propose -> Verify code -> PATCH with If-Match, over real HTTP against both simulators."""

from __future__ import annotations

from typing import Any

import httpx
from sqlmodel import select

from server.sandbox.stack import Stack
from server.store.db import read_scope
from server.store.tables import AuditEntry
from tests.changes.conftest import APPROVER, record_id

NEW_IBAN = "GB82WEST12345698765432"


def audit_actions(stack: Stack, change_id: int) -> list[str]:
    with read_scope(stack.services.db) as session:
        rows = session.exec(
            select(AuditEntry).where(AuditEntry.subject == f"change:{change_id}").order_by(AuditEntry.id)
        ).all()
        return [r.action for r in rows]


def bank_patches(stack: Stack) -> list[dict[str, Any]]:
    return stack.bc_sim.requests(path_contains="vendorBankAccounts", method="PATCH")


async def propose_bank_change(api: httpx.AsyncClient, stack: Stack, **extra: Any) -> dict[str, Any]:
    account = record_id(stack, "vendorBankAccounts", "code", "MAIN")
    body = {
        "entity": "vendorBankAccounts",
        "record_id": account,
        "company_id": stack.bc_sim.companies[0],
        "changes": {"iban": "gb82 west 1234 5698 7654 32", "bankAccountNumber": "98765432"},
        "approver": APPROVER,
        "requested_by": "alice@finance.example",
        **extra,
    }
    response = await api.post("/api/changes", json=body)
    assert response.status_code == 201, response.text
    data: dict[str, Any] = response.json()
    return data


async def test_approved_code_writes_the_bank_details_once_with_if_match(
    stack: Stack, api: httpx.AsyncClient
) -> None:
    company = stack.bc_sim.companies[0]
    account = record_id(stack, "vendorBankAccounts", "code", "MAIN")
    etag_before = stack.bc_sim.get_record(company, "vendorBankAccounts", account)["@odata.etag"]

    change = await propose_bank_change(api, stack)
    assert change["status"] == "pending"
    assert change["changes"] == {"iban": NEW_IBAN, "bankAccountNumber": "98765432"}
    assert bank_patches(stack) == []  # nothing written before the code is checked
    [verification] = [v for v in stack.twilio_sim.verifications() if v["to"] == APPROVER]
    assert verification["channel"] == "sms"

    code = stack.twilio_sim.verification_code(APPROVER)
    assert code is not None
    confirmed = await api.post(f"/api/changes/{change['id']}/confirm", json={"code": code})
    assert confirmed.status_code == 200, confirmed.text
    assert confirmed.json()["outcome"] == "written"
    assert confirmed.json()["change"]["status"] == "written"

    [patch] = bank_patches(stack)
    assert patch["headers"]["if-match"] == etag_before
    record = stack.bc_sim.get_record(company, "vendorBankAccounts", account)
    assert record["iban"] == NEW_IBAN
    assert record["bankAccountNumber"] == "98765432"

    again = await api.post(f"/api/changes/{change['id']}/confirm", json={"code": code})
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
