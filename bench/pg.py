"""A fresh PostgreSQL database per benchmark (CREATE DATABASE / DROP DATABASE), like the tests do."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager

import sqlalchemy as sa

ADMIN_URL = os.environ.get("MLC_BENCH_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres")


def server_version(admin_url: str = ADMIN_URL) -> str | None:
    """The server's version string, or None when no server answers (PostgreSQL rows are skipped)."""
    engine = sa.create_engine(admin_url, connect_args={"connect_timeout": 3})
    try:
        with engine.connect() as conn:
            return str(conn.execute(sa.text("show server_version")).scalar_one()).split()[0]
    except Exception:
        return None
    finally:
        engine.dispose()


@contextmanager
def fresh_database(label: str, admin_url: str = ADMIN_URL) -> Iterator[str]:
    """Yields the URL of a new empty database, dropped afterwards (even if connections linger)."""
    name = f"mlc_bench_{label}_{uuid.uuid4().hex[:8]}"
    admin = sa.create_engine(admin_url, isolation_level="AUTOCOMMIT", connect_args={"connect_timeout": 3})
    with admin.connect() as conn:
        conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
    url = sa.engine.make_url(admin_url).set(database=name).render_as_string(hide_password=False)
    try:
        yield url
    finally:
        with admin.connect() as conn:
            conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()
