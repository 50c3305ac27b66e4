"""Benchmark 5: 1, 2 and 4 dispatcher processes on PostgreSQL against one queue of jobs.

The jobs are inserted with the store's insert_planned into a fresh database; the Twilio simulator
runs in this process, unthrottled, its message lifecycles frozen (a manual clock: no status
callbacks to serve). Each dispatcher is its own process (`python -m bench.scaleout child CONFIG`):
the real Dispatcher and Services, claiming with FOR UPDATE SKIP LOCKED; all connect, then start
together. Exactly once: every job has one SID, the simulator holds one message per job body, and
it answered one create per job.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
from collections import Counter
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from bench.pg import fresh_database
from bench.report import ROOT, Section

RULE = "bench-notice"  # not a shipped rule: the row's own (empty) send window applies
DEADLINE_SECONDS = 300.0


@dataclass(frozen=True)
class Params:
    jobs: int
    processes: tuple[int, ...]
    runs: int | None = None  # overrides the runs asked for


SIZES = {
    # The 20,000 jobs, once per process count: about 5 minutes on 2 cores.
    "full": Params(jobs=20_000, processes=(1, 2, 4), runs=1),
    "issue": Params(jobs=20_000, processes=(1, 2, 4)),
    "quick": Params(jobs=1_000, processes=(1, 2, 4), runs=1),
    "tiny": Params(jobs=60, processes=(1, 2)),
}


def insert_jobs(database_url: str, count: int) -> None:
    from server.store import outbox
    from server.store.db import create_db_engine, session_scope
    from server.store.migrate import upgrade_database
    from server.store.outbox import PlannedRow

    engine = create_db_engine(database_url)
    try:
        upgrade_database(engine)
        now = datetime.now(UTC)
        for start in range(0, count, 2000):
            rows = [
                PlannedRow(
                    job_id=f"{RULE}:{n:06d}",
                    rule_id=RULE,
                    entity="salesInvoices",
                    record_id=f"rec-{n:06d}",
                    record_number=f"SI-{n:06d}",
                    channel="sms",
                    to=f"+4477009{n % 100:05d}",
                    body=f"Invoice SI-{n:06d} is 7 days overdue.",
                    dedupe_key=f"{RULE}|rec-{n:06d}",
                    reason="bench",
                )
                for n in range(start, min(count, start + 2000))
            ]
            with session_scope(engine) as session:
                outbox.insert_planned(session, rows, company_id="c1", now=now)
    finally:
        engine.dispose()


def child_env(sim: Any, database_url: str) -> dict[str, str]:
    nowhere = "http://127.0.0.1:9"
    return {
        **os.environ,
        "PYTHONPATH": str(ROOT),
        "MLC_MODE": "test",
        "MLC_LOG_LEVEL": "WARNING",
        "MLC_DATABASE_URL": database_url,
        "MLC_PUBLIC_BASE_URL": nowhere,
        "MLC_MESSAGES_PER_SECOND": "1000000",
        # A send whose outcome is unknown (a timeout under load) is reconciled before the queue
        # counts as drained; the simulator's Messages list has no lag, so such a send is found at
        # once. The grace applies only to one not found, and start-up refuses one shorter than a
        # Twilio request's timeouts (server/settings.py): 2 x 5 + 15 + 15 s by default.
        "MLC_RECONCILE_GRACE_SECONDS": "40",
        "MLC_RECONCILE_INTERVAL_SECONDS": "1",
        **sim.connector_env(),
        # Services always builds a BC client; the dispatcher never calls it.
        "MLC_BC__API_BASE_URL": nowhere,
        "MLC_BC__AUTHORITY_HOST": nowhere,
        "MLC_BC__TENANT_ID": "00000000-0000-0000-0000-000000000001",
        "MLC_BC__CLIENT_ID": "00000000-0000-0000-0000-000000000002",
        "MLC_BC__CLIENT_SECRET": "unused",
    }


def run_processes(sim: Any, database_url: str, processes: int) -> tuple[float, list[dict[str, Any]]]:
    env = child_env(sim, database_url)
    procs = [
        subprocess.Popen(
            [sys.executable, "-m", "bench.scaleout", "child"],
            cwd=ROOT,
            env=env,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(processes)
    ]
    try:
        for p in procs:  # all connected before any starts: they really race
            assert p.stdout is not None
            line = p.stdout.readline().strip()
            if line != "ready":
                raise RuntimeError(f"dispatcher did not start: {p.stderr.read()[-1500:] if p.stderr else ''}")
        began = time.perf_counter()
        for p in procs:
            assert p.stdin is not None
            p.stdin.write("go\n")
            p.stdin.flush()
        outputs = [p.communicate(timeout=DEADLINE_SECONDS + 30) for p in procs]
        seconds = time.perf_counter() - began
    finally:
        for p in procs:
            if p.returncode is None:
                p.kill()
                p.wait(5)
    reports = []
    for p, (out, err) in zip(procs, outputs, strict=True):
        if p.returncode != 0:
            raise RuntimeError(f"dispatcher failed ({p.returncode}): {err[-1500:]}")
        reports.append(json.loads(out.strip().splitlines()[-1]))
    return seconds, reports


def one_run(params: Params, processes: int) -> dict[str, Any]:
    import sqlalchemy as sa

    from server.runtime.clock import ManualClock
    from server.store.db import create_db_engine
    from server.store.tables import MessageEvent, OutboxMessage
    from simulators.twilio.simulator import TwilioSimulator

    sim = TwilioSimulator(clock=ManualClock(datetime.now(UTC))).start()
    try:
        with fresh_database("scaleout") as url:
            insert_jobs(url, params.jobs)
            seconds, reports = run_processes(sim, url, processes)
            engine = create_db_engine(url)
            try:
                with engine.connect() as conn:
                    rows: list[Any] = list(
                        conn.execute(
                            sa.select(sa.column("status"), sa.column("twilio_sid")).select_from(OutboxMessage)
                        ).all()
                    )
                    details: list[Any] = list(
                        conn.execute(
                            sa.select(sa.column("detail"))
                            .select_from(MessageEvent)
                            .where(sa.column("status") == "unknown")
                        ).scalars()
                    )
                    unknown_details = sorted({str(detail)[:160] for detail in details})
                    # Unknown sends that reconciliation found at Twilio: sent, not by a dispatcher's count.
                    found = int(
                        conn.execute(
                            sa.select(sa.func.count(sa.distinct(sa.column("job_id"))))
                            .select_from(MessageEvent)
                            .where(sa.column("source") == "reconcile", sa.column("status") != "planned")
                        ).scalar_one()
                    )
                    # What the audit went through (e.g. 'unknown' then reconciled): for the diagnosis.
                    events: Counter[str] = Counter(
                        dict(
                            conn.execute(
                                sa.select(sa.column("status"), sa.func.count())
                                .select_from(MessageEvent)
                                .group_by(sa.column("status"))
                            ).all()
                        )
                    )
            finally:
                engine.dispose()
        with sim.state.lock:
            bodies = Counter(m.body for m in sim.state.messages.values())
    finally:
        sim.stop()
    sids = [sid for _status, sid in rows if sid]
    exactly_once = (
        len(rows) == params.jobs
        and len(sids) == params.jobs
        and len(set(sids)) == params.jobs
        and len(bodies) == params.jobs
        and set(bodies.values()) == {1}
        and sum(r["sent"] for r in reports) + found == params.jobs
    )
    return {
        "seconds": seconds,
        "jobs_per_second": params.jobs / seconds,
        "sent_per_process": [r["sent"] for r in reports],
        "exactly_once": exactly_once,
        "twilio_messages": sum(bodies.values()),
        "unknown": int(events.get("unknown", 0)),
        # Where "exactly once" fails, which part: said on the page.
        "diagnosis": {
            "outbox rows": len(rows),
            "rows with a SID": len(sids),
            "distinct SIDs": len(set(sids)),
            "bodies at Twilio": len(bodies),
            "bodies sent more than once": sum(1 for n in bodies.values() if n > 1),
            "sent (dispatchers' count)": sum(r["sent"] for r in reports),
            "found at Twilio by reconciliation": found,
            "outbox statuses": dict(Counter(status for status, _sid in rows)),
            "audit events": dict(events),
            "why unknown": unknown_details,
        },
    }


def run(params: Params, runs: int) -> Section:
    from server.settings import Settings

    runs = params.runs or runs
    section = Section(
        key="scaleout",
        title="5. Dispatcher scale-out",
        method=(
            f"{params.jobs:,} queued SMS jobs on a fresh PostgreSQL database per run, sent by "
            f"{', '.join(map(str, params.processes))} dispatcher processes (the real Dispatcher, batches of "
            f"50, SKIP LOCKED claims, up to {Settings.model_fields['send_concurrency'].default} sends in "
            "flight (MLC_SEND_CONCURRENCY), 'submitting' "
            "committed before each Twilio call, the SID after) to the Twilio simulator, unthrottled. "
            "Time runs from 'go' until every process has found the queue empty."
        ),
    )
    first = params.processes[0]
    checks: list[str] = []
    all_once = True
    for processes in params.processes:
        results = [one_run(params, processes) for _ in range(runs)]
        section.add(
            f"{processes} process{'es' if processes > 1 else ''}: jobs/s",
            "jobs/s",
            [r["jobs_per_second"] for r in results],
            baseline=f"{first} process: jobs/s" if processes != first else None,
        )
        once = all(r["exactly_once"] for r in results)
        all_once = all_once and once
        unknown = [r["unknown"] for r in results]
        if any(unknown):
            section.notes.append(
                f"{processes} process{'es' if processes > 1 else ''}: sends whose outcome was unknown (reconciled before the queue "
                f"counted as drained), per run: {', '.join(map(str, unknown))}."
            )
        section.notes.extend(
            f"{processes} process{'es' if processes > 1 else ''}, run {n}: not exactly once: {r['diagnosis']}"
            for n, r in enumerate(results, 1)
            if not r["exactly_once"]
        )
        split = "; ".join("/".join(str(n) for n in r["sent_per_process"]) for r in results)
        checks.append(
            f"{processes}: {'exactly once' if once else 'NOT exactly once'} (sent per process {split})"
        )
    section.target("every job sent exactly once", all_once, "; ".join(checks))
    section.notes.append(
        f"{os.cpu_count()} logical CPUs run the dispatchers, PostgreSQL and the Twilio simulator together, "
        "so more processes than cores share them."
    )
    return section


# ------------------------------------------------------------------------------------------- child


async def child() -> dict[str, Any]:
    from server.runtime.clock import SystemClock
    from server.sending.dispatcher import Dispatcher
    from server.services import open_services
    from server.settings import Settings

    services = await open_services(Settings(), clock=SystemClock(), migrate=False)
    dispatcher = Dispatcher(services)
    print("ready", flush=True)
    if sys.stdin.readline().strip() != "go":
        raise SystemExit("expected 'go'")
    try:
        sent, passes = await dispatcher.drain(within=DEADLINE_SECONDS)
    finally:
        await services.aclose()
    return {"sent": sent, "passes": passes}


if __name__ == "__main__":
    if sys.argv[1:] != ["child"]:
        raise SystemExit("usage: python -m bench.scaleout child")
    print(json.dumps(asyncio.run(child())), flush=True)
