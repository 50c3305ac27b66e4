"""The simulators' time: any object with `now()` will do.

A test or the sandbox hands one clock to the connector and to both simulators so that "three days
later" moves all of them at once; the simulators ask only for the methods below (a structural
Protocol), so the connector's own clocks fit without the simulators importing them. `advance` is
optional: the control surfaces call it only when the clock has one.
"""

from __future__ import annotations

import threading
import time
from datetime import UTC, datetime, timedelta
from typing import Protocol


class Clock(Protocol):
    def now(self) -> datetime:
        """The current time, timezone-aware UTC."""
        ...


class SystemClock:
    def now(self) -> datetime:
        return datetime.now(UTC)


class OffsetClock:
    """Real time shifted by an offset that can grow: jump days ahead while seconds still tick."""

    def __init__(self, offset: timedelta = timedelta(0)) -> None:
        self._lock = threading.Lock()
        self._offset = offset

    def now(self) -> datetime:
        with self._lock:
            return datetime.now(UTC) + self._offset

    def advance(self, delta: timedelta) -> datetime:
        if delta < timedelta(0):
            raise ValueError("time does not run backwards")
        with self._lock:
            self._offset += delta
        return self.now()


def monotonic() -> float:
    """Monotonic seconds for rate budgets (never the wall clock)."""
    return time.monotonic()
