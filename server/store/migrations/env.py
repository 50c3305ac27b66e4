"""Alembic environment for server/store: online migrations only, on the engine handed in by migrate.py."""

from __future__ import annotations

import sqlalchemy as sa
from alembic import context
from sqlmodel import SQLModel

import server.store.tables  # noqa: F401  (registers the tables on SQLModel.metadata)
from server.store.db import create_db_engine

# Any fixed 64-bit number: the PostgreSQL advisory lock that serialises concurrent upgrades.
MIGRATION_LOCK_KEY = 7_261_539_018_114_113

config = context.config
target_metadata = SQLModel.metadata


def run_migrations_online() -> None:
    engine = config.attributes.get("engine")
    owned = engine is None
    if engine is None:
        url = config.get_main_option("sqlalchemy.url")
        if not url:
            raise RuntimeError("no engine or sqlalchemy.url given to the migrations")
        engine = create_db_engine(url)
    try:
        with engine.connect() as connection:
            is_pg = connection.dialect.name == "postgresql"
            if is_pg:
                # Session-level lock, held until released below, across the migration transaction.
                connection.execute(sa.text("SELECT pg_advisory_lock(:k)"), {"k": MIGRATION_LOCK_KEY})
                connection.commit()
            try:
                context.configure(
                    connection=connection,
                    target_metadata=target_metadata,
                    compare_type=True,
                    render_as_batch=connection.dialect.name == "sqlite",
                )
                with context.begin_transaction():
                    context.run_migrations()
            finally:
                if is_pg:
                    connection.execute(sa.text("SELECT pg_advisory_unlock(:k)"), {"k": MIGRATION_LOCK_KEY})
                    connection.commit()
    finally:
        if owned:
            engine.dispose()


if context.is_offline_mode():
    raise RuntimeError("offline (SQL script) migrations are not supported; run upgrade_database(url)")
run_migrations_online()
