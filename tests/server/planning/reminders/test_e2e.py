"""End to end with both simulators and the connector on a real loopback port (SQLite):
a grouped reminder reaches the Twilio simulator as one text, and the pauses API over HTTP."""

from __future__ import annotations

from datetime import timedelta

import httpx
import pytest

from server.planning.sweep import Sweeper
from server.runtime.clock import ManualClock
from server.sandbox.stack import Stack
from simulators.bc.seeds.demo import GB_COMPANY_ID

pytestmark = pytest.mark.timeout(90)


@pytest.fixture
def stack_class() -> type[Stack]:
    """`stack` here is the plain Stack (not the folder's OneCompanyStack), on SQLite only."""
    return Stack


@pytest.fixture
def stack_url(sqlite_url: str) -> str:
    return sqlite_url


def _invoice(stack: Stack, number: str, due: str, amount: float) -> dict[str, object]:
    adatum = next(r for r in stack.bc_sim.records(GB_COMPANY_ID, "customers") if r["number"] == "C10000")
    return stack.bc_sim.create_record(
        GB_COMPANY_ID,
        "salesInvoices",
        {
            "number": number,
            "customerId": adatum["id"],
            "invoiceDate": "2026-10-26",
            "postingDate": "2026-10-26",
            "dueDate": due,
            "totalAmountIncludingTax": amount,
            "remainingAmount": amount,
            "status": "Open",
        },
    )


async def test_two_invoices_at_one_stage_reach_the_customer_as_one_text(
    stack: Stack, clock: ManualClock
) -> None:
    _invoice(stack, "PS-INV109101", "2026-11-30", 100.0)
    _invoice(stack, "PS-INV109102", "2026-11-30", 250.5)
    # Tuesday 1 Dec, 17:00 London (09:00 in Los Angeles): both one day overdue, inside every window.
    clock.advance(timedelta(days=6, hours=8))
    await Sweeper(stack.services, page_size=1).sweep_now()
    await stack.run("dispatcher")
    await stack.twilio_sim.asettle()
    texts = [m for m in stack.twilio_sim.messages() if m["to"] == "+442079460018"]
    grouped = [m for m in texts if "PS-INV109101" in m["body"]]
    assert len(grouped) == 1
    assert "PS-INV109102" in grouped[0]["body"] and "GBP 350.50" in grouped[0]["body"]
    assert grouped[0]["body"].startswith(
        "Adatum Corporation: 2 invoices (GBP 350.50) overdue since 30 Nov 2026"
    )


async def test_pauses_api_add_list_lift_over_http(stack: Stack) -> None:
    headers = {"Authorization": f"Bearer {stack.api_token}"}
    async with httpx.AsyncClient(base_url=stack.url, timeout=10) as client:
        assert (await client.get("/api/pauses")).status_code == 401
        bad = await client.post(
            "/api/pauses",
            headers=headers,
            json={"scope": "customer", "subject": "C10000", "until": "someday"},
        )
        assert bad.status_code == 400 and "until" in bad.text
        made = await client.post(
            "/api/pauses",
            headers=headers,
            json={
                "scope": "customer",
                "subject": "C10000",
                "until": "2026-12-15",
                "reason": "promise to pay",
            },
        )
        assert made.status_code == 201, made.text
        pause = made.json()
        # A date means "through that day" in the business time zone (London): reminders resume on the 16th.
        assert (pause["scope"], pause["subject"], pause["until"], pause["active"]) == (
            "customer",
            "C10000",
            "2026-12-16T00:00:00Z",
            True,
        )
        listed = (await client.get("/api/pauses", headers=headers)).json()
        assert [p["id"] for p in listed] == [pause["id"]]
        lifted = await client.post(f"/api/pauses/{pause['id']}/lift", headers=headers)
        assert lifted.status_code == 200 and lifted.json()["active"] is False
        assert (await client.get("/api/pauses", headers=headers)).json() == []
        assert len((await client.get("/api/pauses?all=true", headers=headers)).json()) == 1
        assert (await client.post(f"/api/pauses/{pause['id']}/lift", headers=headers)).status_code == 404
