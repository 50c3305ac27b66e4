"""Event-loop lag: how late the service's event loop wakes up, as a metric and a log line.

One event loop serves the webhooks, the Twilio status callbacks and every send; anything that
holds it (a CPU-bound step, a blocking call that belongs in a thread, a long garbage collection)
delays all of them at once and shows up as a pause in the sends. The monitor sleeps a short,
fixed interval and records how much later than asked it woke: the loop was busy for that long.
A stall shorter than the interval may be seen only in part; one longer is always seen.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable

from server.runtime.logs import get_logger

log = get_logger("ml_connector.looplag")

INTERVAL_SECONDS = 0.02  # 50 wake-ups a second: a few microseconds each
WARN_SECONDS = 0.25  # a stall this long delays every webhook answer and send: worth a log line
WARN_EVERY_SECONDS = 60.0  # at most one such line a minute (the metric counts them all)


class LoopLagMonitor:
    """Measure the running loop's lag until stopped; `observe` receives each measurement (s)."""

    def __init__(
        self,
        observe: Callable[[float], None],
        *,
        interval: float = INTERVAL_SECONDS,
        warn_after: float = WARN_SECONDS,
    ) -> None:
        self._observe = observe
        self.interval = interval
        self.warn_after = warn_after
        self._task: asyncio.Task[None] | None = None
        self._last_warning = float("-inf")

    def start(self) -> None:
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(self._run(), name="event-loop-lag")

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def _run(self) -> None:
        while True:
            asked = time.monotonic()
            await asyncio.sleep(self.interval)
            lag = max(0.0, time.monotonic() - asked - self.interval)
            self._observe(lag)
            if lag >= self.warn_after and asked - self._last_warning >= WARN_EVERY_SECONDS:
                self._last_warning = asked
                log.warning("event loop stalled", seconds=round(lag, 3))
