"""Inbound texts seen, once per MessageSid (the inbound_messages table).

A signed webhook proves Twilio sent the request, not that it is new: Twilio retries a delivery whose
connection failed (https://www.twilio.com/docs/usage/webhooks/webhooks-connection-overrides), and a
captured request stays valid, since the signature covers no time
(https://www.twilio.com/docs/usage/webhooks/webhooks-security). The MessageSid, unique to one
message, is the key: the database's primary key, not a prior SELECT, decides what was seen.
"""

from __future__ import annotations

from datetime import datetime

import sqlalchemy as sa
from sqlmodel import Session

from server.store.columns import require_aware
from server.store.db import insert_ignoring_conflicts
from server.store.tables import InboundMessage

_INBOUND = InboundMessage.__table__  # type: ignore[attr-defined]


def is_seen(session: Session, sid: str) -> bool:
    return session.execute(sa.select(_INBOUND.c.sid).where(_INBOUND.c.sid == sid)).first() is not None


def record_inbound(
    session: Session,
    *,
    sid: str,
    phone: str,
    action: str | None,
    message_at: datetime,
    twilio_created_at: datetime | None,
    received_at: datetime,
) -> bool:
    """Record `sid` as seen; False when it already was (a retry or a replay: change nothing)."""
    row = {
        "sid": sid,
        "phone": phone,
        "action": action,
        "message_at": require_aware(message_at),
        "twilio_created_at": require_aware(twilio_created_at) if twilio_created_at else None,
        "received_at": require_aware(received_at),
        "applied": False,
    }
    inserted = insert_ignoring_conflicts(
        session, _INBOUND, [row], conflict_columns=["sid"], returning=_INBOUND.c.sid
    )
    return bool(inserted)


def mark_applied(session: Session, sid: str) -> None:
    session.execute(sa.update(_INBOUND).where(_INBOUND.c.sid == sid).values(applied=True))
