"""How BC writes values on the wire that the simulator must write the same way.

Datetimes: BC's API pages answer in UTC with a `Z` suffix and milliseconds, trailing zeros dropped
(`2026-11-25T09:00:00.123Z`, `2019-08-18T20:05:51.603Z` in the `$filter` example of
https://learn.microsoft.com/dynamics365/business-central/dev-itpro/api-reference/v2.0/dynamics-rate-limits,
and whole seconds as `...:02Z`).
"""

from __future__ import annotations

from datetime import UTC, datetime


def format_bc_datetime(moment: datetime) -> str:
    """BC's UTC form: milliseconds without trailing zeros, `Z` suffix (`...:55.4Z`, `...:02Z`)."""
    utc = moment.astimezone(UTC) if moment.tzinfo else moment.replace(tzinfo=UTC)
    whole, _, millis = utc.replace(tzinfo=None).isoformat(timespec="milliseconds").partition(".")
    millis = millis.rstrip("0")
    return f"{whole}.{millis}Z" if millis else f"{whole}Z"
