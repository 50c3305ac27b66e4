"""Connection settings and timestamp handling."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import Engine

from server.store.audit import list_audit, record_audit
from server.store.db import create_db_engine, make_session, read_scope, session_scope


def test_sqlite_connections_use_wal_busy_timeout_and_foreign_keys(tmp_path: Path) -> None:
    engine = create_db_engine(f"sqlite:///{tmp_path / 'x.sqlite3'}")
    try:
        with engine.connect() as conn:
            assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
            assert conn.exec_driver_sql("PRAGMA synchronous").scalar() == 2  # FULL: durable commits
            assert conn.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1
            assert conn.exec_driver_sql("PRAGMA busy_timeout").scalar() == 30000
    finally:
        engine.dispose()


def test_unsupported_database_url_is_named() -> None:
    with pytest.raises(ValueError, match=r"MLC_DATABASE_URL: unsupported database 'mysql'"):
        create_db_engine("mysql://u@h/db")


def test_timestamps_round_trip_as_aware_utc(engine: Engine) -> None:
    plus_two = timezone(timedelta(hours=2))
    with session_scope(engine) as session:
        record_audit(
            session, actor="ops", action="test", subject="x", now=datetime(2026, 3, 1, 12, 0, tzinfo=plus_two)
        )
    with session_scope(engine) as session:
        (entry,) = list_audit(session)
    assert entry.at == datetime(2026, 3, 1, 10, 0, tzinfo=UTC)
    assert entry.at.tzinfo == UTC


def test_naive_datetime_is_refused(engine: Engine) -> None:
    with pytest.raises(ValueError, match="now must be timezone-aware"), session_scope(engine) as session:
        record_audit(session, actor="ops", action="test", subject="x", now=datetime(2026, 3, 1, 12, 0))


def test_foreign_keys_are_enforced(engine: Engine) -> None:
    with pytest.raises(sa.exc.IntegrityError), session_scope(engine) as session:
        session.execute(
            sa.text(
                "INSERT INTO message_events (job_id, status, source, changed, at) "
                "VALUES ('no-such-job', 'queued', 'callback', false, :at)"
            ),
            {"at": datetime(2026, 1, 1)},
        )


def test_readers_are_not_blocked_by_an_open_write_transaction(engine: Engine) -> None:
    at = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
    with session_scope(engine) as session:
        record_audit(session, actor="ops", action="before", subject="x", now=at)
    writer = make_session(engine)
    try:
        record_audit(writer, actor="ops", action="uncommitted", subject="x", now=at)  # holds the write lock
        with read_scope(engine) as reader:
            assert [e.action for e in list_audit(reader)] == ["before"]
    finally:
        writer.rollback()
        writer.close()
