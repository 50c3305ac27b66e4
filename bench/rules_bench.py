"""Shipped rules over synthetic invoices: engine.evaluate vs the same logic hand-written in Python.

    .venv/bin/python bench/rules_bench.py [--records 100000] [--repeat 3]

Both sides do the same work per invoice: the two sweep rules' conditions (invoice-overdue with its
stages, invoice-due-soon), and for the invoices that fire, the phone normalisation and the
message text. Prints evaluations per second and the ratio; asserts nothing.
"""

from __future__ import annotations

import argparse
import random
import sys
import time
from collections.abc import Callable
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from engine.evaluate import evaluate
from engine.loader import load_ruleset
from engine.phones import to_e164
from engine.render import format_date, money

ROOT = Path(__file__).resolve().parents[1]
NOW = datetime(2026, 11, 25, 17, 0, tzinfo=UTC)
TODAY = date(2026, 11, 25)  # in America/Los_Angeles at NOW


def invoices(count: int, seed: int = 7) -> list[dict[str, Any]]:
    rng = random.Random(seed)
    out = []
    for i in range(count):
        due = TODAY + timedelta(days=rng.randint(-60, 20))
        out.append(
            {
                "id": f"inv-{i}",
                "number": f"PS-INV{100000 + i}",
                "status": rng.choice(["Open", "Open", "Open", "Paid", "Draft"]),
                "dueDate": due.isoformat(),
                "remainingAmount": rng.choice([0, round(rng.uniform(10, 9000), 2)]),
                "currencyCode": "USD",
                "customer": {"displayName": "Northwind", "phoneNumber": "503-555-0142", "blocked": " "},
            }
        )
    return out


def hand_written(record: dict[str, Any]) -> list[tuple[str, str]]:
    """invoice-overdue and invoice-due-soon, written directly."""
    out: list[tuple[str, str]] = []
    if record["status"] != "Open" or not record["remainingAmount"] > 0:
        return out
    due = date.fromisoformat(record["dueDate"])
    overdue = (TODAY - due).days
    customer = record["customer"]
    until = -overdue
    if 0 <= until <= 3 and until in range(4):
        to = to_e164(customer["phoneNumber"], "US").number
        when = "today" if until == 0 else f"on {format_date(record['dueDate'])}"
        amount = money(record["remainingAmount"], record["currencyCode"])
        out.append((to, f"{customer['displayName']}: invoice {record['number']} for {amount} is due {when}."))
    if overdue >= 7 and customer["blocked"] != "All":
        to = to_e164(customer["phoneNumber"], "US").number
        amount = money(record["remainingAmount"], record["currencyCode"])
        out.append(
            (
                to,
                f"{customer['displayName']}: invoice {record['number']} for {amount} is {overdue} days overdue.",
            )
        )
    return out


def best(func: Callable[[], int], repeat: int) -> tuple[float, int]:
    times = []
    fired = 0
    for _ in range(repeat):
        start = time.perf_counter()
        fired = func()
        times.append(time.perf_counter() - start)
    return min(times), fired


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--records", type=int, default=100_000)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    ruleset = load_ruleset(ROOT / "rules", ROOT / "templates")
    data = invoices(args.records)

    def engine_run() -> int:
        return sum(len(evaluate("salesInvoices", r, ruleset, NOW, event="sweep")) for r in data)

    def hand_run() -> int:
        return sum(len(hand_written(r)) for r in data)

    engine_time, engine_fired = best(engine_run, args.repeat)
    hand_time, hand_fired = best(hand_run, args.repeat)
    n = args.records
    print(f"{n:,} invoices, 2 sweep rules each (best of {args.repeat})")
    print(f"  hand-written Python : {n / hand_time:>12,.0f} records/s  ({hand_fired:,} messages)")
    print(f"  engine.evaluate     : {n / engine_time:>12,.0f} records/s  ({engine_fired:,} messages)")
    print(f"  ratio               : {engine_time / hand_time:>12.2f}x slower than hand-written")


if __name__ == "__main__":
    main()
