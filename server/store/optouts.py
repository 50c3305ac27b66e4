"""The opt-out registry: numbers that said STOP (or whose send failed with 21610).

Twilio blocks per sender number (per pool with a Messaging Service) and keeps forwarding the
keyword to the inbound webhook (https://help.twilio.com/articles/223134027), so we keep our own list. A row's
sender is the number/service that received the STOP, or '*' for every sender (an admin block).
START re-opts in for that sender.
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
    session: Session, phone: str, *, source: str, now: datetime, sender: str = ALL_SENDERS
) -> None:
    """Record (or re-activate) an opt-out of `phone` from `sender`. `source`: 'inbound-stop', '21610', 'admin'."""
    now = require_aware(now)
    session.execute(
        upsert_statement(
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
                }
            ],
            conflict_columns=["phone", "sender"],
            update_columns=["active", "source", "opted_out_at", "opted_in_at", "updated_at"],
        )
    )


def clear_opt_out(session: Session, phone: str, *, now: datetime, sender: str = ALL_SENDERS) -> int:
    """START: opt `phone` back in for `sender` (for '*', for every sender). Returns rows re-opted-in."""
    now = require_aware(now)
    stmt = sa.update(_OPTOUTS).where(_OPTOUTS.c.phone == phone, _OPTOUTS.c.active.is_(True))
    if sender != ALL_SENDERS:
        stmt = stmt.where(_OPTOUTS.c.sender == sender)
    result = session.execute(stmt.values(active=False, opted_in_at=now, updated_at=now))
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
