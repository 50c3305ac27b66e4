"""Opt-out registry: STOP per sender or for all, START re-opts in, bulk checks."""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy.engine import Engine

from server.runtime.clock import ManualClock
from server.store.db import session_scope
from server.store.optouts import clear_opt_out, is_opted_out, list_opt_outs, opted_out_numbers, set_opt_out

A, B, C = "+447700900001", "+447700900002", "+447700900003"
OURS, OTHER = "+441632960001", "+441632960002"


def test_stop_applies_to_the_sender_that_received_it(engine: Engine, clock: ManualClock) -> None:
    with session_scope(engine) as session:
        set_opt_out(session, A, sender=OURS, source="inbound-stop", now=clock.now())
        set_opt_out(session, B, source="admin", now=clock.now())  # all senders
    with session_scope(engine) as session:
        assert is_opted_out(session, A, sender=OURS)
        assert not is_opted_out(session, A, sender=OTHER)
        assert is_opted_out(session, A)  # opted out somewhere
        assert opted_out_numbers(session, [A, B, C], sender=OTHER) == {B}
        assert opted_out_numbers(session, [A, B, C], sender=OURS) == {A, B}


def test_start_re_opts_in_and_stop_again_re_activates(engine: Engine, clock: ManualClock) -> None:
    with session_scope(engine) as session:
        set_opt_out(session, A, sender=OURS, source="inbound-stop", now=clock.now())
        set_opt_out(session, A, sender=OURS, source="21610", now=clock.now())  # repeated: one row
    clock.advance(timedelta(days=1))
    with session_scope(engine) as session:
        assert clear_opt_out(session, A, sender=OURS, now=clock.now()) == 1
        assert not is_opted_out(session, A, sender=OURS)
        assert list_opt_outs(session) == []
        (row,) = list_opt_outs(session, active_only=False)
        assert (row.source, row.opted_in_at) == ("21610", clock.now())
    clock.advance(timedelta(days=1))
    with session_scope(engine) as session:
        set_opt_out(session, A, sender=OURS, source="inbound-stop", now=clock.now())
        assert is_opted_out(session, A, sender=OURS)
        (row,) = list_opt_outs(session)
    assert (row.opted_out_at, row.opted_in_at) == (clock.now(), None)


def test_start_for_all_senders_clears_every_row(engine: Engine, clock: ManualClock) -> None:
    with session_scope(engine) as session:
        set_opt_out(session, A, sender=OURS, source="inbound-stop", now=clock.now())
        set_opt_out(session, A, sender=OTHER, source="inbound-stop", now=clock.now())
        assert clear_opt_out(session, A, now=clock.now()) == 2
        assert opted_out_numbers(session, [A]) == set()
