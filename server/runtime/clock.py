"""Time as a dependency, so simulators, workers and the sandbox scenario can move it together.

Production uses SystemClock. Tests and the sandbox use ManualClock, which stays put until advanced
(or, with `rate`, runs faster than real time from an offset), so "three days later" takes no waiting.
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


class ManualClock:
    """A clock that moves only when told to. Thread-safe: simulators read it from server threads."""

    def __init__(self, start: datetime | None = None) -> None:
        start = start or datetime.now(UTC)
        if start.tzinfo is None:
            raise ValueError("ManualClock needs a timezone-aware start time")
        self._lock = threading.Lock()
        self._now = start.astimezone(UTC)

    def now(self) -> datetime:
        with self._lock:
            return self._now

    def advance(self, delta: timedelta) -> datetime:
        if delta < timedelta(0):
            raise ValueError("time does not run backwards")
        with self._lock:
            self._now += delta
            return self._now

    def set(self, moment: datetime) -> datetime:
        if moment.tzinfo is None:
            raise ValueError("set() needs a timezone-aware time")
        with self._lock:
            if moment < self._now:
                raise ValueError("time does not run backwards")
            self._now = moment.astimezone(UTC)
            return self._now


class OffsetClock:
    """Real time shifted by an offset that can grow: the sandbox jumps days ahead while seconds still tick."""

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
    """Monotonic seconds for timeouts and rate budgets (never the wall clock)."""
    return time.monotonic()
