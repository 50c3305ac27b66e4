"""Reminder pauses in the store: add, list, lift, and the active ones for a sweep.

`--until 2026-12-15` (a date) means "through the 15th": reminders resume at midnight starting the
16th in the business time zone. A date-time with a zone is taken as given. Lifting a pause keeps
the row (the audit shows who paused what, why, and who lifted it).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import date, datetime, time, timedelta
from zoneinfo import ZoneInfo

from sqlmodel import Session, col, select

from engine.pauses import SCOPES, Pause
from server.store.columns import require_aware
from server.store.tables import ReminderPause

SUBJECT_MAX = 64
REASON_MAX = 500


class PauseError(ValueError):
    """Bad pause input; `field` names what was wrong."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message


def parse_until(text: str, zone: ZoneInfo) -> datetime:
    """'2026-12-15' -> the start of 2026-12-16 in `zone`; an ISO date-time needs its offset."""
    value = text.strip()
    try:
        if len(value) == 10:
            day = date.fromisoformat(value)
            return datetime.combine(day + timedelta(days=1), time(0), tzinfo=zone)
        moment = datetime.fromisoformat(value.replace("Z", "+00:00") if value.endswith("Z") else value)
    except ValueError:
        raise PauseError("until", f"{text!r} is not a date (2026-12-15) or an ISO date-time") from None
    if moment.tzinfo is None:
        raise PauseError("until", f"{text!r} needs a time zone (e.g. Z or +01:00), or give a date")
    return moment


def to_pause(row: ReminderPause) -> Pause:
    return Pause(
        scope=row.scope,
        subject=row.subject,
        until=row.until,
        reason=row.reason,
        id=row.id,
        company_id=row.company_id,
    )


def add_pause(
    session: Session,
    *,
    scope: str,
    subject: str,
    until: datetime,
    reason: str,
    created_by: str,
    now: datetime,
    company_id: str | None = None,
) -> ReminderPause:
    now = require_aware(now)
    if scope not in SCOPES:
        raise PauseError("scope", f"{scope!r} is not one of {', '.join(SCOPES)}")
    subject = subject.strip()
    if not subject or len(subject) > SUBJECT_MAX:
        raise PauseError("subject", f"give a customer or invoice number/id of 1-{SUBJECT_MAX} characters")
    if until.tzinfo is None:
        raise PauseError("until", "needs a time zone")
    if until <= now:
        raise PauseError("until", f"{until.isoformat()} is not in the future")
    if len(reason) > REASON_MAX:
        raise PauseError("reason", f"at most {REASON_MAX} characters")
    row = ReminderPause(
        scope=scope,
        subject=subject,
        company_id=company_id,
        until=until,
        reason=reason.strip(),
        created_by=created_by,
        created_at=now,
    )
    session.add(row)
    session.flush()
    return row


def list_pauses(session: Session, *, now: datetime, include_ended: bool = False) -> list[ReminderPause]:
    """Active pauses (not lifted, not ended), soonest end first; with include_ended, all of them."""
    query = select(ReminderPause)
    if not include_ended:
        query = query.where(
            col(ReminderPause.lifted_at).is_(None), col(ReminderPause.until) > require_aware(now)
        )
    return list(session.exec(query.order_by(col(ReminderPause.until), col(ReminderPause.id))).all())


def active_pauses(session: Session, now: datetime) -> list[Pause]:
    return [to_pause(row) for row in list_pauses(session, now=now)]


def lift_pause(session: Session, pause_id: int, *, by: str, now: datetime) -> ReminderPause | None:
    """End a pause now; None when there is no such active pause."""
    row = session.get(ReminderPause, pause_id)
    if row is None or row.lifted_at is not None:
        return None
    row.lifted_at = require_aware(now)
    row.lifted_by = by
    session.add(row)
    session.flush()
    return row


def describe_rows(rows: Sequence[ReminderPause], *, now: datetime) -> list[str]:
    out = []
    for row in rows:
        if row.lifted_at is not None:
            state = f"lifted {row.lifted_at.isoformat()} by {row.lifted_by}"
        else:
            state = "active" if row.until > now else "ended"
        company = f" company {row.company_id}" if row.company_id else ""
        out.append(
            f"#{row.id} {row.scope} {row.subject}{company} until {row.until.isoformat()} "
            f"({row.reason or 'no reason given'}; by {row.created_by}; {state})"
        )
    return out
