"""Proposal limits: each proposal sends a code by SMS or call, and each is a new round of guesses, so
proposals are limited per approver and per record within a window, counted in the store (so the
limits hold across instances on PostgreSQL). Over a limit: 429 with Retry-After, an audit event,
and no verification at Twilio."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import httpx
from sqlmodel import col, select

from server.runtime.clock import ManualClock
from server.sandbox.stack import Stack
from server.store.db import read_scope
from server.store.tables import AuditEntry
from tests.server.changes.conftest import APPROVER


def customers(stack: Stack) -> list[dict[str, Any]]:
    return stack.bc_sim.records(stack.bc_sim.companies[0], "customers")


async def propose(
    api: httpx.AsyncClient, stack: Stack, record: object, approver: str = "treasury"
) -> httpx.Response:
    return await api.post(
        "/api/changes",
        json={
            "entity": "customers",
            "record_id": record,
            "company_id": stack.bc_sim.companies[0],
            "changes": {"email": "new@example.com"},
            "approver": approver,
        },
    )


def limit_refusals(stack: Stack) -> list[tuple[str, str]]:
    with read_scope(stack.services.db) as session:
        rows = session.exec(
            select(AuditEntry).where(AuditEntry.action == "change.refused").order_by(col(AuditEntry.id))
        ).all()
        return [(r.actor, r.details["limit"]) for r in rows if "limit" in r.details]


async def test_proposals_per_approver_are_limited(
    stack: Stack, alice: httpx.AsyncClient, dave: httpx.AsyncClient, clock: ManualClock
) -> None:
    records = [c["id"] for c in customers(stack)]
    # Three rounds of "propose, guess three times": each a new code and a new SMS to dave.
    for record in records[:3]:
        created = await propose(alice, stack, record)
        assert created.status_code == 201, created.text
        code = stack.twilio_sim.verification_code(APPROVER)
        wrong = "000000" if code != "000000" else "111111"
        for _ in range(3):
            await dave.post(f"/api/changes/{created.json()['id']}/confirm", json={"code": wrong})
        assert (await alice.get(f"/api/changes/{created.json()['id']}")).json()["status"] == "rejected"
    assert len(stack.twilio_sim.verifications()) == 3

    clock.advance(timedelta(minutes=4))
    fourth = await propose(alice, stack, records[3])
    assert fourth.status_code == 429, fourth.text
    assert fourth.headers["retry-after"] == "360"  # the oldest of the three leaves the window in 6 min
    assert fourth.json()["detail"] == (
        "approver: role 'treasury' has had 3 proposals in the last 10 minutes "
        "(MLC_CHANGES__PROPOSALS_PER_APPROVER); try again in 360 s"
    )
    assert len(stack.twilio_sim.verifications()) == 3  # no code sent for the refused proposal
    assert limit_refusals(stack) == [("alice", "per_approver")]

    clock.advance(timedelta(minutes=6))
    assert (await propose(alice, stack, records[3])).status_code == 201
    assert len(stack.twilio_sim.verifications()) == 4


async def test_proposals_per_record_are_limited(
    stack: Stack, alice: httpx.AsyncClient, clock: ManualClock
) -> None:
    record = customers(stack)[0]["id"]
    assert (await propose(alice, stack, record, "treasury")).status_code == 201
    assert (await propose(alice, stack, record, "finance-controller")).status_code == 201
    third = await propose(alice, stack, record, "payables")  # another approver, the same record
    assert third.status_code == 429, third.text
    assert third.headers["retry-after"] == "600"
    assert third.json()["detail"].startswith(
        f"record_id: customers {record} has had 2 proposals in the last 10 minutes "
        "(MLC_CHANGES__PROPOSALS_PER_RECORD)"
    )
    assert len(stack.twilio_sim.verifications()) == 2
    assert limit_refusals(stack) == [("alice", "per_record")]
    # Another record is not held back by this one.
    assert (await propose(alice, stack, customers(stack)[1]["id"], "payables")).status_code == 201
