"""A small runtime for the background workers: each worker is a coroutine `run_once()` that a loop
calls at an interval until the service stops. Errors are logged and the loop goes on (with a short
back-off), so one bad record never stops delivery of everything else.

Tests call `run_once()` directly; the service starts the loops in its lifespan.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from server.runtime.logs import get_logger

log = get_logger("ml_connector.workers")


@dataclass
class WorkerLoop:
    name: str
    run_once: Callable[[], Awaitable[int]]
    interval: float
    # When a run did work (returned > 0) the next run starts at once: drain backlogs quickly.
    busy_interval: float = 0.0
    error_backoff: float = 2.0
    runs: int = 0
    errors: int = 0
    last_error: str | None = None
    _task: asyncio.Task[None] | None = field(default=None, repr=False)
    _stop: asyncio.Event = field(default_factory=asyncio.Event, repr=False)
    _wake: asyncio.Event = field(default_factory=asyncio.Event, repr=False)

    @property
    def running(self) -> bool:
        return self._task is not None and not self._task.done()

    def start(self) -> None:
        self._stop.clear()
        self._task = asyncio.create_task(self._loop(), name=f"worker:{self.name}")

    def wake(self) -> None:
        """Run again now instead of waiting out the interval (e.g. new inbox items arrived)."""
        self._wake.set()

    async def stop(self) -> None:
        self._stop.set()
        self._wake.set()
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def _loop(self) -> None:
        while not self._stop.is_set():
            delay = self.interval
            try:
                done = await self.run_once()
                self.runs += 1
                self.last_error = None
                if done > 0:
                    delay = self.busy_interval
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                self.errors += 1
                self.last_error = f"{type(exc).__name__}: {exc}"
                log.exception("worker run failed", worker=self.name)
                delay = max(self.error_backoff, self.interval)
            self._wake.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout=delay)
