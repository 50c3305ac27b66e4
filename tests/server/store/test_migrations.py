"""The migrations produce exactly the models' schema, on both backends."""

from __future__ import annotations

from pathlib import Path

import sqlalchemy as sa
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy.engine import Engine
from sqlmodel import SQLModel

from server.store.db import create_db_engine
from server.store.migrate import alembic_config, current_revision, head_revision, upgrade_database
from server.store.tables import ALL_TABLES


def _diff(engine: Engine) -> list[object]:
    with engine.connect() as connection:
        context = MigrationContext.configure(connection, opts={"compare_type": True})
        return list(compare_metadata(context, SQLModel.metadata))


def test_migrations_match_models(engine: Engine) -> None:
    assert _diff(engine) == []
    assert current_revision(engine) == head_revision()


def test_comparison_would_notice_a_missing_table(database_url: str) -> None:
    # Guards the test above: on an empty database the comparison must report every table.
    engine = create_db_engine(database_url)
    try:
        added = {d[1].name for d in _diff(engine) if isinstance(d, tuple) and d[0] == "add_table"}
        assert added == {t.__tablename__ for t in ALL_TABLES}
    finally:
        engine.dispose()


def test_upgrade_is_idempotent_and_reversible(engine: Engine) -> None:
    upgrade_database(engine)  # second run: nothing to do, no error
    command.downgrade(alembic_config(engine), "base")
    assert set(sa.inspect(engine).get_table_names()) <= {"alembic_version"}
    upgrade_database(engine)
    assert _diff(engine) == []


def test_upgrade_from_a_url_creates_the_sqlite_file(tmp_path: Path) -> None:
    path = tmp_path / "nested" / "db.sqlite3"
    upgrade_database(f"sqlite:///{path}")
    assert path.is_file()
    engine = create_db_engine(f"sqlite:///{path}")
    try:
        assert {t.__tablename__ for t in ALL_TABLES} <= set(sa.inspect(engine).get_table_names())
    finally:
        engine.dispose()
