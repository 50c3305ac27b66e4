"""Seed data sets for the BC simulator, built relative to the clock's "today" so the sandbox always
has overdue and due-soon invoices whatever the date."""

from __future__ import annotations

from collections.abc import Callable

from simulators.bc.seeds.demo import seed_demo, seed_empty
from simulators.bc.state import BCState

SEEDS: dict[str, Callable[[BCState], list[str]]] = {"demo": seed_demo, "empty": seed_empty}


def apply_seed(state: BCState, name: str) -> list[str]:
    """Replace everything in `state` with the named data set; returns the company ids."""
    try:
        seed = SEEDS[name]
    except KeyError:
        raise ValueError(
            f"seed: unknown data set {name!r} (choose from {', '.join(sorted(SEEDS))})"
        ) from None
    state.reset()
    return seed(state)
