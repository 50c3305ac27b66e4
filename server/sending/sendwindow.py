"""Send windows in the RECIPIENT's local time: quiet hours, weekdays, business hours, public holidays.

Pure functions (no clock, no database). `next_send_time(now, window, zones, country)` answers
"when may this message go?": `None` means now, otherwise the first allowed moment (UTC), which is
where the dispatcher holds the message until (outbox.hold). The recipient's zone comes from the
phone number's region (phonenumbers' time-zone data, engine.phones.region_timezones), else from
the customer's country, else the rule's time zone; `send_window.timezone: Europe/Paris`
overrides all of them. When a number spans several zones (a US number whose area code is
unknown), the window must be open in every one of them: we would rather wait an hour than wake
someone up. Public holidays come from the `holidays` package for the recipient's country.

DST: every local boundary (window end, business-hours opening, midnight) is built as a local
wall-clock time with zoneinfo and converted to UTC, so an opening at 08:00 is 08:00 local on the
day clocks change; a boundary in a spring-forward gap resolves to the instant just after the gap.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from functools import lru_cache
from typing import TYPE_CHECKING
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import phonenumbers
from phonenumbers.tzdata import TIMEZONE_DATA

from engine.model import WEEKDAYS
from engine.phones import region_timezones
from server.sending.quiet import QuietWindow, parse_quiet_hours, quiet_until

if TYPE_CHECKING:
    from engine.ruleset import RuleSet
    from server.store.tables import OutboxMessage

MAX_STEPS = 400  # bounds the search (a window that never opens is reported, not looped over)


class SendWindowError(ValueError):
    """A window that never opens (e.g. no weekday allowed), or an unknown zone."""


@dataclass(frozen=True)
class Window:
    """A compiled send window; build it with `window_from_rule` or directly in tests."""

    quiet_hours: QuietWindow | None = None
    days: frozenset[int] | None = None  # allowed weekdays, Monday = 0
    hours: QuietWindow | None = None  # business hours: sending allowed only inside
    holidays: bool | str = False  # True: the recipient's country; "GB": that country
    timezone: str = "recipient"  # or an IANA zone that overrides the recipient's

    @property
    def empty(self) -> bool:
        return self.quiet_hours is None and self.days is None and self.hours is None and not self.holidays


def window_from_rule(rule: object) -> Window:
    """The window of a CompiledRule: its `send_window`, else its legacy quiet_hours in the rule's zone."""
    model = getattr(rule, "model", None)
    spec = getattr(model, "send_window", None)
    if spec is None:
        quiet = getattr(rule, "quiet_hours", None)
        zone = getattr(getattr(rule, "timezone", None), "key", "UTC")
        return Window(quiet_hours=parse_quiet_hours(quiet) if quiet else None, timezone=zone)
    return Window(
        quiet_hours=parse_quiet_hours(spec.quiet_hours) if spec.quiet_hours else None,
        days=frozenset(WEEKDAYS.index(d) for d in spec.days) if spec.days else None,
        hours=parse_quiet_hours(spec.hours) if spec.hours else None,
        holidays=spec.holidays,
        timezone=spec.timezone,
    )


def _zone(name: str) -> ZoneInfo:
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise SendWindowError(f"{name!r} is not an IANA time zone") from exc


def country_of(e164: str | None) -> str | None:
    """ISO country of a number (None when unknown)."""
    if not e164:
        return None
    try:
        region = phonenumbers.region_code_for_number(phonenumbers.parse(e164, None))
    except phonenumbers.NumberParseException:
        return None
    return region if region and region != "ZZ" else None


def country_zones(country: str) -> tuple[str, ...]:
    code = phonenumbers.country_code_for_region(country.upper())
    zones = TIMEZONE_DATA.get(str(code), ()) if code else ()
    return tuple(z for z in zones if z != "Etc/Unknown")


def recipient_zones(
    e164: str | None, window: Window, *, country: str | None = None, fallback: str = "UTC"
) -> tuple[ZoneInfo, ...]:
    """The zones to respect: the override, else the number's, else the country's, else `fallback`."""
    if window.timezone != "recipient":
        return (_zone(window.timezone),)
    names: Sequence[str] = region_timezones(e164) if e164 else ()
    if not names and country:
        names = country_zones(country)
    if not names:
        names = (fallback,)
    return tuple(_zone(n) for n in dict.fromkeys(names))


@lru_cache(maxsize=256)
def _holiday_calendar(country: str, year: int) -> frozenset[date]:
    import holidays as holiday_data

    try:
        calendar = holiday_data.country_holidays(country, years=year)
    except NotImplementedError:
        return frozenset()  # a country the package does not know: no holidays rather than no sends
    return frozenset(calendar.keys())


def holiday_name(country: str, day: date) -> str | None:
    import holidays as holiday_data

    try:
        return holiday_data.country_holidays(country, years=day.year).get(day)
    except NotImplementedError:
        return None


def _next_midnight(local: datetime, zone: ZoneInfo) -> datetime:
    return datetime.combine(local.date() + timedelta(days=1), time(0), tzinfo=zone).astimezone(UTC)


def blocked_until(
    now: datetime, window: Window, zone: ZoneInfo, country: str | None
) -> tuple[datetime, str] | None:
    """If `now` is outside the window in `zone`: the next moment worth checking, and why."""
    local = now.astimezone(zone)
    holiday_country = window.holidays if isinstance(window.holidays, str) else country
    if window.holidays and holiday_country and local.date() in _holiday_calendar(holiday_country, local.year):
        name = holiday_name(holiday_country, local.date()) or "public holiday"
        return _next_midnight(local, zone), f"{name} ({holiday_country})"
    if window.days is not None and local.weekday() not in window.days:
        return _next_midnight(local, zone), f"{WEEKDAYS[local.weekday()]} is not a send day"
    if window.hours is not None and not window.hours.contains(local.time()):
        opening = datetime.combine(local.date(), window.hours.start, tzinfo=zone).astimezone(UTC)
        if opening <= now:  # past today's business hours (or before a midnight-spanning start)
            after = datetime.combine(local.date() + timedelta(days=1), window.hours.start, tzinfo=zone)
            opening = after.astimezone(UTC)
        return opening, f"outside business hours {window.hours}"
    if window.quiet_hours is not None:
        until = quiet_until(now, window.quiet_hours, zone)
        if until is not None:
            return until, f"quiet hours {window.quiet_hours}"
    return None


@dataclass(frozen=True)
class Hold:
    until: datetime  # UTC
    reason: str  # e.g. "quiet hours 20:00-08:00 in America/New_York"


def next_send_time(
    now: datetime,
    window: Window,
    zones: Sequence[ZoneInfo],
    *,
    country: str | None = None,
) -> Hold | None:
    """None when the message may go now, else the first moment the window is open in every zone."""
    if now.tzinfo is None:
        raise ValueError("next_send_time needs a timezone-aware `now`")
    if window.empty:
        return None
    moment = now.astimezone(UTC)
    reasons: list[str] = []
    for _ in range(MAX_STEPS):
        later: list[tuple[datetime, str]] = []
        for zone in zones:
            blocked = blocked_until(moment, window, zone, country)
            if blocked is not None:
                later.append((blocked[0], f"{blocked[1]} in {zone.key}"))
        if not later:
            return None if not reasons else Hold(moment, "; ".join(dict.fromkeys(reasons)))
        step, reason = max(later)
        reasons.append(reason)
        moment = step if step > moment else moment + timedelta(minutes=1)
    raise SendWindowError(f"the send window never opens within {MAX_STEPS} steps: {window}")


def hold_for(
    now: datetime,
    rule: object | None,
    recipient: str | None,
    *,
    stored_timezone: str = "UTC",
    stored_quiet_hours: str | None = None,
    country: str | None = None,
) -> Hold | None:
    """The dispatcher's question for one outbox row: hold it, and until when?

    `rule` is the CompiledRule as loaded now (None when the rule is gone: the window stored on the
    row applies, in its zone). `country` is the customer's country when known.
    """
    if rule is None:
        window = Window(
            quiet_hours=parse_quiet_hours(stored_quiet_hours) if stored_quiet_hours else None,
            timezone=stored_timezone or "UTC",
        )
        fallback = stored_timezone or "UTC"
    else:
        window = window_from_rule(rule)
        fallback = getattr(getattr(rule, "timezone", None), "key", "UTC")
    zones = recipient_zones(recipient, window, country=country, fallback=fallback)
    return next_send_time(now, window, zones, country=country or country_of(recipient))


def hold_until_for_row(message: OutboxMessage, ruleset: RuleSet, now: datetime) -> datetime | None:
    """Drop-in for the dispatcher's quiet-hours check on an outbox row: when it may be sent, or None.

    `message` is an OutboxMessage (rule_id, recipient, timezone, quiet_hours); `ruleset` the RuleSet
    as loaded now. A window that never opens is logged and does not block (the engine validates
    windows; an odd one must not stall the queue forever).
    """
    rule = ruleset.get(message.rule_id)
    try:
        hold = hold_for(
            now,
            rule,
            message.recipient,
            stored_timezone=message.timezone or "UTC",
            stored_quiet_hours=message.quiet_hours,
        )
    except (SendWindowError, ValueError) as exc:
        from server.runtime.logs import get_logger

        get_logger("ml_connector.sendwindow").error(
            "send window unreadable; sending anyway", job=message.job_id, error=str(exc)
        )
        return None
    return hold.until if hold is not None else None
