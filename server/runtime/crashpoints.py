"""Named crash points: a test-only way to kill the process abruptly at a step boundary of the data flow.

The reliability suite (tests/reliability) runs `ml-connector serve` as a real process and arms one
point; when the flow reaches it the process ends with `os._exit(CRASH_EXIT_CODE)` — no `finally`,
no commit, no flush, no answer on the open HTTP request — exactly like a power cut or SIGKILL at that
line. The test then restarts the service and checks from outside that nothing was lost or doubled.

Arming (environment, read once at start-up by `arm_from_environment`):

    MLC_CRASH_POINTS=fetch.records_fetched,dispatch.accepted   # names from POINTS, comma-separated
    MLC_CRASH_AT=3                                             # crash on the 3rd hit (default 1)

Off by default: with MLC_CRASH_POINTS unset or empty, `crash_point()` is a dictionary lookup on an
empty set. Refused when `settings.mode == "production"` (CrashPointError at start-up), and an unknown
name is refused too, so a typo never silently turns a crash test into a pass.
"""

from __future__ import annotations

import os
import sys
import threading
from collections.abc import Mapping

from server.settings import Settings

ENV_POINTS = "MLC_CRASH_POINTS"
ENV_AT = "MLC_CRASH_AT"
CRASH_EXIT_CODE = 86  # distinct from 0/1/2 and from a signal's 128+N, so a test knows the crash was ours

# The registry: every point the code may call, with where it sits in the flow.
POINTS: Mapping[str, str] = {
    "webhook.bc.stored": "a BC notification is committed to the inbox; the 202 answer is not sent yet",
    "fetch.records_fetched": "records were fetched from BC; snapshots and outbox rows are not written yet",
    "outbox.inserted": "outbox rows were inserted in the evaluate-and-store transaction, not committed yet",
    "outbox.committed": "the evaluate-and-store transaction committed (outbox rows, snapshots, inbox done)",
    "dispatch.accepted": "Twilio accepted the message (201 with a SID); the SID is not recorded yet",
    "callback.applying": "a Twilio status callback is being applied; its transaction is not committed",
    "subscription.renewing": "a BC subscription was marked renewing; the renewal PATCH is not sent yet",
    "subscription.renewed": "BC renewed a subscription; the new expiry is not recorded yet",
    "change.approved": "an OTP change is claimed for writing (approved check passed); no BC PATCH yet",
    "change.patched": "BC accepted the OTP change's PATCH; the 'written' state is not recorded yet",
}


class CrashPointError(Exception):
    """Crash points requested where they are not allowed, or with names that do not exist."""


_armed: frozenset[str] = frozenset()
_at = 1
_hits: dict[str, int] = {}
_lock = threading.Lock()


def parse_points(text: str) -> frozenset[str]:
    names = frozenset(n.strip() for n in text.split(",") if n.strip())
    unknown = sorted(names - set(POINTS))
    if unknown:
        raise CrashPointError(
            f"{ENV_POINTS}: unknown crash point(s) {', '.join(unknown)}; known: {', '.join(POINTS)}"
        )
    return names


def arm(points: frozenset[str], *, at: int = 1) -> None:
    """Arm `points` in this process (crash on the `at`-th hit of any of them)."""
    global _armed, _at
    if at < 1:
        raise CrashPointError(f"{ENV_AT} must be 1 or more, got {at}")
    with _lock:
        _armed = frozenset(points)
        _at = at
        _hits.clear()


def disarm() -> None:
    arm(frozenset())


def armed() -> frozenset[str]:
    return _armed


def arm_from_environment(settings: Settings, environ: Mapping[str, str] | None = None) -> frozenset[str]:
    """Read MLC_CRASH_POINTS / MLC_CRASH_AT; refuse them in production mode. Returns the armed names."""
    env = os.environ if environ is None else environ
    points = parse_points(env.get(ENV_POINTS, ""))
    if points and settings.mode == "production":
        raise CrashPointError(
            f"{ENV_POINTS} is set but MLC_MODE is production: crash points are for tests only; unset it"
        )
    raw_at = env.get(ENV_AT, "").strip() or "1"
    try:
        at = int(raw_at)
    except ValueError:
        raise CrashPointError(f"{ENV_AT} must be a whole number, got {raw_at!r}") from None
    arm(points, at=at)
    return points


def crash_point(name: str) -> None:
    """Exit the process at once (os._exit) if `name` is armed and this is the hit it should die on."""
    if not _armed:
        return
    if name not in POINTS:  # a call site with a typo is a bug in the code, found by any armed run
        raise CrashPointError(f"crash_point({name!r}) is not in crashpoints.POINTS")
    if name not in _armed:
        return
    with _lock:
        _hits[name] = _hits.get(name, 0) + 1
        total = sum(_hits[n] for n in _armed if n in _hits)
        if total < _at:
            return
    sys.stderr.write(f"ml-connector: crash point {name} reached; exiting with {CRASH_EXIT_CODE}\n")
    sys.stderr.flush()
    os._exit(CRASH_EXIT_CODE)
