"""The audit log: who did what to which thing (OTP-gated changes, credentials, admin actions).

Never put a secret in `details`: the log is read by people and exported.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

from sqlmodel import Session, col, select

from server.store.columns import require_aware
from server.store.tables import AuditEntry

MAX_PAGE = 500


def record_audit(
    session: Session,
    *,
    actor: str,
    action: str,
    subject: str,
    now: datetime,
    details: Mapping[str, Any] | None = None,
) -> AuditEntry:
    entry = AuditEntry(
        at=require_aware(now), actor=actor, action=action, subject=subject, details=dict(details or {})
    )
    session.add(entry)
    session.flush()
    return entry


def list_audit(
    session: Session,
    *,
    action: str | None = None,
    subject: str | None = None,
    limit: int = 100,
    before_id: int | None = None,
) -> list[AuditEntry]:
    """Newest first; pass the last id seen as before_id for the next page."""
    stmt = select(AuditEntry).order_by(col(AuditEntry.id).desc()).limit(max(1, min(limit, MAX_PAGE)))
    if action is not None:
        stmt = stmt.where(AuditEntry.action == action)
    if subject is not None:
        stmt = stmt.where(AuditEntry.subject == subject)
    if before_id is not None:
        stmt = stmt.where(col(AuditEntry.id) < before_id)
    return list(session.exec(stmt).all())
