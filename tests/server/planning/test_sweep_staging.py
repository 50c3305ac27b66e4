"""The sweep's held messages wait in the database (server.store.sweep_staging), not in memory.

- Stored a few recipients at a time, they give the very outbox rows the one end-of-sweep batch
  gave: groups across pages, caps over recipients shared by customers (and the account manager's
  number), the BC switch, pauses and payment grace.
- A sweep killed for real (SIGKILL) mid-sweep, then swept again: nothing is planned twice, the
  dead sweep's staged messages are never stored, and the staging is emptied.
- A cancelled sweep leaves no staged rows.
On SQLite and PostgreSQL.
"""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
import sys
import time
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy import Engine

from engine.messages import PlannedMessage
from engine.ruleset import RuleSet
from server.planning.evaluation import RecordChange, evaluate_and_store, groups_on_sweep, insert_grouped
from server.planning.sweep import LEASE_TTL, HeldRun, Sweeper
from server.runtime.clock import ManualClock
from server.sandbox.stack import Stack
from server.settings import Settings
from server.store.db import read_scope, session_scope
from server.store.pauses import add_pause
from server.store.snapshots import SnapshotIn, put_snapshots
from server.store.tables import MessageEvent, OutboxMessage, SweepHeldMessage
from tests.server.planning.conftest import GB, outbox_rows

pytestmark = pytest.mark.timeout(180)

COMPANY = "c1"
NOW = datetime(2026, 12, 15, 17, 0, tzinfo=UTC)  # 09:00 in Los Angeles, the rules' zone
MANAGER = "+1 503 555 0177"  # the account manager of rules/invoice-overdue.yaml
PHONES = ("+1 503 555 0101", "+1 503 555 0102", MANAGER)  # customers share numbers
DUE_OFFSETS = (-3, 1, 2, 9, 10, 14, 15, 30, 31)  # days overdue: every stage (7 starts at 9: grace)


def customer(n: int) -> dict[str, Any]:
    return {
        "id": f"cust-{n}",
        "number": f"C{n:04d}",
        "displayName": f"Customer {n}",
        "phoneNumber": PHONES[n % len(PHONES)],
        "blocked": "Invoice" if n == 4 else " ",  # the BC switch: no reminders for customer 4
    }


def invoices(count: int) -> list[dict[str, Any]]:
    today = NOW.date()
    return [
        {
            "id": f"inv-{i}",
            "number": f"PS-INV{100000 + i}",
            "status": "Open",
            "dueDate": (today - timedelta(days=DUE_OFFSETS[i % len(DUE_OFFSETS)])).isoformat(),
            "remainingAmount": 100.0 + i,
            "totalAmountIncludingTax": 100.0 + i,
            "currencyCode": "USD",
            "customerId": f"cust-{i % 10}",
            "customerNumber": f"C{i % 10:04d}",
            "customer": customer(i % 10),
            "salespersonCode": "AH",  # a field no end-of-sweep step reads (slimmed away)
        }
        for i in range(count)
    ]


def pages(records: list[dict[str, Any]], size: int) -> list[list[RecordChange]]:
    changes = [RecordChange(record_id=r["id"], record=r, events=("sweep",)) for r in records]
    return [changes[i : i + size] for i in range(0, len(changes), size)]


def outbox(engine: Engine) -> list[tuple[Any, ...]]:
    with read_scope(engine) as session:
        columns: list[Any] = [  # the model's attributes, typed as their Python values
            OutboxMessage.job_id,
            OutboxMessage.rule_id,
            OutboxMessage.record_id,
            OutboxMessage.record_number,
            OutboxMessage.recipient,
            OutboxMessage.status,
            OutboxMessage.error_code,
            OutboxMessage.error_message,
            OutboxMessage.body,
            OutboxMessage.group_job_id,
            OutboxMessage.dedupe_key,
        ]
        rows = session.execute(sa.select(*columns)).all()
    return sorted(tuple(r) for r in rows)


def staged_rows(engine: Engine) -> list[SweepHeldMessage]:
    with read_scope(engine) as session:
        rows = list(session.execute(sa.select(SweepHeldMessage)).scalars().all())
        session.expunge_all()
        return rows


def test_stored_a_few_recipients_at_a_time_the_outbox_is_the_one_batch_outbox(
    engine: Engine, shipped: RuleSet, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MLC_REMINDER_SUPPRESS_FIELD", "customer.blocked")
    reminders = Settings(_env_file=None).reminders  # read once, as the service does
    with session_scope(engine) as session:
        add_pause(
            session,
            scope="customer",
            subject="C0005",
            until=NOW + timedelta(days=5),
            reason="disputed",
            created_by="test",
            now=NOW,
        )
        # A payment on its way for an invoice at the 7-day stage (grace 2 days).
        payment = {"id": "pay-1", "appliesToInvoiceNumber": "PS-INV100003", "amount": 103.0}
        put_snapshots(session, COMPANY, "customerPayments", [SnapshotIn("pay-1", payment)], now=NOW)
    records = invoices(90)
    hold = groups_on_sweep(shipped)

    # Before: every held message in memory, stored in one batch at the end.
    held: list[PlannedMessage] = []
    for page in pages(records, 7):
        result = evaluate_and_store(
            engine, shipped, company_id=COMPANY, entity="salesInvoices", changes=page, now=NOW,
            store_snapshots=False, hold=hold, reminders=reminders,
        )  # fmt: skip
        held.extend(result.held)
    insert_grouped(engine, shipped, company_id=COMPANY, messages=held, now=NOW, reminders=reminders)
    one_batch = outbox(engine)
    with session_scope(engine) as session:
        session.execute(sa.delete(MessageEvent))
        session.execute(sa.delete(OutboxMessage))

    # Now: staged with each page, stored a few whole recipients at a time.
    run = HeldRun(engine, shipped, company_id=COMPANY, entity="salesInvoices", reminders=reminders)
    for page in pages(records, 7):
        result = evaluate_and_store(
            engine, shipped, company_id=COMPANY, entity="salesInvoices", changes=page, now=NOW,
            store_snapshots=False, hold=hold, stage_held=run.stage, reminders=reminders,
        )  # fmt: skip
        assert result.held == ()  # staged, not handed back
    assert run.staged == len(held) and len(staged_rows(engine)) == len(held)
    assert all("salespersonCode" not in r.message["record"] for r in staged_rows(engine))
    run.store(NOW, batch_size=4, chunk=5)  # many batches; parts longer than a chunk
    run.drop()

    assert outbox(engine) == one_batch
    assert staged_rows(engine) == []
    codes = Counter(row[6] for row in one_batch)
    assert {"grouped", "capped", "suppressed", "paused", "payment-grace"} <= set(codes), codes
    staff = [r for r in one_batch if r[4] == "+15035550177" and r[6] is None]
    assert staff, "the account manager's number is also a customer's: both kinds are in the data"


# --- a real crash mid-sweep -------------------------------------------------------------------------

CHILD = """
import asyncio, json, sys
from datetime import datetime

from server.runtime.clock import ManualClock
from server.services import open_services
from server.settings import BCSettings, Settings, TwilioSettings
from server.planning.sweep import Sweeper


async def main(config):
    settings = Settings(
        mode="test",
        database_url=config["database_url"],
        bc=BCSettings(**config["bc"]),
        twilio=TwilioSettings(account_sid="AC" + "0" * 32, api_key_sid="SK" + "0" * 32, from_number="+15005550006"),
    )
    services = await open_services(settings, clock=ManualClock(datetime.fromisoformat(config["now"])))
    await Sweeper(services, page_size=1).sweep_now()
    await services.aclose()


asyncio.run(main(json.loads(sys.argv[1])))
"""


def child_config(stack: Stack) -> dict[str, Any]:
    sim = stack.bc_sim
    return {
        "database_url": stack.database_url,
        "now": stack.clock.now().isoformat(),
        "bc": {
            "api_base_url": sim.origin,
            "authority_host": sim.origin,
            "tenant_id": sim.tenant_id,
            "environment": sim.environment,
            "client_id": sim.client_id,
            "client_secret": sim.client_secret,
            "companies": [GB],
            "ca_cert": str(sim.ca_cert_path),
        },
    }


def customer_with_overdue_invoices(stack: Stack, clock: ManualClock, count: int) -> list[str]:
    """A customer with `count` invoices 1 day overdue (one grouped reminder); their ids."""
    owner = stack.bc_sim.create_record(
        GB,
        "customers",
        {
            "number": "C77001",
            "displayName": "Crash Test Ltd",
            "phoneNumber": "+44 20 7946 0999",
            "blocked": " ",
        },
    )
    due = clock.now().date() - timedelta(days=1)
    return [
        stack.bc_sim.create_record(
            GB,
            "salesInvoices",
            {
                "number": f"PS-INV7700{n}",
                "customerId": owner["id"],
                "dueDate": due.isoformat(),
                "totalAmountIncludingTax": 99.0,
                "remainingAmount": 99.0,
                "status": "Open",
            },
        )["id"]
        for n in range(count)
    ]


def kill_mid_sweep(stack: Stack, log_path: Path) -> tuple[int | None, str]:
    """Run a sweep in another process and SIGKILL it once a page's held messages are committed."""
    with open(log_path, "wb") as log:
        child = subprocess.Popen(
            [sys.executable, "-c", CHILD, json.dumps(child_config(stack))],
            cwd=Path(__file__).resolve().parents[3],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    try:
        deadline = time.monotonic() + 120
        while not staged_rows(stack.services.db) and child.poll() is None and time.monotonic() < deadline:
            time.sleep(0.02)
        child.send_signal(signal.SIGKILL)  # a no-op if it ended by itself (then the test fails)
    finally:
        child.wait(timeout=30)
    return child.returncode, log_path.read_text()[-3000:]


async def test_a_sweep_killed_mid_sweep_then_swept_again_plans_nothing_twice(
    stack: Stack, clock: ManualClock, tmp_path: Path
) -> None:
    ours = customer_with_overdue_invoices(stack, clock, 3)
    # Slow pages of one invoice: the sweep is still reading when the test kills it.
    stack.bc_sim.inject_fault(kind="delay", delay_seconds=0.3, remaining=None, path_contains="/salesInvoices")
    returncode, output = await asyncio.to_thread(kill_mid_sweep, stack, tmp_path / "child.log")
    assert returncode == -signal.SIGKILL, output
    stale = staged_rows(stack.services.db)
    assert stale and len({r.run_id for r in stale}) == 1

    # The dead sweep's first staged invoice is paid and gone from BC before the next sweep: were its
    # staged messages picked up, they would be stored now.
    gone = next(r for r in stale if r.message["record_id"])
    stack.bc_sim.delete_record(GB, "salesInvoices", gone.message["record_id"])
    stack.bc_sim.clear_faults()
    clock.advance(LEASE_TTL + timedelta(minutes=1))  # the dead process's sweep lease runs out
    sweeper = Sweeper(stack.services, page_size=1)
    assert await sweeper.sweep_now() > 0

    assert staged_rows(stack.services.db) == []
    assert outbox_rows(stack, job_id=gone.message["job_id"]) == []
    members = [r for r in outbox_rows(stack, rule_id="invoice-overdue") if r.record_id in ours]
    assert sorted((r.record_id for r in members), key=str) == sorted(ours)  # each invoice once
    assert {r.error_code for r in members} == {"grouped"}
    [group_id] = {r.group_job_id for r in members}
    [grouped] = outbox_rows(stack, job_id=group_id)
    assert (grouped.status, grouped.recipient) == ("planned", "+442079460999")
    assert all(f"PS-INV7700{n}" in grouped.body for n in range(3))
    before = len(outbox_rows(stack))
    await sweeper.sweep_now()
    assert len(outbox_rows(stack)) == before  # the same day again: nothing new


async def test_a_cancelled_sweep_leaves_nothing_staged(lite_stack: Stack, clock: ManualClock) -> None:
    stack = lite_stack
    customer_with_overdue_invoices(stack, clock, 2)
    stack.bc_sim.inject_fault(kind="delay", delay_seconds=0.3, remaining=None, path_contains="/salesInvoices")
    sweep = asyncio.create_task(Sweeper(stack.services, page_size=1).sweep_now())
    for _ in range(6000):
        if staged_rows(stack.services.db) or sweep.done():
            break
        await asyncio.sleep(0.02)
    assert not sweep.done()
    sweep.cancel()
    with pytest.raises(asyncio.CancelledError):
        await sweep
    assert staged_rows(stack.services.db) == []
