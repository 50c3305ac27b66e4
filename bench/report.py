"""Figures, medians, targets and the docs/benchmarks.md page.

A benchmark returns a `Section`: figures (each the median of its samples, with the samples kept),
the targets with whether this run met them, and notes. A figure may name a baseline
measured in the same run; its ratio is value / baseline value.
"""

from __future__ import annotations

import importlib.metadata
import math
import os
import platform
import statistics
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


@dataclass(frozen=True)
class Figure:
    label: str
    unit: str
    samples: tuple[float, ...]
    baseline: str | None = None  # label of a figure in the same section
    digits: int = 0  # decimals shown

    @property
    def value(self) -> float:
        return statistics.median(self.samples)

    def show(self, value: float | None = None) -> str:
        shown = self.value if value is None else value
        return f"{shown:,.{self.digits}f}"


@dataclass(frozen=True)
class Target:
    text: str  # what the issue asks, e.g. "within 2x of hand-written"
    met: bool | None  # None: not measured in this run (`measured` says why)
    measured: str  # the figure it was judged on, e.g. "1.42x"


@dataclass
class Section:
    key: str
    title: str
    method: str
    figures: list[Figure] = field(default_factory=list)
    targets: list[Target] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    error: str | None = None  # the benchmark could not run: why

    def add(
        self,
        label: str,
        unit: str,
        samples: Sequence[float],
        *,
        baseline: str | None = None,
        digits: int = 0,
    ) -> Figure:
        if not samples:
            raise ValueError(f"{self.key}: figure {label!r} has no samples")
        figure = Figure(label, unit, tuple(float(s) for s in samples), baseline, digits)
        self.figures.append(figure)
        return figure

    def figure(self, label: str) -> Figure:
        for figure in self.figures:
            if figure.label == label:
                return figure
        raise KeyError(f"{self.key}: no figure {label!r}")

    def ratio(self, label: str) -> float | None:
        figure = self.figure(label)
        if figure.baseline is None:
            return None
        base = self.figure(figure.baseline).value
        return figure.value / base if base else None

    def target(self, text: str, met: bool, measured: str) -> None:
        self.targets.append(Target(text, met, measured))


def _verdict(target: Target) -> str:
    if target.met is None:
        return "not measured"
    return "met" if target.met else "**NOT met**"


def median(values: Sequence[float]) -> float:
    return statistics.median(values)


def percentile(values: Sequence[float], p: float) -> float:
    """Nearest-rank percentile (p in 0..100) of a non-empty sequence."""
    if not values:
        raise ValueError("percentile of nothing")
    ordered = sorted(values)
    rank = max(1, min(len(ordered), math.ceil(p / 100 * len(ordered))))
    return ordered[rank - 1]


# ---------------------------------------------------------------------------------------------- page


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _memory_gib() -> str:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return f"{int(line.split()[1]) / 1024 / 1024:.1f} GiB"
    except OSError:
        pass
    return "unknown"


def _git_commit() -> str:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True, timeout=5
        )
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return out.stdout.strip() or "unknown"


def _version(dist: str) -> str:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


def environment(postgres_version: str | None) -> list[tuple[str, str]]:
    import sqlite3

    versions = ", ".join(
        f"{name} {_version(name)}"
        for name in ("litestar", "uvicorn", "sqlalchemy", "psycopg", "httpx", "simpleeval", "jinja2")
    )
    return [
        ("Machine", f"{_cpu_model()}, {os.cpu_count()} logical CPUs, {_memory_gib()} RAM"),
        ("OS", f"{platform.system()} {platform.release()} ({platform.machine()})"),
        ("Python", f"{platform.python_implementation()} {sys.version.split()[0]}"),
        ("Databases", f"SQLite {sqlite3.sqlite_version}; PostgreSQL {postgres_version or 'not reachable'}"),
        ("Libraries", versions),
        ("Commit", _git_commit()),
    ]


def _cell(text: str) -> str:
    return text.replace("|", "\\|")


def render_section(section: Section) -> list[str]:
    lines = [f"## {section.title}", "", section.method, ""]
    if section.error:
        lines += [f"**Could not run:** {_cell(section.error)}", ""]
    if section.figures:
        lines += [
            "| Figure | Median | Unit | Runs | vs baseline |",
            "|---|---:|---|---|---:|",
        ]
        for figure in section.figures:
            runs = ", ".join(figure.show(s) for s in figure.samples)
            ratio = section.ratio(figure.label)
            versus = f"{ratio:.2f}x {figure.baseline}" if ratio is not None else ""
            lines.append(
                f"| {_cell(figure.label)} | {figure.show()} | {figure.unit} | {runs} | {_cell(versus)} |"
            )
        lines.append("")
    if section.targets:
        lines += ["Targets:", ""]
        for target in section.targets:
            verdict = _verdict(target)
            lines.append(f"- {target.text}: {verdict} ({target.measured})")
        lines.append("")
    if section.notes:
        lines += ["Notes:", ""]
        lines += [f"- {note}" for note in section.notes]
        lines.append("")
    return lines


def render_page(
    sections: Sequence[Section],
    *,
    mode: str,
    runs: int,
    started: datetime,
    seconds: float,
    postgres_version: str | None,
) -> str:
    lines = [
        "# Benchmarks",
        "",
        "Written by `make bench` (`.venv/bin/python -m bench`); do not edit by hand. Each figure is the",
        "median of the runs listed beside it; a ratio compares a figure with its baseline measured in",
        "the same run on the same machine. Targets are the project's own and never fail a build.",
        "",
        "| | |",
        "|---|---|",
        f"| Date | {started.astimezone(UTC).strftime('%Y-%m-%d %H:%M UTC')} |",
        f"| Mode | {mode}, {runs} runs per figure unless the row says otherwise, {seconds:.0f} s in all |",
    ]
    lines += [f"| {name} | {_cell(value)} |" for name, value in environment(postgres_version)]
    lines.append("")
    summary = [(s, t) for s in sections for t in s.targets]
    if summary:
        lines += ["## Summary", "", "| Benchmark | Target | Result | Measured |", "|---|---|---|---|"]
        for section, target in summary:
            verdict = _verdict(target)
            lines.append(f"| {section.title} | {_cell(target.text)} | {verdict} | {_cell(target.measured)} |")
        lines.append("")
    for section in sections:
        lines += render_section(section)
    return "\n".join(lines).rstrip() + "\n"
