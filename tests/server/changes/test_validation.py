"""Bad proposals get a 400 naming the field, and nothing is stored or sent."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from server.sandbox.stack import Stack
from tests.server.changes.conftest import APPROVER, record_id


def body(stack: Stack, **overrides: Any) -> dict[str, Any]:
    values: dict[str, Any] = {
        "entity": "vendorBankAccounts",
        "record_id": record_id(stack, "vendorBankAccounts", "code", "MAIN"),
        "company_id": stack.bc_sim.companies[0],
        "changes": {"iban": "GB82WEST12345698765432"},
        "approver": "treasury",
    }
    values.update(overrides)
    return values


CASES: list[tuple[dict[str, Any], str]] = [
    ({"changes": {"displayName": "x"}}, "changes.displayName: not a sensitive field of vendorBankAccounts"),
    ({"changes": {"iban": "GB82WEST12345698765433"}}, "changes.iban: IBAN check digits do not match"),
    ({"changes": {"swiftCode": "NOPE"}}, "changes.swiftCode: not a SWIFT/BIC code"),
    ({"changes": {"name": "x" * 101}}, "changes.name: 101 characters; BC allows at most 100"),
    ({"changes": {}}, "changes: give at least one field to change"),
    ({"entity": "items"}, "entity: unknown entity 'items'"),
    ({"record_id": "V01050"}, "record_id: not a GUID"),
    ({"company_id": None}, "company_id: required when more or fewer than one company is configured"),
    (
        {"company_id": "00000000-0000-0000-0000-000000000001"},
        "company_id: not one of the configured companies",
    ),
    (
        {"approver": "cfo"},
        "approver: 'cfo' is not a configured approver role (roles: ap-clerks, finance-controller, payables, "
        "treasury; MLC_CHANGES__APPROVER_ROLES)",
    ),
    ({"approver": APPROVER}, "approver: a phone number is not accepted"),
    ({"approver": "+44 12"}, "approver: a phone number is not accepted"),
    ({"record_id": "11111111-2222-4333-8444-555555555555"}, "record_id: BC has no vendorBankAccounts record"),
    ({"changes": {"bankAccountNumber": "41234567"}}, "changes: the record already holds these values"),
]


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
async def test_each_bad_field_is_named(stack: Stack, alice: httpx.AsyncClient) -> None:
    for overrides, expected in CASES:
        response = await alice.post("/api/changes", json=body(stack, **overrides))
        assert response.status_code == 400, (overrides, response.text)
        assert expected in response.json()["detail"], (overrides, response.text)
    extra = await alice.post("/api/changes", json={**body(stack), "etag": "*"})
    assert extra.status_code == 400
    assert "etag" in extra.text
    bad_channel = await alice.post("/api/changes", json=body(stack, channel="whatsapp"))
    assert bad_channel.status_code == 400
    assert "channel" in bad_channel.text
    assert (await alice.get("/api/changes")).json()["items"] == []
    assert stack.twilio_sim.verifications() == []
    assert stack.bc_sim.requests(method="PATCH") == []
    bad_code = await alice.post("/api/changes/1/confirm", json={"code": "12ab"})
    assert bad_code.status_code == 400
    assert "code: expected the 4-10 digit code" in bad_code.text


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
async def test_bank_page_not_configured_says_why(stack: Stack, alice: httpx.AsyncClient) -> None:
    stack.services.settings = stack.services.settings.model_copy(
        update={"changes": stack.services.settings.changes.model_copy(update={"bank_page_publisher": ""})}
    )
    response = await alice.post("/api/changes", json=body(stack))
    assert response.status_code == 400
    assert "standard API v2.0 has none" in response.json()["detail"]
