"""A replayed inbound START after a STOP, against the real service (`ml-connector serve`).

The handset behind ALERT texts STOP, START, STOP: the simulator delivers each to the connector's
inbound webhook, signed. Then a captured copy of the START request, byte for byte with Twilio's own
signature, is posted again. BC changes follow that call for texts to ALERT and AUDIT. Counted from
the Twilio simulator's own lists: nothing to ALERT (not even a create Twilio refused with 21610),
every AUDIT text exactly once, and the audit says `opted_out` for each ALERT job.
"""

from __future__ import annotations

from collections import Counter
from urllib.parse import urlencode

import httpx
import pytest

from .conftest import ALERT, AUDIT, FINAL, World, eventually, write_figures

pytestmark = pytest.mark.timeout(180)


@pytest.mark.parametrize("database_url", ["sqlite", "postgres"], indirect=True)
async def test_a_replayed_start_after_a_stop_sends_nothing_to_the_number(
    world: World, database_url: str
) -> None:
    connector, bc, twilio = world.connector, world.bc, world.twilio
    connector.start()
    await connector.wait_healthy()

    async def subscribed() -> bool:
        return len(bc.subscriptions()) == 2

    await eventually(subscribed, what="subscriptions created")
    for word in ("STOP", "START", "STOP"):
        assert await twilio.asend_inbound(ALERT, word) == 200
    start = next(c for c in twilio.callbacks(kind="inbound") if ("Body", "START") in c.params)
    headers = {"X-Twilio-Signature": start.signature, "Content-Type": "application/x-www-form-urlencoded"}
    async with httpx.AsyncClient(timeout=10) as http:
        replayed = await http.post(start.url, content=urlencode(start.params).encode(), headers=headers)
    assert replayed.status_code == 200

    # Balances over 500: each customer calls for one text to ALERT and one to AUDIT.
    world.create_customers(5, start=60)
    want = world.expected()
    assert sum(n for (to, _), n in want.items() if to == ALERT) == 5

    async def final() -> bool:
        await twilio.asettle()
        rows = await world.audit()
        return len(rows) == sum(want.values()) and all(r["status"] in FINAL for r in rows)

    await eventually(final, within=90, what="every job final in the audit")
    outbound = Counter((m["to"], m["body"]) for m in twilio.messages() if m.get("direction") != "inbound")
    creates_to_alert = [
        r
        for r in twilio.requests(path_contains="/Messages.json")
        if r.method == "POST" and r.form_dict().get("To") == [ALERT]
    ]
    rows = await world.audit()
    figures = {
        "expected_to_alert": 0,
        "sent_to_alert": sum(n for (to, _), n in outbound.items() if to == ALERT),
        "creates_to_alert": len(creates_to_alert),
        "expected_to_audit": sum(n for (to, _), n in want.items() if to == AUDIT),
        "sent_to_audit": sum(n for (to, _), n in outbound.items() if to == AUDIT),
        "duplicated": sum(n - 1 for n in outbound.values() if n > 1),
    }
    write_figures(f"inbound_replay_{database_url.split(':')[0]}", figures)
    assert figures["sent_to_alert"] == 0 and figures["creates_to_alert"] == 0, figures
    assert figures["sent_to_audit"] == figures["expected_to_audit"] == 5, figures
    assert figures["duplicated"] == 0, figures
    assert sorted(r["status"] for r in rows if r["recipient"] == ALERT) == ["opted_out"] * 5
