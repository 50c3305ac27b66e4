"""`python -m bench`: run the benchmarks and write docs/benchmarks.md.

    .venv/bin/python -m bench                 # everything, a few minutes on 2 cores
    .venv/bin/python -m bench --quick         # smaller sizes, fewer runs
    .venv/bin/python -m bench --only rules,ingest --runs 5 --output /tmp/bench.md

A benchmark that crashes is reported on the page (and the exit status is 1); a missed target is
only reported. Benchmarks that need PostgreSQL say so when no server answers.
"""

from __future__ import annotations

import argparse
import importlib
import sys
import time
import traceback
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench.pg import server_version
from bench.report import ROOT, Section, render_page
from bench.rules import evaluation_share

# key -> (module, title): the order of the page.
BENCHMARKS: dict[str, tuple[str, str]] = {
    "rules": ("bench.rules", "1. Rule evaluation"),
    "sweep": ("bench.sweep", "2. Sweep"),
    "burst": ("bench.burst", "3. Notification burst"),
    "ingest": ("bench.ingest", "4. Webhook ingest"),
    "scaleout": ("bench.scaleout", "5. Dispatcher scale-out"),
}


def run_benchmark(key: str, size: str, runs: int) -> Section:
    module_name, title = BENCHMARKS[key]
    try:
        module: Any = importlib.import_module(module_name)
        section: Section = module.run(module.SIZES[size], runs)
    except Exception as exc:  # reported on the page; the other benchmarks still run
        traceback.print_exc()
        last = (str(exc).strip().splitlines() or [""])[-1]  # the page gets one line; stderr the rest
        return Section(key=key, title=title, method="", error=f"{type(exc).__name__}: {last}")
    return section


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smaller sizes and 2 runs: a fast pass")
    parser.add_argument(
        "--size",
        choices=("full", "issue", "quick", "tiny"),
        help="size set: full (default, fits a few minutes), issue (every size the targets name, longer), quick, tiny",
    )
    parser.add_argument("--runs", type=int, help="runs per figure (default 3, quick 2)")
    parser.add_argument("--only", help=f"comma-separated subset of {','.join(BENCHMARKS)}")
    parser.add_argument("--output", type=Path, default=ROOT / "docs" / "benchmarks.md")
    parser.add_argument("--no-write", action="store_true", help="print the page instead of writing it")
    args = parser.parse_args(argv)

    size = args.size or ("quick" if args.quick else "full")
    runs = args.runs or (3 if size in ("full", "issue") else 2)
    if runs < 1:
        parser.error("--runs must be at least 1")
    keys = list(BENCHMARKS)
    if args.only:
        keys = [k.strip() for k in args.only.split(",") if k.strip()]
        unknown = [k for k in keys if k not in BENCHMARKS]
        if unknown:
            parser.error(f"unknown benchmark(s) {', '.join(unknown)}; choose from {', '.join(BENCHMARKS)}")

    started = datetime.now(UTC)
    clock = time.monotonic()
    sections: list[Section] = []
    for key in keys:
        print(f"== {BENCHMARKS[key][1]} ({size}, {runs} runs)", file=sys.stderr, flush=True)
        began = time.monotonic()
        section = run_benchmark(key, size, runs)
        sections.append(section)
        print(f"   {time.monotonic() - began:.1f} s", file=sys.stderr, flush=True)
        for target in section.targets:
            print(
                f"   {'met' if target.met else 'NOT met'}: {target.text} ({target.measured})", file=sys.stderr
            )
        if section.error:
            print(f"   could not run: {section.error}", file=sys.stderr)
    # Rule evaluation is judged beside the sweep of the same run (both sections, or a note saying why not).
    by_key = {section.key: section for section in sections}
    if "rules" in by_key and not by_key["rules"].error:
        evaluation_share(by_key["rules"], by_key.get("sweep"))
        headline = by_key["rules"].targets[0]
        verdict = "not measured" if headline.met is None else "met" if headline.met else "NOT met"
        print(f"   {verdict}: {headline.text} ({headline.measured})", file=sys.stderr)
    page = render_page(
        sections,
        mode=size,
        runs=runs,
        started=started,
        seconds=time.monotonic() - clock,
        postgres_version=server_version(),
    )
    if args.no_write:
        print(page)
    else:
        args.output.parent.mkdir(parents=True, exist_ok=True)
        args.output.write_text(page, encoding="utf-8")
        print(f"wrote {args.output}", file=sys.stderr)
    return 1 if any(s.error for s in sections) else 0


if __name__ == "__main__":
    raise SystemExit(main())
