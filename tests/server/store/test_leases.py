"""Leases: one holder at a time across sessions, threads and processes' worth of connections."""

from __future__ import annotations

import threading
from datetime import timedelta

from sqlalchemy.engine import Engine

from server.runtime.clock import ManualClock
from server.store.db import make_session, session_scope
from server.store.leases import LeaseGrant, acquire_lease, current_holder, release_lease

TTL = timedelta(seconds=60)


def test_exclusive_across_two_sessions(engine: Engine, clock: ManualClock) -> None:
    a, b = make_session(engine), make_session(engine)
    try:
        grant_a = acquire_lease(a, "subscriptions", "instance-a", now=clock.now(), ttl=TTL)
        a.commit()
        grant_b = acquire_lease(b, "subscriptions", "instance-b", now=clock.now(), ttl=TTL)
        b.commit()
        assert grant_a == LeaseGrant("subscriptions", "instance-a", clock.now() + TTL, 1)
        assert grant_b is None

        clock.advance(timedelta(seconds=30))  # the holder renews: same generation, later expiry
        renewed = acquire_lease(a, "subscriptions", "instance-a", now=clock.now(), ttl=TTL)
        a.commit()
        assert renewed == LeaseGrant("subscriptions", "instance-a", clock.now() + TTL, 1)

        clock.advance(timedelta(seconds=61))  # a stopped renewing: b takes over with a new generation
        taken = acquire_lease(b, "subscriptions", "instance-b", now=clock.now(), ttl=TTL)
        b.commit()
        assert taken == LeaseGrant("subscriptions", "instance-b", clock.now() + TTL, 2)
        assert acquire_lease(a, "subscriptions", "instance-a", now=clock.now(), ttl=TTL) is None
        a.commit()
        assert current_holder(a, "subscriptions", now=clock.now()) == "instance-b"
    finally:
        a.close()
        b.close()


def test_release_lets_another_take_it_at_once(engine: Engine, clock: ManualClock) -> None:
    with session_scope(engine) as session:
        assert acquire_lease(session, "sweep", "a", now=clock.now(), ttl=TTL) is not None
    with session_scope(engine) as session:
        assert not release_lease(session, "sweep", "b")  # only the holder may release
        assert release_lease(session, "sweep", "a")
    with session_scope(engine) as session:
        assert current_holder(session, "sweep", now=clock.now()) is None
        grant = acquire_lease(session, "sweep", "b", now=clock.now(), ttl=TTL)
    assert grant is not None and (grant.holder, grant.generation) == ("b", 2)


def test_racing_threads_one_winner(engine: Engine, clock: ManualClock) -> None:
    winners: list[str] = []
    errors: list[BaseException] = []
    barrier = threading.Barrier(4, timeout=10)

    def race(holder: str) -> None:
        try:
            barrier.wait()
            with session_scope(engine) as session:
                if acquire_lease(session, "poller", holder, now=clock.now(), ttl=TTL) is not None:
                    winners.append(holder)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=race, args=(f"h{n}",)) for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    assert errors == []
    assert len(winners) == 1
    with session_scope(engine) as session:
        assert current_holder(session, "poller", now=clock.now()) == winners[0]
