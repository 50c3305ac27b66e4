"""The sweep's staging table (server.store.sweep_staging): held messages written with their page,
read back a part at a time in order, runs kept apart, rows deleted; on SQLite and PostgreSQL."""

from __future__ import annotations

import pytest
from sqlalchemy.engine import Engine

from engine.messages import PlannedMessage
from server.store import sweep_staging
from server.store.db import read_scope, session_scope
from server.store.sweep_staging import ALONE, BY_RECIPIENT, Held


def message(n: int, to: str | None = "+15035550100", **changes: object) -> PlannedMessage:
    fields: dict[str, object] = {
        "job_id": f"mlc-{n:040x}",
        "rule_id": "invoice-overdue",
        "entity": "salesInvoices",
        "record_id": f"inv-{n}",
        "record_number": f"PS-{n}",
        "channel": "sms",
        "to": to,
        "body": f"Invoice PS-{n} is overdue: ünïcødé £",
        "segments": 1,
        "dedupe_key": f"invoice-overdue/salesInvoices/{n}",
        "reason": "1 day overdue",
        "timezone": "America/Los_Angeles",
        "quiet_hours": "20:00-08:00",
        "stage": 1,
        "grace_days": 2,
        "record": {
            "id": f"inv-{n}",
            "number": f"PS-{n}",
            "remainingAmount": 1234.5,
            "dueDate": "2026-11-24",
            "customer": {"id": "c-1", "number": "C0001", "displayName": "Northwind", "blocked": " "},
        },
    }
    fields.update(changes)
    return PlannedMessage(**fields)  # type: ignore[arg-type]


def staged(engine: Engine, run_id: str) -> int:
    with read_scope(engine) as session:
        return sweep_staging.count_run(session, run_id)


def test_a_message_comes_back_exactly_as_staged(engine: Engine) -> None:
    original = message(1, group_job_id=None, skip_code=None)
    run = sweep_staging.new_run_id()
    with session_scope(engine) as session:
        sweep_staging.stage(
            session, run, "c1", "salesInvoices", [Held(0, BY_RECIPIENT, "+15035550100", original)]
        )
    [[back]] = list(sweep_staging.parts(engine, run))
    assert back == original
    assert back.record == original.record  # not part of equality: compared on its own
    assert (back.stage, back.grace_days, back.timezone, back.quiet_hours) == (
        1,
        2,
        "America/Los_Angeles",
        "20:00-08:00",
    )


def test_parts_come_back_whole_in_phase_then_part_then_planned_order_across_chunks(engine: Engine) -> None:
    run = sweep_staging.new_run_id()
    # Planned order: recipients interleaved across "pages", a staff message in the middle.
    plan = [
        Held(0, BY_RECIPIENT, "+2", message(0, "+2")),
        Held(1, BY_RECIPIENT, "+1", message(1, "+1")),
        Held(2, ALONE, "mlc-staff-a", message(2, "+9")),
        Held(3, BY_RECIPIENT, "+2", message(3, "+2")),
        Held(4, BY_RECIPIENT, "+1", message(4, "+1")),
        Held(5, BY_RECIPIENT, "+2", message(5, "+2")),
        Held(6, ALONE, "mlc-staff-b", message(6, "+9")),
        Held(7, BY_RECIPIENT, "+2", message(7, "+2")),
    ]
    with session_scope(engine) as session:  # two pages, two transactions
        sweep_staging.stage(session, run, "c1", "salesInvoices", plan[:4])
    with session_scope(engine) as session:
        sweep_staging.stage(session, run, "c1", "salesInvoices", plan[4:])
    for chunk in (1, 2, 3, 1000):  # a part longer than a chunk still comes back whole
        parts = [[m.record_id for m in part] for part in sweep_staging.parts(engine, run, chunk=chunk)]
        assert parts == [
            ["inv-1", "inv-4"],
            ["inv-0", "inv-3", "inv-5", "inv-7"],
            ["inv-2"],  # staff messages last, each alone
            ["inv-6"],
        ], chunk


def test_runs_are_kept_apart_and_dropped(engine: Engine) -> None:
    mine, dead = sweep_staging.new_run_id(), sweep_staging.new_run_id()
    with session_scope(engine) as session:
        sweep_staging.stage(session, dead, "c1", "salesInvoices", [Held(0, BY_RECIPIENT, "+1", message(90))])
        sweep_staging.stage(session, mine, "c1", "salesInvoices", [Held(0, BY_RECIPIENT, "+1", message(1))])
    assert [[m.record_id for m in p] for p in sweep_staging.parts(engine, mine)] == [["inv-1"]]
    with session_scope(engine) as session:
        assert sweep_staging.drop_run(session, mine) == 1
    assert (staged(engine, mine), staged(engine, dead)) == (0, 1)
    assert list(sweep_staging.parts(engine, mine)) == []
    with session_scope(engine) as session:
        assert sweep_staging.drop_all(session) == 1
    assert staged(engine, dead) == 0


def test_a_rolled_back_page_stages_nothing(engine: Engine) -> None:
    run = sweep_staging.new_run_id()
    with pytest.raises(RuntimeError), session_scope(engine) as session:
        sweep_staging.stage(session, run, "c1", "salesInvoices", [Held(0, BY_RECIPIENT, "+1", message(1))])
        raise RuntimeError("the page's outbox insert failed")
    assert staged(engine, run) == 0
