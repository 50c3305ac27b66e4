"""Schema migrations: alembic, driven from code (no alembic.ini), applied at start-up."""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy.engine import URL, Engine

from server.store.db import create_db_engine

MIGRATIONS_DIR = Path(__file__).resolve().parent / "migrations"


def alembic_config(engine: Engine) -> Config:
    """An alembic Config for this package's migrations, bound to `engine` (env.py reads it)."""
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    config.attributes["engine"] = engine
    return config


def upgrade_database(target: str | URL | Engine, revision: str = "head") -> None:
    """Bring the database at `target` (URL or engine) up to `revision`. Safe to call on every start.

    On PostgreSQL, concurrent starts are serialised by an advisory lock in env.py, so two
    instances starting together do not both try to create the tables.
    """
    engine = target if isinstance(target, Engine) else create_db_engine(target)
    try:
        command.upgrade(alembic_config(engine), revision)
    finally:
        if engine is not target:
            engine.dispose()


def current_revision(engine: Engine) -> str | None:
    with engine.connect() as connection:
        return MigrationContext.configure(connection).get_current_revision()


def head_revision() -> str | None:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    return ScriptDirectory.from_config(config).get_current_head()
