"""Store fixtures: every test gets a fresh, migrated database, once on SQLite and once on PostgreSQL."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from sqlalchemy.engine import Engine

from server.runtime.clock import ManualClock
from server.store.db import create_db_engine
from server.store.migrate import upgrade_database
from server.store.outbox import PlannedRow

START = datetime(2026, 11, 25, 9, 0, tzinfo=UTC)


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'store.sqlite3'}"
    url: str = request.getfixturevalue("postgres_url")
    return url


@pytest.fixture
def engine(db_url: str) -> Iterator[Engine]:
    engine = create_db_engine(db_url)
    upgrade_database(engine)
    try:
        yield engine
    finally:
        engine.dispose()


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock(START)


PlannedFactory = Callable[..., PlannedRow]


@pytest.fixture
def planned() -> PlannedFactory:
    """Build a PlannedRow; `n` picks a distinct job id / record, keywords override fields."""

    def make(n: int = 1, **overrides: object) -> PlannedRow:
        fields: dict[str, object] = {
            "job_id": f"invoice-overdue:{n:05d}:2026-11-18",
            "rule_id": "invoice-overdue",
            "entity": "salesInvoices",
            "record_id": f"rec-{n:05d}",
            "record_number": f"SI-{n:05d}",
            "channel": "sms",
            "to": "+447700900123",
            "body": f"Invoice SI-{n:05d} is 7 days overdue.",
            "segments": 1,
            "dedupe_key": f"invoice-overdue|rec-{n:05d}|2026-11-18",
            "reason": "days_overdue >= 7",
        }
        fields.update(overrides)
        return PlannedRow(**fields)  # type: ignore[arg-type]

    return make
