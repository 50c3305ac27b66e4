"""Benchmark 3: a burst of BC change notifications -> messages accepted by Twilio.

The whole flow over loopback (server.sandbox.stack.Stack on a fresh PostgreSQL database, the worker
loops running): customers sit just under their credit limit, their previous versions are already
stored (one evaluation through the real store path), then each goes over it in BC. The bench POSTs
the notifications to /webhooks/bc in BC's batched form (`{"value": [...]}`, 100 items per POST,
4 at a time): every customer changed several times (distinct lastModifiedDateTime) and every
delivery repeated once (BC redelivers). Each customer crossing its limit is one credit-limit-crossed
text. The Twilio simulator is rate-limited to 100 messages/s per sender and so is the connector.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from bench.pg import fresh_database
from bench.report import Section, percentile

RATE = 100.0  # messages per second: the Twilio simulator's limit and the connector's budget
BATCH = 100
CONCURRENCY = 4
IDLE_GAP_SECONDS = 0.1  # ten send intervals at 100/s


@dataclass(frozen=True)
class Params:
    notifications: int
    customers: int  # notifications / customers = items per customer (changes x 2 deliveries)
    runs: int | None = None  # overrides the runs asked for


SIZES = {
    "full": Params(notifications=10_000, customers=1_000, runs=2),
    "issue": Params(notifications=10_000, customers=1_000),
    "quick": Params(notifications=4_000, customers=400),
    "tiny": Params(notifications=200, customers=20),
}


def notification_items(
    customer_ids: list[str], per_customer: int, company: str, subscription_id: str, client_state: str
) -> list[dict[str, Any]]:
    """per_customer items each: per_customer // 2 distinct changes, each delivered twice."""
    changes = max(1, per_customer // 2)
    base = datetime.now(UTC).replace(microsecond=0)
    items = []
    for _delivery in range(2):
        for change in range(changes):
            for n, cid in enumerate(customer_ids):
                stamp = base + timedelta(seconds=change, milliseconds=n % 1000)
                items.append(
                    {
                        "subscriptionId": subscription_id,
                        "clientState": client_state,
                        "expirationDateTime": (base + timedelta(days=3)).strftime("%Y-%m-%dT%H:%M:%SZ"),
                        "resource": f"api/v2.0/companies({company})/customers({cid})",
                        "changeType": "updated",
                        "lastModifiedDateTime": stamp.strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z",
                    }
                )
    return items


async def one_run(params: Params) -> dict[str, Any]:
    import httpx
    import sqlalchemy as sa

    from server.bc.entities import CUSTOMERS
    from server.clock import OffsetClock
    from server.evaluation import change_from_record, evaluate_and_store
    from server.runtime import start_workers
    from server.sandbox.stack import Stack
    from server.store.db import read_scope
    from server.store.tables import BcSubscription, MessageEvent, OutboxMessage

    with fresh_database("burst") as url:
        stack = Stack(
            database_url=url,
            clock=OffsetClock(),
            seed="empty",
            settings_overrides={"messages_per_second": RATE},
            bc_options={"notification_window": timedelta(hours=1)},
        )
        await stack.start()
        try:
            sim, company = stack.bc_sim, stack.bc_sim.companies[0]
            ids = [
                sim.create_record(
                    company,
                    "customers",
                    {
                        "number": f"C{n:05d}",
                        "displayName": f"Customer {n}",
                        "phoneNumber": f"+1 503 555 {n:04d}",
                        "creditLimit": 10_000.0,
                        "balanceDue": 5_000.0,
                        "currencyCode": "USD",
                    },
                )["id"]
                for n in range(params.customers)
            ]
            # The previous versions, stored the way the fetcher stores them.
            services = stack.services
            records = await services.bc.get_by_ids(CUSTOMERS, company, ids)
            evaluate_and_store(
                services.db,
                services.ruleset,
                company_id=company,
                entity="customers",
                changes=[change_from_record(r, ("updated",)) for r in records],
                now=services.clock.now(),
            )
            # Subscribing reads a baseline too; the simulator's own notifications of the changes
            # below wait an hour (bc_options): the bench sends the notifications itself.
            await stack.run("subscriptions")
            for cid in ids:
                sim.update_record(company, "customers", cid, {"balanceDue": 15_000.0})
            with read_scope(services.db) as session:
                sub = session.execute(
                    sa.select(BcSubscription).where(sa.column("entity") == "customers")
                ).scalar_one()
                subscription_id = str(sub.subscription_id)
            # The store keeps only a hash of the clientState; BC (the simulator) holds the secret.
            [remote] = [s for s in sim.subscriptions() if s["subscriptionId"] == subscription_id]
            client_state = str(remote["clientState"])
            stack.twilio_sim.set_rate_limit(RATE)
            items = notification_items(
                ids, params.notifications // params.customers, company, subscription_id, client_state
            )
            batches = [items[i : i + BATCH] for i in range(0, len(items), BATCH)]
            await start_workers(services)
            sim.clear_requests()
            first_seen: dict[str, float] = {}
            queue: asyncio.Queue[list[dict[str, Any]]] = asyncio.Queue()
            for batch in batches:
                queue.put_nowait(batch)
            statuses: list[int] = []

            async def post(client: httpx.AsyncClient) -> None:
                while not queue.empty():
                    batch = queue.get_nowait()
                    now = time.time()
                    for item in batch:
                        cid = item["resource"].rsplit("(", 1)[1].rstrip(")")
                        first_seen.setdefault(cid, now)
                    response = await client.post(f"{stack.url}/webhooks/bc", json={"value": batch})
                    statuses.append(response.status_code)

            began = time.time()
            async with httpx.AsyncClient(timeout=30) as client:
                await asyncio.gather(*(post(client) for _ in range(CONCURRENCY)))
            posted = time.time()
            deadline = time.monotonic() + params.customers / RATE * 3 + 60

            def count_sent() -> int:
                with read_scope(services.db) as session:
                    return int(
                        session.execute(
                            sa.select(sa.func.count())
                            .select_from(OutboxMessage)
                            .where(sa.column("twilio_sid").is_not(None))
                        ).scalar_one()
                    )

            # Polled off the event loop, with a count: this loop also serves the connector, and
            # loading every outbox row four times a second held it up (idle gaps of the bench's own).
            while time.monotonic() < deadline:
                if await asyncio.to_thread(count_sent) >= params.customers:
                    break
                await asyncio.sleep(0.25)
            with read_scope(services.db) as session:
                sent: list[tuple[str | None, str | None, str]] = [
                    (record_id, sid, status)
                    for record_id, sid, status in session.execute(
                        sa.select(sa.column("record_id"), sa.column("twilio_sid"), sa.column("status"))
                        .select_from(OutboxMessage)
                        .where(sa.column("twilio_sid").is_not(None))
                    ).all()
                ]
            # Where the time went: when each message was planned (the outbox row is born) and when
            # its first create call began ('submitting' committed), on the connector's clock.
            with read_scope(services.db) as session:
                planned_at = [
                    at.timestamp()
                    for at in session.execute(sa.select(sa.column("created_at")).select_from(OutboxMessage))
                    .scalars()
                    .all()
                ]
                submitting_at = [
                    at.timestamp()
                    for at in session.execute(
                        sa.select(sa.func.min(sa.column("at")))
                        .select_from(MessageEvent)
                        .where(sa.column("status") == "submitting")
                        .group_by(sa.column("job_id"))
                    )
                    .scalars()
                    .all()
                ]
                # per job: 'submitting' committed, SID recorded (the dispatcher's 'queued' event)
                stages: dict[str, dict[str, float]] = {}
                for job_id, status, source, at in session.execute(
                    sa.select(
                        sa.column("job_id"), sa.column("status"), sa.column("source"), sa.column("at")
                    ).select_from(MessageEvent)
                ).all():
                    if status == "submitting" or (status == "queued" and source == "dispatcher"):
                        stages.setdefault(job_id, {}).setdefault(status, at.timestamp())
                sids = dict(
                    session.execute(
                        sa.select(sa.column("job_id"), sa.column("twilio_sid")).select_from(OutboxMessage)
                    ).all()
                )
            with read_scope(services.db) as session:
                outbox_rows = session.execute(
                    sa.select(sa.func.count()).select_from(OutboxMessage)
                ).scalar_one()
                failed = session.execute(
                    sa.select(sa.func.count())
                    .select_from(OutboxMessage)
                    .where(sa.column("status") == "failed")
                ).scalar_one()
            twilio_state = stack.twilio_sim.state
            with twilio_state.lock:  # the simulator's own record keeps microseconds
                accepted = {m.sid: m.date_created.timestamp() for m in twilio_state.messages.values()}
            bc_gets = [r for r in sim.requests() if r["method"] == "GET" and "/customers" in r["path"]]
            creates = [
                r for r in stack.twilio_sim.requests(path_contains="/Messages.json") if r.method == "POST"
            ]
        finally:
            await stack.stop()

    times: list[float] = []
    latencies: list[float] = []
    for record_id, sid, _status in sent:
        at = accepted.get(sid or "")
        if at is None:
            continue
        times.append(at)
        if record_id is not None and record_id in first_seen:
            latencies.append(at - first_seen[record_id])
    times.sort()
    gaps = [b - a for a, b in itertools.pairwise(times)]
    # diagnosis: 'submitting' -> Twilio's acceptance -> SID recorded, per job
    to_accept = [
        accepted[sids[j]] - st["submitting"]
        for j, st in stages.items()
        if "submitting" in st and sids.get(j) in accepted
    ]
    to_record = [
        st["queued"] - accepted[sids[j]]
        for j, st in stages.items()
        if "queued" in st and sids.get(j) in accepted
    ]
    planned_at.sort()
    submitting_at.sort()
    return {
        "notifications": len(items),
        "posts": len(batches),
        "post_statuses": sorted(set(statuses)),
        "post_seconds": posted - began,
        "bc_requests": len(bc_gets),
        "messages": len(times),
        "outbox_rows": outbox_rows,
        "end_to_end": (times[-1] - began) if times else float("nan"),
        "p50": percentile(latencies, 50) if latencies else float("nan"),
        "p99": percentile(latencies, 99) if latencies else float("nan"),
        "rate": (len(times) - 1) / (times[-1] - times[0]) if len(times) > 1 else float("nan"),
        "idle_gaps": sum(1 for g in gaps if g > IDLE_GAP_SECONDS),
        "max_gap": max(gaps) if gaps else 0.0,
        "http_429": sum(1 for r in creates if r.status == 429),
        # stages, seconds after the first POST
        "first_planned": (planned_at[0] - began) if planned_at else float("nan"),
        "half_planned": (planned_at[len(planned_at) // 2] - began) if planned_at else float("nan"),
        "last_planned": (planned_at[-1] - began) if planned_at else float("nan"),
        "first_submitting": (submitting_at[0] - began) if submitting_at else float("nan"),
        "first_accepted": (times[0] - began) if times else float("nan"),
        "submit_to_accept_p50": percentile(to_accept, 50) if to_accept else float("nan"),
        "accept_to_record_p50": percentile(to_record, 50) if to_record else float("nan"),
        "failed": failed,
        "unsent": params.customers - len(times),
    }


def run(params: Params, runs: int) -> Section:
    section = Section(
        key="burst",
        title="3. Notification burst",
        method=(
            f"{params.notifications:,} BC change notifications for {params.customers:,} customers "
            f"(each customer changed {params.notifications // params.customers // 2} times, every delivery "
            f"sent twice), POSTed to `/webhooks/bc` in batches of {BATCH} ({CONCURRENCY} at a time) with "
            "the Stack's worker loops running on a fresh PostgreSQL database. Each customer crosses its "
            f"credit limit once: {params.customers:,} messages. Twilio simulator and connector both at "
            f"{RATE:.0f} messages/s. Latency runs from the first POST naming a customer to Twilio's "
            f"acceptance of its message; an idle gap is more than {IDLE_GAP_SECONDS:.1f} s between two "
            "acceptances."
        ),
    )
    import tempfile

    from server.logs import configure_logging

    # The connector logs as it does in production (INFO), to a file rather than the console.
    with tempfile.TemporaryFile("w+") as log:
        configure_logging("INFO", stream=log)
        try:
            results = [asyncio.run(one_run(params)) for _ in range(params.runs or runs)]
        finally:
            configure_logging("WARNING")
    section.add(
        "BC requests per notification",
        "requests",
        [r["bc_requests"] / r["notifications"] for r in results],
        digits=4,
    )
    section.add("BC requests", "requests", [r["bc_requests"] for r in results])
    section.add("messages accepted by Twilio", "messages", [r["messages"] for r in results])
    section.add(
        "end-to-end (first POST -> last acceptance)", "s", [r["end_to_end"] for r in results], digits=2
    )
    section.add("ideal at the rate limit", "s", [params.customers / RATE for _ in results], digits=2)
    section.add("latency p50", "s", [r["p50"] for r in results], digits=2)
    section.add("latency p99", "s", [r["p99"] for r in results], digits=2)
    section.add("sustained send rate", "messages/s", [r["rate"] for r in results], digits=1)
    section.add("idle gaps", "gaps", [r["idle_gaps"] for r in results])
    section.add("longest gap between acceptances", "s", [r["max_gap"] for r in results], digits=3)
    section.add("429 answers from Twilio", "responses", [r["http_429"] for r in results])
    section.add("POSTing all notifications", "s", [r["post_seconds"] for r in results], digits=2)
    for key, label in (
        ("first_planned", "stage: first message planned (after the first POST)"),
        ("half_planned", "stage: half the messages planned"),
        ("last_planned", "stage: last message planned"),
        ("first_submitting", "stage: first create call begun"),
        ("first_accepted", "stage: first message accepted by Twilio"),
        ("submit_to_accept_p50", "per send: 'submitting' committed -> accepted, p50"),
        ("accept_to_record_p50", "per send: accepted -> SID recorded, p50"),
    ):
        section.add(label, "s", [r[key] for r in results], digits=2)
    per_notification = section.figure("BC requests per notification").value
    section.target(
        "BC requests per notification <= 0.05 (naive: 1.0)",
        per_notification <= 0.05,
        f"{per_notification:.4f}",
    )
    rate = section.figure("sustained send rate").value
    gaps = max(r["idle_gaps"] for r in results)
    section.target(
        f"sends sustained at the limit with no idle gaps ({RATE:.0f}/s)",
        rate >= RATE * 0.9 and gaps == 0,
        f"{rate:.1f}/s, {gaps} idle gaps",
    )
    unretried = max(r["failed"] + r["unsent"] for r in results)
    section.target(
        "no 429 left unretried (every message sent, none failed)",
        unretried == 0,
        f"{unretried} unsent or failed",
    )
    section.notes.append(
        "Webhook answers: "
        + ", ".join(str(s) for s in sorted({s for r in results for s in r["post_statuses"]}))
        + f"; outbox rows per run: {sorted({r['outbox_rows'] for r in results})}."
    )
    return section
