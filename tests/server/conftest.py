"""Fixtures shared by the server tests: a fresh, migrated store."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import pytest
from sqlalchemy.engine import Engine

from server.store.db import create_db_engine
from server.store.migrate import upgrade_database


@contextmanager
def migrated_engine(url: str) -> Iterator[Engine]:
    """An engine on `url` with every migration applied, disposed of afterwards."""
    engine = create_db_engine(url)
    upgrade_database(engine)
    try:
        yield engine
    finally:
        engine.dispose()


@pytest.fixture
def engine(database_url: str) -> Iterator[Engine]:
    """A fresh, migrated database, once on SQLite and once on PostgreSQL."""
    with migrated_engine(database_url) as migrated:
        yield migrated
