"""BC webhook subscriptions we own: their secret clientState, expiry and lifecycle.

Lifecycle: creating (row stored with its clientState before the BC call, so nothing is lost if
the call succeeds and we crash) -> active -> renewing -> active ... ; dropped (BC answered 404 on
renew: re-create) ; deleted (no rule needs it). Only a hash of the clientState is stored: the secret
lives in memory just long enough to send it to BC, and notifications are checked against the hash.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from collections.abc import Iterable
from datetime import datetime, timedelta

from sqlmodel import Session, col, select

from server.store.columns import require_aware
from server.store.tables import SUBSCRIPTION_STATUSES, BcSubscription

# clientState may be up to 2048 chars per the doc example, 250 in v1.0; 43 is safe
# (https://learn.microsoft.com/en-us/dynamics365/business-central/dev-itpro/api-reference/v2.0/dynamics-subscriptions).
CLIENT_STATE_BYTES = 32


def new_client_state() -> str:
    """A fresh random per-subscription secret (URL-safe, 43 characters)."""
    return secrets.token_urlsafe(CLIENT_STATE_BYTES)


def hash_client_state(client_state: str) -> str:
    """What the store keeps: the secret is 256 random bits, so a plain SHA-256 cannot be reversed."""
    return "sha256:" + hashlib.sha256(client_state.encode("utf-8")).hexdigest()


def client_state_matches(subscription: BcSubscription, presented: str | None) -> bool:
    """Constant-time check of a notification's clientState against the subscription's."""
    if presented is None:
        return False
    return hmac.compare_digest(
        hash_client_state(presented).encode("ascii"), subscription.client_state_hash.encode("ascii")
    )


def create_pending_subscription(
    session: Session,
    *,
    company_id: str,
    entity: str,
    resource: str,
    notification_url: str,
    client_state: str,
    now: datetime,
) -> BcSubscription:
    """Store a 'creating' row with the hash of `client_state` (new_client_state()) before the BC
    create call that sends it, so a crash between BC's answer and our commit can be matched later."""
    now = require_aware(now)
    row = BcSubscription(
        company_id=company_id,
        entity=entity,
        resource=resource,
        notification_url=notification_url,
        client_state_hash=hash_client_state(client_state),
        status="creating",
        created_at=now,
        updated_at=now,
    )
    session.add(row)
    session.flush()
    return row


def activate_subscription(
    session: Session,
    row_id: int,
    *,
    subscription_id: str,
    etag: str | None,
    expires_at: datetime,
    now: datetime,
) -> BcSubscription:
    """BC created (or renewed) the subscription: store its id, ETag and expiry; status 'active'."""
    row = _get_row(session, row_id)
    row.subscription_id = subscription_id
    row.etag = etag
    row.expires_at = require_aware(expires_at, "expires_at")
    row.status = "active"
    row.last_error = None
    row.updated_at = require_aware(now)
    session.add(row)
    session.flush()
    return row


def set_subscription_status(
    session: Session, row_id: int, status: str, *, now: datetime, error: str | None = None
) -> BcSubscription:
    if status not in SUBSCRIPTION_STATUSES:
        raise ValueError(f"status: {status!r} is not one of {', '.join(SUBSCRIPTION_STATUSES)}")
    row = _get_row(session, row_id)
    row.status = status
    row.last_error = error
    row.updated_at = require_aware(now)
    session.add(row)
    session.flush()
    return row


def get_by_subscription_id(session: Session, subscription_id: str) -> BcSubscription | None:
    """The subscription BC names in a notification (None for one we do not know)."""
    return session.exec(
        select(BcSubscription).where(BcSubscription.subscription_id == subscription_id)
    ).first()


def get_by_subscription_ids(session: Session, subscription_ids: Iterable[str]) -> dict[str, BcSubscription]:
    ids = list(dict.fromkeys(subscription_ids))
    if not ids:
        return {}
    rows = session.exec(select(BcSubscription).where(col(BcSubscription.subscription_id).in_(ids))).all()
    return {r.subscription_id: r for r in rows if r.subscription_id is not None}


def list_subscriptions(session: Session, *, statuses: Iterable[str] | None = None) -> list[BcSubscription]:
    stmt = select(BcSubscription).order_by(col(BcSubscription.id))
    if statuses is not None:
        stmt = stmt.where(col(BcSubscription.status).in_(list(statuses)))
    return list(session.exec(stmt).all())


def live_subscription_for(session: Session, company_id: str, entity: str) -> BcSubscription | None:
    """The subscription currently serving (company, entity), if any (creating/active/renewing)."""
    return session.exec(
        select(BcSubscription)
        .where(
            BcSubscription.company_id == company_id,
            BcSubscription.entity == entity,
            col(BcSubscription.status).in_(["creating", "active", "renewing"]),
        )
        .order_by(col(BcSubscription.id).desc())
    ).first()


def due_for_renewal(session: Session, *, now: datetime, within: timedelta) -> list[BcSubscription]:
    """Active subscriptions expiring before now + within (BC expires them after 3 days)."""
    horizon = require_aware(now) + within
    return list(
        session.exec(
            select(BcSubscription)
            .where(BcSubscription.status == "active", col(BcSubscription.expires_at) < horizon)
            .order_by(col(BcSubscription.expires_at))
        ).all()
    )


def _get_row(session: Session, row_id: int) -> BcSubscription:
    row = session.exec(select(BcSubscription).where(BcSubscription.id == row_id).with_for_update()).first()
    if row is None:
        raise LookupError(f"no subscription row {row_id}")
    return row


__all__ = [
    "activate_subscription",
    "client_state_matches",
    "create_pending_subscription",
    "due_for_renewal",
    "get_by_subscription_id",
    "get_by_subscription_ids",
    "hash_client_state",
    "list_subscriptions",
    "live_subscription_for",
    "new_client_state",
    "set_subscription_status",
]
