"""Condition evaluations per second: compiled expression vs hand-written Python vs simpleeval.

    .venv/bin/python bench/expressions_bench.py [--records 100000] [--repeat 3]

One overdue condition over synthetic BC sales invoices. Prints figures and ratios; asserts nothing
(timings depend on the machine). The best of `--repeat` runs is reported for each contender.
"""

from __future__ import annotations

import argparse
import random
import sys
import time
from collections.abc import Callable, Mapping
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import simpleeval

from engine.expressions import compile_expression
from engine.functions import EvaluationContext, days_overdue

EXPRESSION = "status == 'Open' and remainingAmount > 0 and days_overdue(dueDate) >= 7"
NOW = datetime(2026, 3, 30, 9, 0, tzinfo=UTC)
TODAY = NOW.date()


def synthetic_invoices(count: int, seed: int = 7) -> list[dict[str, Any]]:
    rng = random.Random(seed)
    statuses = ["Open", "Open", "Open", "Paid", "Draft", "Canceled"]
    invoices = []
    for i in range(count):
        total = round(rng.uniform(10, 50_000), 2)
        status = rng.choice(statuses)
        invoices.append(
            {
                "id": f"00000000-0000-0000-0000-{i:012d}",
                "number": f"PS-INV{100000 + i}",
                "status": status,
                "dueDate": (TODAY + timedelta(days=rng.randint(-60, 30))).isoformat(),
                "totalAmountIncludingTax": total,
                "remainingAmount": total if status == "Open" and rng.random() < 0.8 else 0,
                "customerNumber": f"C{rng.randint(1, 999):05d}",
            }
        )
    return invoices


def hand_written(record: Mapping[str, Any], today: date) -> bool:
    remaining = record.get("remainingAmount")
    return (
        record.get("status") == "Open"
        and remaining is not None
        and remaining > 0
        and (today - date.fromisoformat(record["dueDate"])).days >= 7
    )


def best_rate(label: str, count: int, repeat: int, run: Callable[[], int]) -> tuple[str, float, int]:
    best = float("inf")
    fired = 0
    for _ in range(repeat):
        start = time.perf_counter()
        fired = run()
        best = min(best, time.perf_counter() - start)
    return label, count / best, fired


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=100_000)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()

    records = synthetic_invoices(args.records)
    contexts = [EvaluationContext(record=r, previous=None, now=NOW, today=TODAY) for r in records]
    compiled = compile_expression(EXPRESSION)
    function = compiled.function

    def simpleeval_functions(ctx: EvaluationContext) -> dict[str, Any]:
        return {"days_overdue": lambda due: days_overdue(ctx, due)}

    # simpleeval parsed once: the tree is reused, names and functions swapped per record.
    parsed_once = simpleeval.SimpleEval()
    tree = parsed_once.parse(EXPRESSION)

    def run_compiled() -> int:
        return sum(1 for ctx in contexts if compiled(ctx))

    def run_compiled_function() -> int:
        return sum(1 for ctx in contexts if function(ctx))

    def run_compiled_with_context() -> int:
        return sum(
            1 for r in records if function(EvaluationContext(record=r, previous=None, now=NOW, today=TODAY))
        )

    def run_hand_written() -> int:
        return sum(1 for r in records if hand_written(r, TODAY))

    def run_simpleeval_once() -> int:
        fired = 0
        for ctx in contexts:
            parsed_once.names = ctx.record
            parsed_once.functions = simpleeval_functions(ctx)
            if parsed_once.eval(EXPRESSION, previously_parsed=tree):
                fired += 1
        return fired

    def run_simpleeval_each() -> int:
        fired = 0
        for ctx in contexts:
            if simpleeval.simple_eval(EXPRESSION, names=ctx.record, functions=simpleeval_functions(ctx)):
                fired += 1
        return fired

    slow_count = min(args.records, 20_000)
    slow_contexts = contexts[:slow_count]

    def run_simpleeval_each_sample() -> int:
        fired = 0
        for ctx in slow_contexts:
            if simpleeval.simple_eval(EXPRESSION, names=ctx.record, functions=simpleeval_functions(ctx)):
                fired += 1
        return fired

    n, rep = args.records, args.repeat
    results = [
        best_rate("hand-written Python", n, rep, run_hand_written),
        best_rate("compiled expression, compiled(ctx)", n, rep, run_compiled),
        best_rate("compiled expression, .function(ctx)", n, rep, run_compiled_function),
        best_rate("compiled + building the context", n, rep, run_compiled_with_context),
        best_rate("simpleeval, parsed once", n, rep, run_simpleeval_once),
        best_rate(
            f"simpleeval, parsed per record ({slow_count:,})", slow_count, 1, run_simpleeval_each_sample
        ),
    ]
    hand_rate = results[0][1]
    print(f"expression: {EXPRESSION}")
    print(f"records: {n:,} synthetic sales invoices, best of {rep} runs, Python {sys.version.split()[0]}")
    print(f"{'contender':<48} {'evals/s':>12} {'slower than hand-written':>26}")
    for label, rate, _fired in results:
        print(f"{label:<48} {rate:>12,.0f} {hand_rate / rate:>25.2f}x")
    fired_counts = {label: fired for label, _rate, fired in results[:5]}
    if len(set(fired_counts.values())) != 1:
        print(f"WARNING: contenders disagree on how many records fire: {fired_counts}")
    else:
        print(f"all contenders fire on {next(iter(fired_counts.values())):,} of {n:,} records")


if __name__ == "__main__":
    main()
