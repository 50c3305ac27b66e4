"""Record snapshots: bulk get/put, and an older version never overwrites a newer one."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from sqlalchemy.engine import Engine

from server.runtime.clock import ManualClock
from server.store.db import session_scope
from server.store.snapshots import SnapshotIn, delete_snapshots, get_snapshot, get_snapshots, put_snapshots

T0 = datetime(2026, 11, 25, 8, 0, tzinfo=UTC)


def test_put_and_get_in_bulk(engine: Engine, clock: ManualClock) -> None:
    snaps = [
        SnapshotIn(f"cust-{n}", {"balanceDue": n * 100.0, "creditLimit": 500}, f'W/"{n}"', T0)
        for n in range(3)
    ]
    with session_scope(engine) as session:
        put_snapshots(session, "c1", "customers", snaps, now=clock.now())
    with session_scope(engine) as session:
        found = get_snapshots(session, "c1", "customers", ["cust-0", "cust-2", "cust-9"])
        other_company = get_snapshots(session, "c2", "customers", ["cust-0"])
    assert set(found) == {"cust-0", "cust-2"}
    assert found["cust-2"].data == {"balanceDue": 200.0, "creditLimit": 500}
    assert (found["cust-2"].etag, found["cust-2"].last_modified, found["cust-2"].seen_at) == (
        'W/"2"',
        T0,
        clock.now(),
    )
    assert other_company == {}


def test_older_version_does_not_overwrite_newer(engine: Engine, clock: ManualClock) -> None:
    newer = SnapshotIn("cust-1", {"balanceDue": 900}, None, T0 + timedelta(minutes=5))
    older = SnapshotIn("cust-1", {"balanceDue": 100}, None, T0)
    with session_scope(engine) as session:
        put_snapshots(session, "c1", "customers", [newer], now=clock.now())
    with session_scope(engine) as session:
        put_snapshots(session, "c1", "customers", [older], now=clock.now())
    with session_scope(engine) as session:
        snap = get_snapshot(session, "c1", "customers", "cust-1")
    assert snap is not None and snap.data == {"balanceDue": 900}
    # the same id twice in one call: the newest wins
    with session_scope(engine) as session:
        put_snapshots(
            session,
            "c1",
            "customers",
            [
                SnapshotIn("cust-1", {"balanceDue": 1}, None, T0 + timedelta(minutes=7)),
                SnapshotIn("cust-1", {"balanceDue": 2}, None, T0 + timedelta(minutes=6)),
            ],
            now=clock.now(),
        )
        snap = get_snapshot(session, "c1", "customers", "cust-1")
    assert snap is not None and snap.data == {"balanceDue": 1}


def test_delete(engine: Engine, clock: ManualClock) -> None:
    with session_scope(engine) as session:
        put_snapshots(session, "c1", "customers", [SnapshotIn("a", {}), SnapshotIn("b", {})], now=clock.now())
        assert delete_snapshots(session, "c1", "customers", ["a", "zzz"]) == 1
        assert set(get_snapshots(session, "c1", "customers", ["a", "b"])) == {"b"}
