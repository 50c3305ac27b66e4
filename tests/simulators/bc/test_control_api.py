"""The simulator's `/_sim` control API over HTTP (what a sandbox process uses to drive it)."""

from __future__ import annotations

import ssl
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import httpx
import pytest

from server.runtime.clock import ManualClock
from simulators.bc.simulator import BCSimulator


@pytest.fixture
def control(sim: BCSimulator) -> Iterator[httpx.Client]:
    ctx = ssl.create_default_context(cafile=str(sim.ca_cert_path))
    with httpx.Client(base_url=f"{sim.origin}/_sim", verify=ctx, trust_env=False) as http:
        yield http


def test_records_can_be_created_changed_and_deleted(
    sim: BCSimulator, control: httpx.Client, company: str
) -> None:
    created = control.post(
        f"/companies/{company}/customers", json={"displayName": "Control Co", "creditLimit": 500}
    )
    assert created.status_code == 201
    record: dict[str, Any] = created.json()
    assert record["number"] and record["balanceDue"] == 0 and record["@odata.etag"].startswith('W/"')
    changed = control.patch(f"/companies/{company}/customers/{record['id']}", json={"balanceDue": 600.5})
    assert changed.status_code == 200
    assert changed.json()["@odata.etag"] != record["@odata.etag"]
    assert sim.get_record(company, "customers", record["id"])["balanceDue"] == 600.5  # type: ignore[index]
    assert control.delete(f"/companies/{company}/customers/{record['id']}").status_code == 204
    assert sim.get_record(company, "customers", record["id"]) is None


def test_bad_control_input_names_the_field(control: httpx.Client, company: str) -> None:
    wrong_field = control.post(f"/companies/{company}/customers", json={"displayNme": "x"})
    assert wrong_field.status_code == 400
    assert wrong_field.json()["error"]["message"] == "customers: unknown field(s) displayNme"
    wrong_type = control.post(f"/companies/{company}/customers", json={"creditLimit": "lots"})
    assert wrong_type.json()["error"]["message"] == "customers.creditLimit: expected a JSON number, got str"
    wrong_fault = control.post("/faults", json={"status": 429, "retry": 1})
    assert wrong_fault.json()["error"]["message"] == "unknown fault field(s): retry"


def test_clock_tokens_config_and_seed(sim: BCSimulator, control: httpx.Client, clock: ManualClock) -> None:
    before = clock.now()
    assert control.post("/clock/advance", json={"seconds": 90}).status_code == 200
    assert clock.now() - before == timedelta(seconds=90)
    sim.state.issue_token()
    assert control.post("/tokens/expire").json() == {"expired": 1}
    assert control.post("/config", json={"collection_threshold": 5}).json() == {"collection_threshold": 5}
    assert control.post("/seed", json={"seed": "empty"}).json() == {"companies": [sim.companies[0]]}
    assert sim.records(sim.companies[0], "customers") == []
    assert control.post("/seed", json={"seed": "nope"}).status_code == 400
    info = control.get("/info").json()
    assert info["base_url"] == sim.base_url


def test_seed_is_relative_to_the_clock(sim: BCSimulator, company: str, clock: ManualClock) -> None:
    today = clock.now().date().isoformat()
    invoices = sim.records(company, "salesInvoices")
    open_ = [i for i in invoices if i["status"] == "Open" and i["remainingAmount"] > 0]
    assert any(i["dueDate"] < today for i in open_)  # overdue
    assert any(
        today <= i["dueDate"] <= (clock.now().date() + timedelta(days=3)).isoformat() for i in open_
    )  # due soon
    assert {i["status"] for i in invoices} == {"Open", "Paid", "Draft"}
    near = [
        c
        for c in sim.records(company, "customers")
        if c["creditLimit"] and c["balanceDue"] > 0.9 * c["creditLimit"]
    ]
    assert [c["displayName"] for c in near] == ["Tailspin Toys"]
    phones = [c["phoneNumber"] for c in sim.records(company, "customers")]
    assert {
        "+44 20 7946 0018",
        "020 7946 0123",
        "(415) 555-2671",
        "0161 496 0753 ext. 12",
        "12345",
        "",
    } <= set(phones)
    totals = [p["totalAmountIncludingTax"] for p in sim.records(company, "purchaseInvoices")]
    assert any(t > 10000 for t in totals) and any(t < 10000 for t in totals)
    assert {p["status"] for p in sim.records(company, "purchaseInvoices")} == {"Draft", "Open"}
