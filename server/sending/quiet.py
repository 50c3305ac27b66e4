"""Quiet hours: when a rule says "nothing between 21:00 and 08:00 local", when may a message go?

Pure functions (no clock, no database). A window is "HH:MM-HH:MM" in the rule's IANA time zone,
start inclusive, end exclusive; it may span midnight ("21:00-08:00"). A window whose start equals
its end is empty (a whole-day silence would hold messages forever; disable the rule instead).

Daylight-saving time: the end of the window is a local wall-clock time. If it falls in a spring-
forward gap (e.g. 01:30 on the night clocks jump 01:00 -> 02:00), Python's zoneinfo reads it with
the pre-transition offset, which is a real instant just after the gap; if it is ambiguous (autumn),
the first occurrence is used. Either way the hold ends at or after the local end time.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime, time, timedelta
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

_WINDOW = re.compile(r"^\s*(\d{2}):(\d{2})\s*-\s*(\d{2}):(\d{2})\s*$")


class QuietHoursError(ValueError):
    """A quiet-hours window or time zone that cannot be read."""


@dataclass(frozen=True)
class QuietWindow:
    start: time
    end: time

    @property
    def spans_midnight(self) -> bool:
        return self.end < self.start

    @property
    def empty(self) -> bool:
        return self.start == self.end

    def contains(self, local: time) -> bool:
        """Is the local wall-clock time `local` inside the window (start inclusive, end exclusive)?"""
        if self.empty:
            return False
        if self.spans_midnight:
            return local >= self.start or local < self.end
        return self.start <= local < self.end

    def __str__(self) -> str:
        return f"{self.start:%H:%M}-{self.end:%H:%M}"


def parse_quiet_hours(text: str) -> QuietWindow:
    """'21:00-08:00' -> QuietWindow. Raises QuietHoursError naming the bad value."""
    match = _WINDOW.match(text)
    if match is None:
        raise QuietHoursError(f"quiet_hours {text!r}: expected HH:MM-HH:MM, e.g. '21:00-08:00'")
    h1, m1, h2, m2 = (int(g) for g in match.groups())
    if h1 > 23 or h2 > 23 or m1 > 59 or m2 > 59:
        raise QuietHoursError(f"quiet_hours {text!r}: hours are 00-23 and minutes 00-59")
    return QuietWindow(time(h1, m1), time(h2, m2))


def zone(name: str) -> ZoneInfo:
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise QuietHoursError(f"timezone {name!r} is not an IANA time zone") from exc


def quiet_until(now: datetime, window: QuietWindow | str | None, tz: ZoneInfo | str) -> datetime | None:
    """When the quiet window that contains `now` ends (UTC), or None when `now` is not in one.

    The returned moment is the first at which sending is allowed again.
    """
    if now.tzinfo is None:
        raise ValueError("quiet_until needs a timezone-aware `now`")
    if window is None:
        return None
    if isinstance(window, str):
        window = parse_quiet_hours(window)
    if isinstance(tz, str):
        tz = zone(tz)
    local = now.astimezone(tz)
    if not window.contains(local.timetz().replace(tzinfo=None)):
        return None
    end_day = local.date()
    # Spanning midnight and already past the start: the window ends tomorrow.
    if window.spans_midnight and local.time() >= window.start:
        end_day += timedelta(days=1)
    end_local = datetime.combine(end_day, window.end, tzinfo=tz)
    if end_day == local.date():
        end_local = end_local.replace(fold=local.fold)  # inside a repeated (autumn) hour: same pass
    end = end_local.astimezone(UTC)
    # Defensive: never return a moment at or before `now` (possible only around DST transitions).
    if end <= now:
        end = now + timedelta(minutes=1)
    return end
