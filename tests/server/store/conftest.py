"""Store fixtures: planned outbox rows; every test gets a fresh, migrated database (`engine`, from
tests/server/conftest.py), once on SQLite and once on PostgreSQL."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from server.store.outbox import PlannedRow

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
