"""Everything a database holds, as text, so tests can look for secrets in it.

SQLite: the raw bytes of the database file and its WAL (recent writes live there first).
PostgreSQL: every text, varchar and json column of every table, read with SELECT (no pg_dump).
"""

from __future__ import annotations

from pathlib import Path

import sqlalchemy as sa
from sqlalchemy.engine import make_url


def database_text(url: str) -> str:
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        assert parsed.database
        path = Path(parsed.database)
        chunks = [p.read_bytes() for p in (path, Path(f"{path}-wal")) if p.exists()]
        assert chunks, f"no database file at {path}"
        return b"".join(chunks).decode("latin-1")
    engine = sa.create_engine(url)
    parts: list[str] = []
    try:
        with engine.connect() as conn:
            columns = conn.execute(
                sa.text(
                    "SELECT table_name, column_name FROM information_schema.columns "
                    "WHERE table_schema = 'public' AND data_type IN ('text', 'character varying', 'jsonb', 'json')"
                )
            ).all()
            assert columns
            for table, column in columns:
                rows = conn.execute(sa.text(f'SELECT CAST("{column}" AS text) FROM "{table}"')).scalars()
                parts.extend(value for value in rows if value is not None)
    finally:
        engine.dispose()
    return "\n".join(parts)
