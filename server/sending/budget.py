"""The send budget (messages per second) of the dispatcher (its retry backoff: server/runtime/retry.py).

SendBudget is a token bucket with reservations, as in Go's x/time/rate: each send takes a token;
when the bucket is empty the caller is told how long to wait and the token is already its own, so
a burst of N sends is spread over N / rate seconds instead of being refused. The budget is per
process: with several instances, give each rate / instances (Twilio's own limit is per sender).
It runs on monotonic time, never the wall clock (a clock jump must not release a burst).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable


class SendBudget:
    def __init__(
        self,
        rate: float,
        *,
        burst: float = 1.0,
        now: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        if rate <= 0:
            raise ValueError("messages_per_second must be positive")
        if burst < 1:
            raise ValueError("burst must be at least 1 (one send)")
        self.rate = rate
        self.burst = burst
        self._now = now
        self._sleep = sleep
        self._tokens = burst
        self._last = now()
        self._paused_until = 0.0

    def _refill(self, at: float) -> None:
        elapsed = max(0.0, at - self._last)
        self._tokens = min(self.burst, self._tokens + elapsed * self.rate)
        self._last = at

    def reserve(self, cost: float = 1.0) -> float:
        """Take `cost` tokens now (the balance may go negative); returns seconds to wait before sending."""
        at = self._now()
        self._refill(at)
        self._tokens -= cost
        wait = 0.0 if self._tokens >= 0 else -self._tokens / self.rate
        return max(wait, self._paused_until - at)

    async def acquire(self, cost: float = 1.0) -> float:
        """Wait for the right to send; returns the seconds waited.

        Several senders may wait at once (the dispatcher's concurrent sends): one whose turn comes
        while a pause began meanwhile (a 429 seen by another) waits out the pause and reserves again,
        so the sends after a pause are spread at the rate too, not released together.
        """
        waited = 0.0
        while True:
            wait = self.reserve(cost)
            if wait > 0:
                await self._sleep(wait)
                waited += wait
            paused = self.paused_for()
            if paused <= 0:
                return waited
            await self._sleep(paused)
            waited += paused

    async def wait_unpaused(self) -> float:
        """Wait out a pause, if any (a send that already holds its token); returns the seconds waited."""
        waited = 0.0
        while (paused := self.paused_for()) > 0:
            await self._sleep(paused)
            waited += paused
        return waited

    def pause(self, seconds: float) -> None:
        """Nothing may be sent for `seconds` (Twilio said 429: the whole account is over its limit)."""
        self._paused_until = max(self._paused_until, self._now() + seconds)

    def paused_for(self) -> float:
        return max(0.0, self._paused_until - self._now())
