"""The service's background workers, built from one table so tests, the CLI and the sandbox agree.

Every worker is a class taking `Services` with `async def run_once(self) -> int` (items handled).
The loops run inside the service process; several instances may run at once (PostgreSQL): claims
and leases in the store keep them from doing the same work twice.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Protocol

from server.planning.fetcher import Fetcher
from server.planning.poller import Poller
from server.planning.subscriptions import SubscriptionManager
from server.planning.sweep import Sweeper
from server.runtime.loop import WorkerLoop
from server.sending.dispatcher import Dispatcher
from server.services import Services
from server.settings import Settings


class Worker(Protocol):
    async def run_once(self) -> int: ...


@dataclass(frozen=True)
class WorkerSpec:
    name: str
    factory: Callable[[Services], Worker]
    interval: Callable[[Settings], float]


WORKERS: tuple[WorkerSpec, ...] = (
    WorkerSpec("fetcher", Fetcher, lambda s: s.fetch_interval_seconds),
    WorkerSpec("dispatcher", Dispatcher, lambda s: s.dispatch_interval_seconds),
    WorkerSpec("subscriptions", SubscriptionManager, lambda s: s.subscription_check_interval_seconds),
    WorkerSpec("poller", Poller, lambda s: s.poll_interval_seconds),
    WorkerSpec("sweep", Sweeper, lambda s: 60.0),  # checks whether a sweep is due
)


def build_workers(services: Services, names: tuple[str, ...] | None = None) -> dict[str, WorkerLoop]:
    """Create (not start) the worker loops; `services.workers[name].run_once()` runs one pass."""
    for spec in WORKERS:
        if names is not None and spec.name not in names:
            continue
        worker = spec.factory(services)
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
