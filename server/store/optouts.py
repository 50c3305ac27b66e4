"""The opt-out registry: numbers that said STOP (or whose send failed with 21610).

Twilio blocks per sender number (per pool with a Messaging Service) and keeps forwarding the
keyword to the inbound webhook (https://help.twilio.com/articles/223134027), so we keep our own list. A row's
sender is the number/service that received the STOP, or '*' for every sender (an admin block).
START re-opts in for that sender.

Order: each row keeps `state_at`, when the message that set its state happened, and an inbound
STOP or START applies only when its own time is not older. Replays never get this far (the
inbound MessageSid is recorded once: store/inbound.py); a tie goes to the message that arrived
later, since only a distinct message can reach this point.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime

import sqlalchemy as sa
from sqlmodel import Session, col, select

from server.store.columns import require_aware
from server.store.db import upsert_statement
from server.store.tables import OptOut

ALL_SENDERS = "*"
_OPTOUTS = OptOut.__table__  # type: ignore[attr-defined]


def set_opt_out(
    session: Session,
    phone: str,
    *,
    source: str,
    now: datetime,
    sender: str = ALL_SENDERS,
    message_at: datetime | None = None,
    message_sid: str | None = None,
) -> bool:
    """Record (or re-activate) an opt-out of `phone` from `sender`. `source`: 'inbound-stop', '21610', 'admin'.

    With `message_at` (an inbound STOP) it applies only when that message is not older than the one
    that set the row's current state; True when it applied. Without it (a 21610 refusal, an admin)
    it always applies: Twilio refusing the number is proof it is blocked now.
    """
    now = require_aware(now)
    at = require_aware(message_at) if message_at is not None else now
    stmt = upsert_statement(
        session,
        _OPTOUTS,
        [
            {
                "phone": phone,
                "sender": sender,
                "active": True,
                "source": source,
                "opted_out_at": now,
                "opted_in_at": None,
                "updated_at": now,
                "state_at": at,
                "state_sid": message_sid,
            }
        ],
        conflict_columns=["phone", "sender"],
        update_columns=[
            "active",
            "source",
            "opted_out_at",
            "opted_in_at",
            "updated_at",
            "state_at",
            "state_sid",
        ],
        where=(lambda excluded: excluded.state_at >= _OPTOUTS.c.state_at) if message_at is not None else None,
    )
    return session.execute(stmt.returning(_OPTOUTS.c.id)).first() is not None


def set_opt_in(
    session: Session, phone: str, *, sender: str, now: datetime, message_at: datetime, message_sid: str
) -> bool:
    """An inbound START: opt `phone` back in for `sender`, when the message is not older than the one
    that set the row's current state. With no row yet, an inactive one keeps the START's time, so an
    older STOP delivered later cannot opt the number out. True when it applied."""
    now, at = require_aware(now), require_aware(message_at)
    stmt = upsert_statement(
        session,
        _OPTOUTS,
        [
            {
                "phone": phone,
                "sender": sender,
                "active": False,
                "source": "inbound-start",
                "opted_out_at": None,
                "opted_in_at": now,
                "updated_at": now,
                "state_at": at,
                "state_sid": message_sid,
            }
        ],
        conflict_columns=["phone", "sender"],
        # The source stays what opted the number out: the audit keeps why it was ever blocked.
        update_columns=["active", "opted_in_at", "updated_at", "state_at", "state_sid"],
        where=lambda excluded: excluded.state_at >= _OPTOUTS.c.state_at,
    )
    return session.execute(stmt.returning(_OPTOUTS.c.id)).first() is not None


def clear_opt_out(session: Session, phone: str, *, now: datetime, sender: str = ALL_SENDERS) -> int:
    """An operator opts `phone` back in for `sender` (for '*', for every sender). Returns rows re-opted-in."""
    now = require_aware(now)
    stmt = sa.update(_OPTOUTS).where(_OPTOUTS.c.phone == phone, _OPTOUTS.c.active.is_(True))
    if sender != ALL_SENDERS:
        stmt = stmt.where(_OPTOUTS.c.sender == sender)
    result = session.execute(
        stmt.values(active=False, opted_in_at=now, updated_at=now, state_at=now, state_sid=None)
    )
    return int(result.rowcount)  # type: ignore[attr-defined]


def opted_out_numbers(session: Session, phones: Iterable[str], *, sender: str | None = None) -> set[str]:
    """Which of `phones` may not be messaged from `sender` (None: from any sender, i.e. opted out anywhere)."""
    wanted = list(dict.fromkeys(phones))
    if not wanted:
        return set()
    stmt = select(OptOut.phone).where(col(OptOut.phone).in_(wanted), col(OptOut.active).is_(True))
    if sender is not None:
        stmt = stmt.where(col(OptOut.sender).in_([sender, ALL_SENDERS]))
    return set(session.exec(stmt).all())


def is_opted_out(session: Session, phone: str, *, sender: str | None = None) -> bool:
    return phone in opted_out_numbers(session, [phone], sender=sender)


def list_opt_outs(session: Session, *, active_only: bool = True) -> list[OptOut]:
    stmt = select(OptOut).order_by(col(OptOut.phone), col(OptOut.sender))
    if active_only:
        stmt = stmt.where(col(OptOut.active).is_(True))
    return list(session.exec(stmt).all())
