"""Benchmark 2: the daily sweep over open sales invoices served by the BC simulator.

The simulator runs in this (the parent) process and is loaded with synthetic customers and open
invoices through its Python handle, growing from one size to the next. Each sweep runs in a fresh
child process (`python -m bench.sweep child CONFIG`) on a fresh PostgreSQL database, so its peak RSS
is its own: the real Sweeper (`sweep_now`) with the shipped rules, reading pages of 1,000 with the
customer expanded, evaluating and storing each page before the next. The parent counts the HTTP
requests the simulator received.
"""

from __future__ import annotations

import asyncio
import json
import random
import resource
import subprocess
import sys
import time
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from bench.pg import fresh_database
from bench.report import ROOT, Section

CHILD_TIMEOUT = 1800  # a 100k sweep takes about a minute alone, many on a busy shared machine


@dataclass(frozen=True)
class Params:
    sizes: tuple[int, ...]
    customers_per_invoice: float = 0.05  # one customer per 20 invoices
    runs: int | None = None  # overrides the runs asked for (a 100k sweep takes about a minute)


SIZES = {
    "full": Params(sizes=(10_000, 50_000, 100_000), runs=1),
    "issue": Params(sizes=(10_000, 50_000, 100_000)),
    "quick": Params(sizes=(5_000, 20_000)),
    "tiny": Params(sizes=(150, 300)),
}


def load_invoices(
    sim: Any, company: str, start: int, stop: int, customers: list[str], seed: int = 11
) -> None:
    """Open posted invoices numbered start..stop-1, due from 45 days ago to 15 days ahead."""
    rng = random.Random(seed + start)
    today = sim.clock.now().date()
    for i in range(start, stop):
        amount = round(rng.uniform(50, 30_000), 2)
        sim.create_record(
            company,
            "salesInvoices",
            {
                "number": f"PS-INV{100000 + i}",
                "customerId": customers[i % len(customers)],
                "status": "Open",
                "dueDate": (today + timedelta(days=rng.randint(-45, 15))).isoformat(),
                "totalAmountIncludingTax": amount,
                "remainingAmount": amount,
            },
        )


def add_customers(sim: Any, company: str, start: int, stop: int) -> list[str]:
    return [
        sim.create_record(
            company,
            "customers",
            {
                "number": f"C{n:06d}",
                "displayName": f"Customer {n}",
                "phoneNumber": f"+1 503 555 {n % 10_000:04d}",
                "currencyCode": "USD",
            },
        )["id"]
        for n in range(start, stop)
    ]


def child_config(sim: Any, company: str, database_url: str) -> dict[str, Any]:
    return {
        "database_url": database_url,
        "bc": {
            "api_base_url": sim.origin,
            "authority_host": sim.origin,
            "tenant_id": sim.tenant_id,
            "environment": sim.environment,
            "client_id": sim.client_id,
            "client_secret": sim.client_secret,
            "companies": [company],
            "ca_cert": str(sim.ca_cert_path),
        },
    }


def run_child(config: dict[str, Any]) -> dict[str, Any]:
    proc = subprocess.run(
        [sys.executable, "-m", "bench.sweep", "child", json.dumps(config)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=CHILD_TIMEOUT,
    )
    if proc.returncode != 0:
        raise RuntimeError(f"sweep child failed ({proc.returncode}): {proc.stderr[-2000:]}")
    result: dict[str, Any] = json.loads(proc.stdout.strip().splitlines()[-1])
    return result


def run(params: Params, runs: int) -> Section:
    runs = params.runs or runs
    from server.runtime.clock import OffsetClock
    from simulators.bc.simulator import BCSimulator

    section = Section(
        key="sweep",
        title="2. Sweep",
        method=(
            "The scheduled sweep (`Sweeper.sweep_now`, shipped rules) over open sales invoices served by "
            "the BC simulator over HTTPS in pages of 1,000 with `$expand=customer` (one customer per 20 "
            f"invoices), at {', '.join(f'{n:,}' for n in params.sizes)} invoices. Each run is a fresh "
            "process on a fresh PostgreSQL database; wall time covers reading, evaluating and storing "
            "every page and the grouped reminders (held in the database until the last page, then stored "
            "a few recipients at a time); RSS is the child's own peak (`VmHWM`; `ru_maxrss` would count "
            "the parent's, the simulator holding every invoice), beside its RSS "
            "once started (imports, settings, migrations) before the sweep."
        ),
    )
    sim = BCSimulator(clock=OffsetClock(), seed="empty")
    company = sim.companies[0]
    loaded = 0
    customers: list[str] = []
    by_size: dict[int, list[dict[str, Any]]] = {}
    try:
        sim.start()
        for size in params.sizes:
            wanted = max(1, int(size * params.customers_per_invoice))
            customers += add_customers(sim, company, len(customers), wanted)
            load_invoices(sim, company, loaded, size, customers)
            loaded = size
            for _ in range(runs):
                with fresh_database("sweep") as url:
                    sim.clear_requests()
                    tokens_before = sim.token_requests
                    result = run_child(child_config(sim, company, url))
                    api = [r for r in sim.requests() if "/salesInvoices" in r["path"]]
                    result["bc_requests"] = len(api)
                    result["token_requests"] = sim.token_requests - tokens_before
                by_size.setdefault(size, []).append(result)
    finally:
        sim.stop()

    first = params.sizes[0]
    for size, results in by_size.items():
        section.add(f"{size:,} invoices: wall time", "s", [r["seconds"] for r in results], digits=2)
        section.add(
            f"{size:,} invoices: invoices/s", "invoices/s", [r["evaluated"] / r["seconds"] for r in results]
        )
        section.add(f"{size:,} invoices: BC requests", "requests", [r["bc_requests"] for r in results])
        section.add(
            f"{size:,} invoices: peak RSS",
            "MiB",
            [r["peak_rss_mib"] for r in results],
            baseline=f"{first:,} invoices: peak RSS" if size != first else None,
            digits=1,
        )
        section.add(
            f"{size:,} invoices: RSS before the sweep", "MiB", [r["start_rss_mib"] for r in results], digits=1
        )
        section.add(f"{size:,} invoices: messages planned", "rows", [r["outbox_rows"] for r in results])
    evaluated = {size: {r["evaluated"] for r in rs} for size, rs in by_size.items()}
    complete = all(ev == {size} for size, ev in evaluated.items())
    if not complete:
        section.notes.append(f"WARNING: records evaluated differ from the invoices served: {evaluated}")
    left = sorted({r.get("staged_left", 0) for rs in by_size.values() for r in rs})
    if left != [0]:
        section.notes.append(f"WARNING: held messages left in the sweep's staging table: {left}")
    last = params.sizes[-1]
    growth = section.ratio(f"{last:,} invoices: peak RSS") or 0.0
    section.target(
        f"memory flat from {first:,} to {last:,} invoices (peak RSS within 1.25x)",
        growth <= 1.25 and complete,
        f"{growth:.2f}x",
    )
    pages = {size: -(-size // 1000) for size in params.sizes}
    section.notes.append(
        "BC requests are the `salesInvoices` GETs the simulator answered (one per page of 1,000: "
        + ", ".join(f"{pages[s]} expected at {s:,}" for s in params.sizes)
        + f"); token requests per sweep: {sorted({r['token_requests'] for rs in by_size.values() for r in rs})}."
    )
    return section


# ------------------------------------------------------------------------------------------- child


def _peak_rss_mib() -> float:
    """This process's own peak RSS: VmHWM, the high-water mark of its address space since exec.

    Not `ru_maxrss`: on Linux that keeps the RSS of the address space replaced by exec, i.e. of the
    parent that spawned us (the BC simulator holding every invoice), so it grew with the invoices
    served even when the sweep's own memory did not.
    """
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def _rss_mib() -> float:
    with open("/proc/self/statm") as f:
        pages = int(f.read().split()[1])
    return pages * resource.getpagesize() / 1024 / 1024


async def child(config: dict[str, Any]) -> dict[str, Any]:
    import sqlalchemy as sa

    from server.planning.sweep import Sweeper
    from server.runtime.clock import SystemClock
    from server.services import open_services
    from server.settings import BCSettings, Settings, TwilioSettings
    from server.store.db import read_scope
    from server.store.tables import OutboxMessage, SweepHeldMessage

    settings = Settings(
        mode="test",
        database_url=config["database_url"],
        bc=BCSettings(**config["bc"]),
        # Never called by the sweep; Services always builds a Twilio client.
        twilio=TwilioSettings(
            account_sid="AC" + "0" * 32, api_key_sid="SK" + "0" * 32, from_number="+15005550006"
        ),
    )
    services = await open_services(settings, clock=SystemClock())
    try:
        sweeper = Sweeper(services)
        start_rss = _rss_mib()
        began = time.perf_counter()
        evaluated = await sweeper.sweep_now()
        seconds = time.perf_counter() - began
        with read_scope(services.db) as session:
            rows = session.execute(sa.select(sa.func.count()).select_from(OutboxMessage)).scalar_one()
            staged = session.execute(sa.select(sa.func.count()).select_from(SweepHeldMessage)).scalar_one()
    finally:
        await services.aclose()
    return {
        "evaluated": evaluated,
        "seconds": seconds,
        "outbox_rows": rows,
        "staged_left": staged,
        "start_rss_mib": start_rss,
        "peak_rss_mib": _peak_rss_mib(),
    }


if __name__ == "__main__":
    if len(sys.argv) != 3 or sys.argv[1] != "child":
        raise SystemExit("usage: python -m bench.sweep child CONFIG_JSON")
    print(json.dumps(asyncio.run(child(json.loads(sys.argv[2])))), flush=True)
