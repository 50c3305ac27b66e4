"""Poll watermarks with an overlap window: no version handled twice, late arrivals still caught."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from sqlalchemy.engine import Engine

from server.runtime.clock import ManualClock
from server.store.db import session_scope
from server.store.watermarks import advance_watermark, get_watermark

T0 = datetime(2026, 11, 25, 8, 0, tzinfo=UTC)
OVERLAP = timedelta(minutes=2)


def test_overlap_re_read_skips_seen_versions_only(engine: Engine, clock: ManualClock) -> None:
    with session_scope(engine) as session:
        assert get_watermark(session, "c1", "purchaseOrders", "poll").query_from(OVERLAP) is None
        advance_watermark(
            session,
            "c1",
            "purchaseOrders",
            "poll",
            [("po-1", T0), ("po-2", T0 + timedelta(seconds=30)), ("po-3", T0 + timedelta(seconds=30))],
            overlap=OVERLAP,
            now=clock.now(),
        )
    with session_scope(engine) as session:
        mark = get_watermark(session, "c1", "purchaseOrders", "poll")
    assert mark.last_modified == T0 + timedelta(seconds=30)
    assert mark.query_from(OVERLAP) == T0 - timedelta(seconds=90)
    # the overlap re-read returns the same versions: all already handled, at and before the watermark
    assert not mark.is_new("po-1", T0)
    assert not mark.is_new("po-2", T0 + timedelta(seconds=30))
    assert not mark.is_new("po-3", T0 + timedelta(seconds=30))
    # a record committed late with an earlier timestamp, and a newer version of a seen one, are new
    assert mark.is_new("po-4", T0 + timedelta(seconds=10))
    assert mark.is_new("po-1", T0 + timedelta(seconds=40))


def test_watermark_never_moves_back_and_forgets_versions_outside_the_window(
    engine: Engine, clock: ManualClock
) -> None:
    with session_scope(engine) as session:
        advance_watermark(session, "c1", "po", "poll", [("a", T0)], overlap=OVERLAP, now=clock.now())
        advance_watermark(
            session, "c1", "po", "poll", [("b", T0 + timedelta(minutes=10))], overlap=OVERLAP, now=clock.now()
        )
        after = advance_watermark(
            session, "c1", "po", "poll", [("c", T0 + timedelta(minutes=9))], overlap=OVERLAP, now=clock.now()
        )
    assert after.last_modified == T0 + timedelta(minutes=10)
    assert set(after.seen) == {"b", "c"}  # 'a' is older than watermark - overlap: never re-read
    with session_scope(engine) as session:
        assert get_watermark(session, "c1", "po", "poll") == after
        assert get_watermark(session, "c1", "po", "sweep").last_modified is None  # kinds are separate


def test_empty_poll_keeps_the_watermark(engine: Engine, clock: ManualClock) -> None:
    with session_scope(engine) as session:
        advance_watermark(session, "c1", "po", "poll", [("a", T0)], overlap=OVERLAP, now=clock.now())
        same = advance_watermark(session, "c1", "po", "poll", [], overlap=OVERLAP, now=clock.now())
    assert (same.last_modified, set(same.seen)) == (T0, {"a"})
