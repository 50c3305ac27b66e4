"""The service's background workers, built from one table so tests, the CLI and the sandbox agree.

Every worker is a class taking `Services` with `async def run_once(self) -> int` (items handled).
The loops run inside the service process; several instances may run at once (PostgreSQL): claims
and leases in the store keep them from doing the same work twice.
"""

from __future__ import annotations

import importlib
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Protocol

from server.services import Services
from server.settings import Settings
from server.workers import WorkerLoop


class Worker(Protocol):
    async def run_once(self) -> int: ...


@dataclass(frozen=True)
class WorkerSpec:
    name: str
    target: str  # "module:Class"
    interval: Callable[[Settings], float]


WORKERS: tuple[WorkerSpec, ...] = (
    WorkerSpec("fetcher", "server.fetcher:Fetcher", lambda s: s.fetch_interval_seconds),
    WorkerSpec("dispatcher", "server.dispatcher:Dispatcher", lambda s: s.dispatch_interval_seconds),
    WorkerSpec(
        "subscriptions",
        "server.subscriptions:SubscriptionManager",
        lambda s: s.subscription_check_interval_seconds,
    ),
    WorkerSpec("poller", "server.poller:Poller", lambda s: s.poll_interval_seconds),
    WorkerSpec("sweep", "server.sweep:Sweeper", lambda s: 60.0),  # checks whether a sweep is due
)


def _load(target: str) -> Callable[[Services], Worker]:
    module_name, _, attr = target.partition(":")
    factory: Callable[[Services], Worker] = getattr(importlib.import_module(module_name), attr)
    return factory


def build_workers(services: Services, names: tuple[str, ...] | None = None) -> dict[str, WorkerLoop]:
    """Create (not start) the worker loops; `services.workers[name].run_once()` runs one pass."""
    for spec in WORKERS:
        if names is not None and spec.name not in names:
            continue
        worker = _load(spec.target)(services)
        run_once: Callable[[], Awaitable[int]] = worker.run_once
        services.workers[spec.name] = WorkerLoop(
            name=spec.name, run_once=run_once, interval=spec.interval(services.settings)
        )
    return services.workers


async def start_workers(services: Services) -> None:
    if not services.workers:
        build_workers(services)
    for loop in services.workers.values():
        if not loop.running:
            loop.start()
    services.workers_started = True


async def stop_workers(services: Services) -> None:
    services.workers_started = False
    for loop in services.workers.values():
        await loop.stop()
