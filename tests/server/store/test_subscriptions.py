"""BC subscriptions: secret clientState, activation, renewal horizon."""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy.engine import Engine

from server.runtime.clock import ManualClock
from server.store import subscriptions as subs
from server.store.db import session_scope

RESOURCE = "/api/v2.0/companies(c1)/customers"


def test_lifecycle_and_client_state(engine: Engine, clock: ManualClock) -> None:
    secret = subs.new_client_state()
    assert 40 <= len(secret) <= 250  # bc-api.md b: keep clientState <= 250 characters
    with session_scope(engine) as session:
        row = subs.create_pending_subscription(
            session,
            company_id="c1",
            entity="customers",
            resource=RESOURCE,
            notification_url="https://connector.example/webhooks/bc",
            client_state=secret,
            now=clock.now(),
        )
    # Only the hash is kept: the secret itself is nowhere in the row.
    assert row.client_state_hash == subs.hash_client_state(secret)
    assert secret not in repr(row.model_dump())
    other_secret = subs.new_client_state()
    assert other_secret != secret
    with session_scope(engine) as session:
        other = subs.create_pending_subscription(
            session,
            company_id="c1",
            entity="vendors",
            resource=RESOURCE,
            notification_url="https://connector.example/webhooks/bc",
            client_state=other_secret,
            now=clock.now(),
        )
    assert not subs.client_state_matches(other, secret)
    assert row.id is not None
    with session_scope(engine) as session:
        subs.activate_subscription(
            session,
            row.id,
            subscription_id="a" * 32,
            etag='W/"1"',
            expires_at=clock.now() + timedelta(days=3),
            now=clock.now(),
        )
    with session_scope(engine) as session:
        found = subs.get_by_subscription_id(session, "a" * 32)
        assert found is not None
        assert subs.client_state_matches(found, secret)
        assert not subs.client_state_matches(found, secret[:-1] + "x")
        assert not subs.client_state_matches(found, None)
        assert subs.live_subscription_for(session, "c1", "customers") == found
        assert subs.due_for_renewal(session, now=clock.now(), within=timedelta(days=1)) == []
    clock.advance(timedelta(days=2, hours=12))
    with session_scope(engine) as session:
        assert [
            s.subscription_id
            for s in subs.due_for_renewal(session, now=clock.now(), within=timedelta(days=1))
        ] == ["a" * 32]
        subs.set_subscription_status(session, row.id, "dropped", now=clock.now(), error="404 on renew")
        assert subs.live_subscription_for(session, "c1", "customers") is None
        assert [s.status for s in subs.list_subscriptions(session)] == ["dropped", "creating"]


def test_bad_status_is_refused(engine: Engine, clock: ManualClock) -> None:
    with session_scope(engine) as session:
        row = subs.create_pending_subscription(
            session,
            company_id="c1",
            entity="customers",
            resource=RESOURCE,
            notification_url="https://x/y",
            client_state=subs.new_client_state(),
            now=clock.now(),
        )
        assert row.id is not None
        with pytest.raises(ValueError, match="status: 'gone' is not one of creating"):
            subs.set_subscription_status(session, row.id, "gone", now=clock.now())
