"""Each named crash point, for real: `ml-connector serve` exits abruptly (os._exit) at a step boundary,
is restarted, settles, and the promise still holds when checked from outside — every message the rules
call for is at Twilio exactly once and final in the audit, every approved change is in BC once.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
from collections import Counter
from typing import Any

import httpx
import pytest

from server.runtime.crashpoints import CRASH_EXIT_CODE, POINTS

from .conftest import World, backend_of, eventually, matrix, write_figures

pytestmark = pytest.mark.timeout(180)

# Points reached by BC changes flowing to Twilio (the message path).
MESSAGE_POINTS = (
    "webhook.bc.stored",
    "fetch.records_fetched",
    "outbox.inserted",
    "outbox.committed",
    "dispatch.accepted",
    "callback.applying",
)
BURST = 8
APPROVER = "+447700900199"
# Two people at the OTP gate: the clerk proposes, the approver confirms with their own token.
TOKENS = {name: f"{name}-{os.urandom(12).hex()}" for name in ("clerk", "approver", "other")}
OTP_ENV = {
    "MLC_API_IDENTITIES": json.dumps({n: hashlib.sha256(t.encode()).hexdigest() for n, t in TOKENS.items()}),
    "MLC_CHANGES__APPROVER_ROLES": json.dumps(
        {"treasury": {"approver": APPROVER}, "controller": {"other": "+447700900198"}}
    ),
}


async def subscribed(world: World) -> bool:
    return len(world.bc.subscriptions()) == 2 and await world.connector.healthy()


def test_every_point_is_exercised_here() -> None:
    covered = set(MESSAGE_POINTS) | {
        "subscription.renewing",
        "subscription.renewed",
        "change.approved",
        "change.patched",
    }
    assert covered == set(POINTS)


async def test_crash_at_every_point_of_the_message_path(world: World, database_url: str) -> None:
    """One crash per point, in sequence: each restart recovers the previous crash's work while the next
    burst arrives, and the next point kills it again. Checked once everything settled, per burst."""
    backend = backend_of(database_url)
    exits: dict[str, int] = {}
    bursts: dict[str, range] = {}
    made = 0
    for n, point in enumerate(MESSAGE_POINTS):
        world.connector.start(crash=point)
        if n == 0:
            await world.connector.wait_healthy()
            await eventually(lambda: subscribed(world), what="subscriptions created")
        world.create_customers(BURST, start=made)
        bursts[point] = range(made, made + BURST)
        made += BURST
        exits[point] = await world.connector.wait_exit()
        assert exits[point] == CRASH_EXIT_CODE, (point, world.connector.tail())

    world.connector.start()
    await world.connector.wait_healthy()
    want = world.expected()
    await world.wait_settled(want, within=120, what="all messages sent and final")
    await world.check_invariants(want)
    held = world.twilio_messages()
    for point, numbers in bursts.items():
        tags = {f"R{n:05d}" for n in numbers}
        mine = {key: count for key, count in want.items() if any(f" {tag} " in key[1] for tag in tags)}
        figures = {
            "expected": sum(mine.values()),
            "sent": sum(held[key] for key in mine),
            "duplicated": sum(max(0, held[key] - 1) for key in mine),
            "lost": sum(1 for key in mine if held[key] == 0),
            "audit_rows": sum(mine.values()),
            "not_final": 0,
        }
        write_figures(
            f"crash-{point}-{backend}", {"point": point, "backend": backend, "exit": exits[point], **figures}
        )


async def _propose(
    api: httpx.AsyncClient, world: World, record_id: str, changes: dict[str, str], approver: str = "treasury"
) -> int:
    response = await api.post(
        "/api/changes",
        json={
            "entity": "customers",
            "record_id": record_id,
            "company_id": world.company,
            "changes": changes,
            "approver": approver,
        },
    )
    assert response.status_code == 201, response.text
    change_id: int = response.json()["id"]
    return change_id


def _patches(world: World, record_id: str) -> list[dict[str, Any]]:
    return [r for r in world.bc.requests(method="PATCH") if record_id in r["path"]]


BOTH = ["sqlite", "postgres"]
OTP_POINTS = ["change.approved", "change.patched"]
RENEWAL_POINTS = ["subscription.renewing", "subscription.renewed"]


@pytest.mark.parametrize(
    ("database_url", "point"),
    matrix(list(zip(BOTH, OTP_POINTS, strict=True)), [(b, p) for b in BOTH for p in OTP_POINTS]),
    indirect=["database_url"],
)
async def test_crash_during_an_otp_gated_write(world: World, point: str, database_url: str) -> None:
    customers = world.bc.records(world.company, "customers")
    target, bystander = customers[0]["id"], customers[1]["id"]
    world.connector.start(crash=point, extra=OTP_ENV)
    await world.connector.wait_healthy()
    clerk = {"Authorization": f"Bearer {TOKENS['clerk']}"}
    headers = {"Authorization": f"Bearer {TOKENS['approver']}"}
    async with httpx.AsyncClient(base_url=world.connector.url, headers=clerk, timeout=30) as proposer:
        change_id = await _propose(proposer, world, target, {"email": "ap-new@example.com"})
        # A second change is proposed and never approved: it must never reach BC.
        await _propose(proposer, world, bystander, {"email": "never@example.com"}, approver="controller")
    code = world.twilio.verification_code(APPROVER)
    assert code is not None
    async with httpx.AsyncClient(base_url=world.connector.url, headers=headers, timeout=30) as api:
        with pytest.raises(httpx.HTTPError):  # the process dies while answering
            await api.post(f"/api/changes/{change_id}/confirm", json={"code": code})
    exit_code = await world.connector.wait_exit()
    assert exit_code == CRASH_EXIT_CODE, world.connector.tail()
    patched_before_restart = [p for p in _patches(world, target) if p["status"] == 200]
    assert len(patched_before_restart) == (1 if point == "change.patched" else 0)

    world.connector.start(extra=OTP_ENV)
    await world.connector.wait_healthy()
    async with httpx.AsyncClient(base_url=world.connector.url, headers=headers, timeout=30) as api:

        async def confirmed() -> bool:
            # The approver (or the UI) retries the confirmation; inside the write lease it is refused.
            response = await api.post(f"/api/changes/{change_id}/confirm", json={"code": code})
            return response.status_code == 200 and response.json()["outcome"] == "written"

        await eventually(confirmed, within=30, step=0.5, what="change written after the restart")
        again = await api.post(f"/api/changes/{change_id}/confirm", json={"code": code})
        assert again.status_code == 409  # written is final: a further confirmation writes nothing
        shown = (await api.get(f"/api/changes/{change_id}")).json()
        assert shown["status"] == "written"

    record = world.bc.get_record(world.company, "customers", target)
    assert record is not None and record["email"] == "ap-new@example.com"
    applied = [p for p in _patches(world, target) if p["status"] == 200]
    assert len(applied) == 1, "the approved change was applied to BC exactly once"
    assert all(p["headers"].get("if-match") for p in _patches(world, target))
    assert _patches(world, bystander) == [], "an unapproved change reached BC"
    backend = backend_of(database_url)
    write_figures(
        f"crash-{point}-{backend}",
        {
            "point": point,
            "backend": backend,
            "exit": exit_code,
            "approved_written": 1,
            "bc_patches_applied": len(applied),
            "unapproved_written": 0,
        },
    )


@pytest.mark.parametrize(
    ("database_url", "point"),
    matrix(list(zip(BOTH, RENEWAL_POINTS, strict=True)), [(b, p) for b in BOTH for p in RENEWAL_POINTS]),
    indirect=["database_url"],
)
async def test_crash_during_a_subscription_renewal(world: World, point: str, database_url: str) -> None:
    world.connector.start()
    await world.connector.wait_healthy()
    await eventually(lambda: subscribed(world), what="subscriptions created")
    before = {s["subscriptionId"] for s in world.bc.subscriptions()}
    world.connector.stop()
    # The stopped instance's subscription lease (MLC_CLAIM_SECONDS) must run out before the next
    # instance's first pass can take it.
    await asyncio.sleep(float(world.connector.env["MLC_CLAIM_SECONDS"]) + 0.5)
    # Renew everything on start (the window is wider than BC's 3-day lifetime), and die mid-renewal.
    world.connector.start(crash=point, extra={"MLC_SUBSCRIPTION_RENEW_BEFORE_HOURS": "100"})
    code = await world.connector.wait_exit()
    assert code == CRASH_EXIT_CODE, world.connector.tail()

    world.connector.start()
    await world.connector.wait_healthy()
    subs = world.bc.subscriptions()
    # Still one live subscription per entity, the same ones (a renewal never creates a second).
    assert {s["subscriptionId"] for s in subs} == before
    assert Counter(s["resource"].rsplit("/", 1)[-1] for s in subs) == {"customers": 1, "vendors": 1}
    async with httpx.AsyncClient(base_url=world.connector.url, timeout=10) as http:
        ready = await http.get("/ready")
        assert ready.status_code == 200, ready.text
    # And notifications on those subscriptions still become messages, once each.
    world.create_customers(BURST)
    want = world.expected()
    await world.wait_settled(want, within=90, what="all messages sent and final")
    figures = await world.check_invariants(want)
    backend = backend_of(database_url)
    write_figures(f"crash-{point}-{backend}", {"point": point, "backend": backend, "exit": code, **figures})
