"""Smoke tests of the benchmarks: each runs at a tiny size and produces its figures and targets.

Behaviour only (the figures exist, the work was complete and correct); never timing: whether a
target is met depends on the machine, so it is not asserted.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from bench.__main__ import main, run_benchmark
from bench.report import Section, percentile
from bench.rules import EVALUATION, evaluation_share


def figures(section: Section) -> dict[str, float]:
    assert section.error is None, section.error
    return {f.label: f.value for f in section.figures}


def test_percentile_is_nearest_rank() -> None:
    values = [float(n) for n in range(1, 101)]
    assert percentile(values, 50) == 50.0
    assert percentile(values, 99) == 99.0
    assert percentile([3.0], 99) == 3.0


def test_rules_contenders_agree_and_the_page_is_written(tmp_path: Path) -> None:
    out = tmp_path / "benchmarks.md"
    assert main(["--only", "rules", "--size", "tiny", "--runs", "1", "--output", str(out)]) == 0
    page = out.read_text()
    assert page.startswith("# Benchmarks\n")
    for heading in ("| Machine |", "| Python |", "| Databases |", "## Summary", "## 1. Rule evaluation"):
        assert heading in page
    assert "conditions: engine (compiled checks)" in page
    assert "x conditions: hand-written Python" in page  # a ratio to the baseline of the same run
    assert "WARNING" not in page  # every contender found the same rules firing


def rules_at(rate: float) -> Section:
    section = Section(key="rules", title="1. Rule evaluation", method="")
    section.add(EVALUATION, "invoices/s", [rate])
    return section


def test_evaluation_share_is_judged_on_the_100k_sweep_of_the_same_run() -> None:
    rules, sweep = rules_at(50_000.0), Section(key="sweep", title="2. Sweep", method="")
    sweep.add("10,000 invoices: wall time", "s", [5.0])
    sweep.add("100,000 invoices: wall time", "s", [50.0])
    evaluation_share(rules, sweep)
    share = rules.targets[0]  # the headline target comes first
    assert (share.text, share.met, share.measured) == (
        "evaluation is under 5% of the sweep's wall time",
        True,
        "4.0%: 2.00 s of 50.0 s",
    )
    evaluation_share(slow := rules_at(10_000.0), sweep)
    assert (slow.targets[0].met, slow.targets[0].measured) == (False, "20.0%: 10.00 s of 50.0 s")


def test_evaluation_share_without_a_sweep_says_it_was_not_measured() -> None:
    rules = rules_at(50_000.0)
    evaluation_share(rules, None)
    assert rules.targets[0].met is None
    assert rules.targets[0].measured == "no figure: the sweep section was not run"
    smaller = Section(key="sweep", title="2. Sweep", method="")
    smaller.add("300 invoices: wall time", "s", [1.5])
    evaluation_share(rules := rules_at(1_000.0), smaller)
    assert rules.targets[0].text.endswith("(at 300 invoices: the sweep did not run at 100,000)")
    assert rules.targets[0].measured == "20.0%: 0.30 s of 1.5 s"


def test_rules_figures() -> None:
    section = run_benchmark("rules", "tiny", 1)
    values = figures(section)
    assert len(values) == 6 and all(v > 0 for v in values.values())
    assert [t.text for t in section.targets] == [
        "engine.evaluate within 2x of the same rules hand-written (same messages)"
    ]
    assert not any("WARNING" in note for note in section.notes)


@pytest.mark.postgres
@pytest.mark.slow
def test_sweep_reads_every_invoice_in_pages(postgres_admin_url: str) -> None:
    section = run_benchmark("sweep", "tiny", 1)
    values = figures(section)
    assert values["150 invoices: BC requests"] == 1  # one page of up to 1,000
    assert values["300 invoices: BC requests"] == 1
    assert values["300 invoices: messages planned"] > 0
    assert values["300 invoices: peak RSS"] >= values["300 invoices: RSS before the sweep"] > 0
    assert not any("WARNING" in note for note in section.notes)  # every invoice was evaluated
    assert section.targets[0].text.startswith("memory flat from 150 to 300 invoices")


@pytest.mark.postgres
@pytest.mark.slow
def test_burst_sends_one_message_per_customer(postgres_admin_url: str) -> None:
    section = run_benchmark("burst", "tiny", 1)
    values = figures(section)
    assert values["messages accepted by Twilio"] == 20
    assert 0 < values["BC requests"] < 20  # coalesced: far fewer reads than notifications
    assert values["latency p99"] >= values["latency p50"] > 0
    unretried = next(t for t in section.targets if t.text.startswith("no 429"))
    assert unretried.met, unretried.measured
    assert "Webhook answers: 202;" in section.notes[0]


@pytest.mark.postgres
@pytest.mark.slow
def test_ingest_measures_both_endpoints_on_both_backends(postgres_admin_url: str) -> None:
    section = run_benchmark("ingest", "tiny", 1)
    values = figures(section)
    for backend in ("SQLite", "PostgreSQL"):
        assert values[f"{backend} bare: batches/s"] > 0
        assert values[f"{backend} /webhooks/bc: batches/s"] > 0
        assert section.ratio(f"{backend} /webhooks/bc: batches/s") is not None
    assert all("non-202" not in t.measured for t in section.targets)  # every POST was accepted


@pytest.mark.postgres
@pytest.mark.slow
def test_scaleout_sends_each_job_exactly_once(postgres_admin_url: str) -> None:
    section = run_benchmark("scaleout", "tiny", 1)
    values = figures(section)
    assert set(values) == {"1 process: jobs/s", "2 processes: jobs/s"}
    [once] = section.targets
    assert once.met, once.measured
