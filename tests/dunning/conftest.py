"""Fixtures for the dunning tests: the shipped rules, invoices, and a migrated SQLite store."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine

from engine.loader import load_ruleset
from engine.ruleset import RuleSet
from server.store.db import create_db_engine
from server.store.migrate import upgrade_database

NORTHWIND = {
    "id": "b7e2d4a1-5c3f-ef11-8a6b-6045bde9c1a2",
    "number": "C00420",
    "displayName": "Northwind Outdoor Supply",
    "phoneNumber": "503-555-0142",
    "blocked": " ",
}


def invoice(number: str, due: str, amount: float = 100.0, **changes: Any) -> dict[str, Any]:
    record: dict[str, Any] = {
        "id": f"inv-{number.lower()}",
        "number": number,
        "status": "Open",
        "dueDate": due,
        "remainingAmount": amount,
        "currencyCode": "USD",
        "customerId": NORTHWIND["id"],
        "customerNumber": NORTHWIND["number"],
        "customer": dict(NORTHWIND),
    }
    record.update(changes)
    return record


@pytest.fixture(scope="session")
def shipped(repo_root: Path) -> RuleSet:
    return load_ruleset(repo_root / "rules")


@pytest.fixture
def db(tmp_path: Path) -> Iterator[Engine]:
    engine = create_db_engine(f"sqlite:///{tmp_path / 'dunning.sqlite3'}")
    upgrade_database(engine)
    yield engine
    engine.dispose()
