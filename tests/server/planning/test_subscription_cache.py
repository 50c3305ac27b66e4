"""The webhook's subscription cache: what it remembers, for how long, and what it reads again at once.

Semantics (server.planning.notifications.SubscriptionCache): live subscriptions are remembered for `ttl`
seconds; unknown and dead ones are never remembered; a clientState that does not match what is
remembered is checked against the store before the item is dropped. So a new subscription or a
new clientState is accepted at once, and a deleted subscription (or a replaced clientState) is
refused at the latest `ttl` after the change.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import Engine

from server.planning.notifications import SubscriptionCache, Verdict, check_items
from server.store.db import session_scope
from server.store.subscriptions import hash_client_state
from server.store.tables import BcSubscription

CO = "5d1b3a4c-0000-4000-8000-000000000001"
SUB = "0f0e0d0c-0000-4000-8000-00000000aaaa"
SECRET = "first-secret-0123456789abcdefghijklmnopq"
NOW = datetime(2026, 11, 25, 9, 0, tzinfo=UTC)


class Ticker:
    """A monotonic clock the test moves by hand."""

    def __init__(self) -> None:
        self.value = 1000.0

    def __call__(self) -> float:
        return self.value


@pytest.fixture
def ticker() -> Ticker:
    return Ticker()


@pytest.fixture
def cache(ticker: Ticker) -> SubscriptionCache:
    return SubscriptionCache(ttl=1.0, monotonic=ticker)


def add_subscription(engine: Engine, subscription_id: str = SUB, *, secret: str = SECRET) -> None:
    with session_scope(engine) as session:
        session.add(
            BcSubscription(
                subscription_id=subscription_id,
                company_id=CO,
                entity="customers",
                resource=f"api/v2.0/companies({CO})/customers",
                notification_url="http://127.0.0.1/webhooks/bc",
                client_state_hash=hash_client_state(secret),
                expires_at=NOW + timedelta(days=3),
                status="active",
                created_at=NOW,
                updated_at=NOW,
            )
        )


def change_subscription(engine: Engine, subscription_id: str = SUB, **values: Any) -> None:
    table = BcSubscription.__table__  # type: ignore[attr-defined]
    with session_scope(engine) as session:
        session.execute(sa.update(table).where(table.c.subscription_id == subscription_id).values(**values))


def item(secret: str | None = SECRET, subscription_id: str = SUB, record: str = "c1") -> dict[str, Any]:
    return {
        "subscriptionId": subscription_id,
        "clientState": secret,
        "expirationDateTime": "2026-11-28T09:00:00Z",
        "resource": f"api/v2.0/companies({CO})/customers({record})",
        "changeType": "updated",
        "lastModifiedDateTime": "2026-11-25T09:00:05Z",
    }


def outcome(verdict: Verdict) -> list[str]:
    """'accepted' or the drop reason of each item, in order."""
    reasons = dict(verdict.dropped)
    return [reasons.get(n, "accepted") for n in range(len(reasons) + len(verdict.accepted))]


def test_a_deleted_subscription_is_refused_once_the_ttl_has_passed(
    engine: Engine, cache: SubscriptionCache, ticker: Ticker
) -> None:
    add_subscription(engine)
    assert outcome(check_items(engine, cache, [item()])) == ["accepted"]
    change_subscription(engine, status="deleted")
    ticker.value += 0.5  # still within the ttl: remembered as it was read
    assert outcome(check_items(engine, cache, [item()])) == ["accepted"]
    ticker.value += 0.5
    assert outcome(check_items(engine, cache, [item()])) == ["unknown subscription"]
    change_subscription(engine, status="active")  # dead ones are not remembered: live again at once
    assert outcome(check_items(engine, cache, [item()])) == ["accepted"]


def test_a_renewed_subscription_keeps_being_accepted(
    engine: Engine, cache: SubscriptionCache, ticker: Ticker
) -> None:
    add_subscription(engine)
    assert outcome(check_items(engine, cache, [item()])) == ["accepted"]
    change_subscription(engine, status="renewing")
    ticker.value += 1.0
    assert outcome(check_items(engine, cache, [item()])) == ["accepted"]
    change_subscription(engine, status="active", expires_at=NOW + timedelta(days=6))
    ticker.value += 1.0
    assert outcome(check_items(engine, cache, [item()])) == ["accepted"]


def test_a_new_client_state_is_accepted_at_once_and_the_old_one_refused_from_then_on(
    engine: Engine, cache: SubscriptionCache, ticker: Ticker
) -> None:
    add_subscription(engine)
    assert outcome(check_items(engine, cache, [item()])) == ["accepted"]
    change_subscription(engine, client_state_hash=hash_client_state("second-secret"))
    # Nothing read the store since: the old secret is still what is remembered (for at most the ttl).
    assert outcome(check_items(engine, cache, [item()])) == ["accepted"]
    # The new one does not match the memory, so the store is asked before dropping anything.
    mixed = check_items(engine, cache, [item("second-secret"), item(), item("forged")])
    assert outcome(mixed) == ["accepted", "clientState does not match", "clientState does not match"]
    assert outcome(check_items(engine, cache, [item()])) == ["clientState does not match"]


def test_unknown_subscriptions_are_read_every_time_and_accepted_once_they_exist(
    engine: Engine, cache: SubscriptionCache
) -> None:
    other = "0f0e0d0c-0000-4000-8000-00000000bbbb"
    assert outcome(check_items(engine, cache, [item(subscription_id=other)])) == ["unknown subscription"]
    add_subscription(engine, other)
    assert outcome(check_items(engine, cache, [item(subscription_id=other)])) == ["accepted"]


def test_wrong_or_missing_client_state_is_refused_with_a_warm_cache(
    engine: Engine, cache: SubscriptionCache
) -> None:
    add_subscription(engine)
    verdict = check_items(engine, cache, [item(), item("forged", record="c2"), item(None, record="c3")])
    assert outcome(verdict) == ["accepted", "clientState does not match", "clientState does not match"]
    assert [n.ref.record_id if n.ref else None for n in verdict.accepted] == ["c1"]


def test_a_store_failure_while_reading_subscriptions_raises_never_refuses(
    engine: Engine, cache: SubscriptionCache
) -> None:
    # Raised, the webhook answers 503 and BC retries; a 403 would make BC delete the subscription.
    other = "0f0e0d0c-0000-4000-8000-00000000cccc"
    with engine.begin() as conn:
        conn.execute(sa.text("ALTER TABLE bc_subscriptions RENAME TO bc_subscriptions_away"))
    with pytest.raises(sa.exc.SQLAlchemyError):
        check_items(engine, cache, [item(subscription_id=other)])
