"""Reading the Prometheus text format in tests."""

from __future__ import annotations

import re


def sample(text: str, name: str, **labels: str) -> float | None:
    """The value of one sample in Prometheus text format (None when absent)."""
    wanted = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
    for line in text.splitlines():
        if line.startswith("#"):
            continue
        match = re.match(r"^([a-zA-Z_:][\w:]*)(?:\{(.*)\})? (\S+)$", line)
        if match is None or match.group(1) != name:
            continue
        got = ",".join(sorted(match.group(2).split(","))) if match.group(2) else ""
        if got == wanted:
            return float(match.group(3))
    return None
