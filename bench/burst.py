"""Benchmark 3: a burst of BC change notifications -> messages accepted by Twilio.

The whole flow over loopback, deployed as in production: the connector is its own process
(`ml-connector serve`, worker loops running, a fresh PostgreSQL database) and reaches the BC and
Twilio simulators (threads of the bench process) over HTTP exactly as it would reach BC and Twilio;
Twilio's signed status callbacks come back to it the same way. Customers sit just under their credit limit, their previous versions are already
stored (one evaluation through the real store path), then each goes over it in BC. The bench POSTs
the notifications to /webhooks/bc in BC's batched form (`{"value": [...]}`, 100 items per POST,
4 at a time): every customer changed several times (distinct lastModifiedDateTime) and every
delivery repeated once (BC redelivers). Each customer crossing its limit is one credit-limit-crossed
text. The Twilio simulator is rate-limited to 100 messages/s per sender and so is the connector.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import itertools
import os
import secrets
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import IO, Any

from bench.pg import fresh_database
from bench.report import ROOT, Section, percentile

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


def connector_env(bc: Any, twilio: Any, database_url: str, url: str, api_token: str) -> dict[str, str]:
    """The connector's environment, as an operator would set it: the simulators are its BC and Twilio."""
    keep = {k: v for k, v in os.environ.items() if not k.startswith("MLC_")}
    return {
        **keep,
        "PYTHONPATH": str(ROOT),
        "MLC_MODE": "test",
        "MLC_LOG_LEVEL": "INFO",  # as in production; the log goes to a file
        "MLC_DATABASE_URL": database_url,
        "MLC_PUBLIC_BASE_URL": url,
        "MLC_API_TOKEN": api_token,
        "MLC_MESSAGES_PER_SECOND": f"{RATE:g}",
        **bc.connector_env(),
        **twilio.connector_env(),
    }


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def start_connector(port: int, env: dict[str, str], log: IO[bytes]) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "server.cli", "serve", "--port", str(port)],
        cwd=ROOT,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )


async def wait_for(check: Any, what: str, within: float = 60.0) -> None:
    deadline = time.monotonic() + within
    while not await check():
        if time.monotonic() > deadline:
            raise RuntimeError(f"not reached within {within:.0f} s: {what}")
        await asyncio.sleep(0.1)


async def one_run(params: Params, log: IO[bytes]) -> dict[str, Any]:
    import httpx
    import sqlalchemy as sa

    from server.bc.entities import CUSTOMERS
    from server.planning.evaluation import change_from_record, evaluate_and_store
    from server.services import open_services
    from server.settings import BCSettings, Settings, TwilioSettings
    from server.store.db import read_scope
    from server.store.tables import BcSubscription, MessageEvent, OutboxMessage, RecordSnapshot
    from simulators.bc.simulator import BCSimulator
    from simulators.twilio.simulator import TwilioSimulator

    with fresh_database("burst") as db_url, contextlib.ExitStack() as cleanup:
        port = free_port()
        url = f"http://127.0.0.1:{port}"
        # Both simulators run in this process (their own threads); the connector is a process of
        # its own, reaching them over loopback exactly as it would reach BC and Twilio.
        sim = BCSimulator(seed="empty", notification_window=timedelta(hours=1)).start()
        cleanup.callback(sim.stop)
        twilio = TwilioSimulator(inbound_url=f"{url}/webhooks/twilio/inbound").start()
        cleanup.callback(twilio.stop)
        company = sim.companies[0]
        api_token = secrets.token_urlsafe(24)
        env = connector_env(sim, twilio, db_url, url, api_token)
        # This process's view of the same database and BC (migrations, the previous versions, the
        # figures): the connector's own settings, from the same values.
        settings = Settings(
            mode="test",
            database_url=db_url,
            public_base_url=url,
            api_token=api_token,
            messages_per_second=RATE,
            bc=BCSettings(
                api_base_url=sim.origin,
                authority_host=sim.origin,
                tenant_id=sim.tenant_id,
                environment=sim.environment,
                client_id=sim.client_id,
                client_secret=sim.client_secret,
                companies=list(sim.companies),
                ca_cert=sim.ca_cert_path,
            ),
            twilio=TwilioSettings(
                api_base_url=twilio.base_url,
                verify_base_url=twilio.verify_base_url,
                account_sid=twilio.account_sid,
                api_key_sid=twilio.api_key_sid,
                api_key_secret=twilio.api_key_secret,
                auth_token=twilio.auth_token,
                from_number=twilio.from_number,
                verify_service_sid=twilio.verify_service_sid,
            ),
        )
        services = await open_services(settings)
        try:
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
            records = await services.bc.get_by_ids(CUSTOMERS, company, ids)
            evaluate_and_store(
                services.db,
                services.ruleset,
                company_id=company,
                entity="customers",
                changes=[change_from_record(r, ("updated",)) for r in records],
                now=services.clock.now(),
            )
            started = datetime.now(UTC)
            proc = start_connector(port, env, log)

            def stop_connector() -> None:
                if proc.poll() is None:
                    proc.send_signal(signal.SIGTERM)
                    try:
                        proc.wait(timeout=30)
                    except subprocess.TimeoutExpired:
                        proc.kill()
                        proc.wait(timeout=15)

            cleanup.callback(stop_connector)

            def subscription_id() -> str | None:
                with read_scope(services.db) as session:
                    return session.execute(
                        sa.select(sa.column("subscription_id"))
                        .select_from(BcSubscription)
                        .where(sa.column("entity") == "customers", sa.column("status") == "active")
                    ).scalar_one_or_none()

            def primed() -> int:
                with read_scope(services.db) as session:
                    return int(
                        session.execute(
                            sa.select(sa.func.count())
                            .select_from(RecordSnapshot)
                            .where(sa.column("entity") == "customers", sa.column("seen_at") >= started)
                        ).scalar_one()
                    )

            async def subscribed() -> bool:
                if proc.poll() is not None:
                    raise RuntimeError(f"the connector exited with {proc.returncode}")
                if await asyncio.to_thread(subscription_id) is None:
                    return False
                return await asyncio.to_thread(primed) >= params.customers

            # The connector's subscription manager subscribes at start, then reads a baseline of
            # every customer (a snapshot each): the changes below must come after that read. The
            # simulator's own notifications of them wait an hour (its window): the bench sends the
            # notifications itself.
            await wait_for(subscribed, "the connector subscribed to customers and read the baseline")
            sub_id = str(await asyncio.to_thread(subscription_id))
            for cid in ids:
                sim.update_record(company, "customers", cid, {"balanceDue": 15_000.0})
            # The store keeps only a hash of the clientState; BC (the simulator) holds the secret.
            [remote] = [s for s in sim.subscriptions() if s["subscriptionId"] == sub_id]
            client_state = str(remote["clientState"])
            twilio.set_rate_limit(RATE)
            items = notification_items(
                ids, params.notifications // params.customers, company, sub_id, client_state
            )
            batches = [items[i : i + BATCH] for i in range(0, len(items), BATCH)]
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
                    response = await client.post(f"{url}/webhooks/bc", json={"value": batch})
                    statuses.append(response.status_code)

            # The simulators share this process: its set-up (1,000 customers, the store's view) is
            # frozen out of the collector, so a full collection here cannot stall Twilio's side
            # and show up as a gap that is not the connector's (the service freezes its own).
            gc.collect()
            gc.freeze()
            cleanup.callback(gc.unfreeze)
            lag_before = await loop_lag(url, api_token)
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

            # Polled off the event loop (this loop also serves the simulators' callers), with a count.
            while time.monotonic() < deadline:
                if await asyncio.to_thread(count_sent) >= params.customers:
                    break
                await asyncio.sleep(0.25)
            lag_after = await loop_lag(url, api_token)
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
            twilio_state = twilio.state
            with twilio_state.lock:  # the simulator's own record keeps microseconds
                accepted = {m.sid: m.date_created.timestamp() for m in twilio_state.messages.values()}
            bc_gets = [r for r in sim.requests() if r["method"] == "GET" and "/customers" in r["path"]]
            creates = [r for r in twilio.requests(path_contains="/Messages.json") if r.method == "POST"]
        finally:
            await services.aclose()

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
    # The send rate while notifications are still being turned into messages, and after: tells a
    # dispatcher that cannot keep the pace from one starved by the ingest and planning beside it.
    last_planned = planned_at[-1] if planned_at else float("nan")
    during = [t for t in times if t <= last_planned]
    after = [t for t in times if t > last_planned]
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
        "rate": phase_rate(times),
        "rate_while_planning": phase_rate(during),
        "rate_after_planning": phase_rate(after),
        "idle_gaps": sum(1 for g in gaps if g > IDLE_GAP_SECONDS),
        "idle_gaps_after_planning": sum(1 for a, b in itertools.pairwise(after) if b - a > IDLE_GAP_SECONDS),
        "max_gap": max(gaps) if gaps else 0.0,
        # where each idle gap began (s after the first POST) and how long it was
        "gaps_at": [(a - began, b - a) for a, b in itertools.pairwise(times) if b - a > IDLE_GAP_SECONDS],
        "submit_gaps_at": [
            (a - began, b - a) for a, b in itertools.pairwise(submitting_at) if b - a > IDLE_GAP_SECONDS
        ],
        "http_429": sum(1 for r in creates if r.status == 429),
        # stages, seconds after the first POST
        "first_planned": (planned_at[0] - began) if planned_at else float("nan"),
        "half_planned": (planned_at[len(planned_at) // 2] - began) if planned_at else float("nan"),
        "last_planned": (planned_at[-1] - began) if planned_at else float("nan"),
        "first_submitting": (submitting_at[0] - began) if submitting_at else float("nan"),
        "first_accepted": (times[0] - began) if times else float("nan"),
        "submit_to_accept_p50": percentile(to_accept, 50) if to_accept else float("nan"),
        "submit_to_accept_max": max(to_accept) if to_accept else float("nan"),
        # gaps where the connector began no create call: the pace of the connector alone
        "submit_gaps": sum(1 for a, b in itertools.pairwise(submitting_at) if b - a > IDLE_GAP_SECONDS),
        "submit_max_gap": max((b - a for a, b in itertools.pairwise(submitting_at)), default=0.0),
        "accept_to_record_p50": percentile(to_record, 50) if to_record else float("nan"),
        "failed": failed,
        "unsent": params.customers - len(times),
        # the connector's own event loop during the burst (its mlc_event_loop_lag_seconds histogram)
        "loop_stalls_50ms": lag_after[0.05] - lag_before[0.05],
        "loop_stalls_100ms": lag_after[0.1] - lag_before[0.1],
    }


async def loop_lag(url: str, api_token: str) -> dict[float, float]:
    """How many of the connector's event-loop wake-ups so far came more than 50 / 100 ms late."""
    import httpx
    from prometheus_client.parser import text_string_to_metric_families

    async with httpx.AsyncClient(timeout=30) as client:
        response = await client.get(f"{url}/metrics", headers={"Authorization": f"Bearer {api_token}"})
    response.raise_for_status()
    samples = {
        (s.name, s.labels.get("le", "")): s.value
        for family in text_string_to_metric_families(response.text)
        if family.name == "mlc_event_loop_lag_seconds"
        for s in family.samples
    }
    total = samples[("mlc_event_loop_lag_seconds_count", "")]
    return {
        bound: total - samples[("mlc_event_loop_lag_seconds_bucket", str(bound))] for bound in (0.05, 0.1)
    }


def phase_rate(times: list[float]) -> float:
    """Acceptances per second over a sorted run of acceptance times."""
    return (len(times) - 1) / (times[-1] - times[0]) if len(times) > 1 else float("nan")


def run(params: Params, runs: int) -> Section:
    section = Section(
        key="burst",
        title="3. Notification burst",
        method=(
            f"{params.notifications:,} BC change notifications for {params.customers:,} customers "
            f"(each customer changed {params.notifications // params.customers // 2} times, every delivery "
            f"sent twice), POSTed to `/webhooks/bc` in batches of {BATCH} ({CONCURRENCY} at a time) with "
            "the connector in its own process (`ml-connector serve`, worker loops running, a fresh "
            "PostgreSQL database), the BC and Twilio simulators in the bench process, status callbacks "
            "on. Each customer crosses its "
            f"credit limit once: {params.customers:,} messages. Twilio simulator and connector both at "
            f"{RATE:.0f} messages/s. Latency runs from the first POST naming a customer to Twilio's "
            f"acceptance of its message; an idle gap is more than {IDLE_GAP_SECONDS:.1f} s between two "
            "acceptances."
        ),
    )
    # The connector logs as it does in production (INFO), to a file rather than the console.
    with tempfile.TemporaryFile("w+b") as log:
        results = [asyncio.run(one_run(params, log)) for _ in range(params.runs or runs)]
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
    section.add(
        "send rate while messages are still planned",
        "messages/s",
        [r["rate_while_planning"] for r in results],
        digits=1,
    )
    section.add(
        "send rate after the last message is planned",
        "messages/s",
        [r["rate_after_planning"] for r in results],
        digits=1,
    )
    section.add("idle gaps", "gaps", [r["idle_gaps"] for r in results])
    section.add(
        "idle gaps after the last message is planned",
        "gaps",
        [r["idle_gaps_after_planning"] for r in results],
    )
    section.add("longest gap between acceptances", "s", [r["max_gap"] for r in results], digits=3)
    section.add(
        "idle gaps between create calls begun (the connector's side)",
        "gaps",
        [r["submit_gaps"] for r in results],
    )
    section.add(
        "longest gap between create calls begun", "s", [r["submit_max_gap"] for r in results], digits=3
    )
    section.add(
        "connector event-loop stalls over 50 ms",
        "stalls",
        [r["loop_stalls_50ms"] for r in results],
    )
    section.add(
        "connector event-loop stalls over 100 ms",
        "stalls",
        [r["loop_stalls_100ms"] for r in results],
    )
    section.add("429 answers from Twilio", "responses", [r["http_429"] for r in results])
    section.add("POSTing all notifications", "s", [r["post_seconds"] for r in results], digits=2)
    for key, label in (
        ("first_planned", "stage: first message planned (after the first POST)"),
        ("half_planned", "stage: half the messages planned"),
        ("last_planned", "stage: last message planned"),
        ("first_submitting", "stage: first create call begun"),
        ("first_accepted", "stage: first message accepted by Twilio"),
        ("submit_to_accept_p50", "per send: 'submitting' committed -> accepted, p50"),
        ("submit_to_accept_max", "per send: 'submitting' committed -> accepted, longest"),
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
    for n, r in enumerate(results, 1):
        if r["gaps_at"] or r["submit_gaps_at"]:
            section.notes.append(
                f"Run {n}: idle gaps between acceptances at "
                + (", ".join(f"{at:.2f} s ({gap:.3f} s)" for at, gap in r["gaps_at"]) or "none")
                + "; between create calls begun at "
                + (", ".join(f"{at:.2f} s ({gap:.3f} s)" for at, gap in r["submit_gaps_at"]) or "none")
                + f"; the last message was planned at {r['last_planned']:.2f} s."
            )
    return section
