"""One retry policy for every remote call: exponential backoff with full jitter, and Retry-After.

Full jitter (https://aws.amazon.com/blogs/architecture/exponential-backoff-and-jitter/) spreads the
retries of many calls that failed together (a 429 storm) so they do not come back as one wave.
Retry-After is read as RFC 9110 defines it (https://www.rfc-editor.org/rfc/rfc9110#field.retry-after):
delta-seconds or an HTTP-date.

Each client keeps its own defaults, as an instance of the one `RetryPolicy`: BC_RETRY for the BC
client (server/bc/settings.py), TWILIO_RETRY for the Twilio client (server/twilio/client.py). What a
client does with a Retry-After (cap it, wait at least that long, or hand it to the caller) is its
own rule; `backoff_delay` is the shared arithmetic.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime


@dataclass(frozen=True)
class RetryPolicy:
    """How often and how patiently a client retries one operation."""

    max_attempts: int = 6
    """Total tries per operation, the first included."""
    base_delay: float = 0.5
    """Backoff ceiling of the first retry (seconds)."""
    max_delay: float = 30.0
    """The backoff ceiling grows x2 per retry up to this."""
    max_retry_after: float = 120.0
    """The longest Retry-After a client honours as it is (what it does beyond is its own rule)."""

    def __post_init__(self) -> None:
        if self.max_attempts < 1:
            raise ValueError("RetryPolicy.max_attempts must be at least 1")
        for name in ("base_delay", "max_delay", "max_retry_after"):
            if getattr(self, name) < 0:
                raise ValueError(f"RetryPolicy.{name} must not be negative")

    def backoff(self, attempt: int, rng: random.Random, retry_after: float | None = None) -> float:
        """`backoff_delay` with this policy's base and cap."""
        return backoff_delay(
            attempt, base=self.base_delay, cap=self.max_delay, rng=rng, retry_after=retry_after
        )


# The BC client's: BC queues requests up to 8 minutes; a Retry-After above 2 minutes is capped there
# (we would rather try again).
BC_RETRY = RetryPolicy(max_attempts=6, base_delay=0.5, max_delay=30.0, max_retry_after=120.0)
# The Twilio client's: a Retry-After above 30 s is handed to the caller instead of slept in-line.
TWILIO_RETRY = RetryPolicy(max_attempts=5, base_delay=0.5, max_delay=20.0, max_retry_after=30.0)


def backoff_delay(
    attempt: int,
    *,
    base: float,
    cap: float,
    rng: random.Random,
    retry_after: float | None = None,
) -> float:
    """Exponential backoff with full jitter: uniform(0, min(cap, base * 2^(attempt-1))).

    Full jitter spreads retries of many messages that failed together (a 429 storm) so they do not
    come back as one wave. A Retry-After is a floor.
    """
    if attempt < 1:
        raise ValueError("attempt counts from 1")
    ceiling = min(cap, base * (2 ** min(attempt - 1, 30)))
    delay = rng.uniform(0.0, ceiling)
    if retry_after is not None:
        delay = max(delay, retry_after)
    return delay


def parse_retry_after(value: str | None, now: datetime | None = None) -> float | None:
    """Seconds from a Retry-After header (delta-seconds or HTTP-date, measured from `now`, the
    current time by default); None when absent or unreadable."""
    if not value:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        moment = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return max(0.0, (moment - (now if now is not None else datetime.now(UTC))).total_seconds())
