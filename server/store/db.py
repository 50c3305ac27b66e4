"""Engines, sessions and the few statements that differ between SQLite and PostgreSQL.

SQLite (the zero-set-up default) gets WAL, a busy timeout and foreign keys on every connection,
and every transaction starts with BEGIN IMMEDIATE: the write lock is taken up front, so a
read-then-write transaction (claim, status update, lease) is serialised instead of failing with
SQLITE_BUSY on lock upgrade. That is SQLite's fallback for PostgreSQL's row locks and
`FOR UPDATE SKIP LOCKED` (which the SQLite dialect renders as nothing). Consequence: keep
transactions short, never hold a session open across a network call, and read through
read_scope (a DEFERRED transaction) where nothing is written.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import URL, Engine, make_url
from sqlalchemy.pool import StaticPool
from sqlmodel import Session

SQLITE_BUSY_TIMEOUT_MS = 30_000
READ_ONLY_OPTION = "mlc_read_only"
# Rows per multi-VALUES statement: well under SQLite's 32,766 bound parameters and PostgreSQL's 65,535.
INSERT_CHUNK_ROWS = 200


def is_postgres(bind: Engine | sa.Connection | Session) -> bool:
    return _dialect_name(bind) == "postgresql"


def _dialect_name(bind: Engine | sa.Connection | Session) -> str:
    if isinstance(bind, Session):
        return bind.get_bind().dialect.name
    return bind.dialect.name


def create_db_engine(url: str | URL, *, echo: bool = False) -> Engine:
    """An engine for `url` (MLC_DATABASE_URL), with the SQLite connection settings applied."""
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        return _create_sqlite_engine(parsed, echo=echo)
    if parsed.get_backend_name() == "postgresql":
        return sa.create_engine(parsed, echo=echo, pool_pre_ping=True, connect_args={"connect_timeout": 10})
    raise ValueError(
        f"MLC_DATABASE_URL: unsupported database {parsed.get_backend_name()!r}; use sqlite:///path or postgresql+psycopg://..."
    )


def _create_sqlite_engine(url: URL, *, echo: bool) -> Engine:
    in_memory = url.database in (None, "", ":memory:")
    if not in_memory and url.database:
        Path(url.database).parent.mkdir(parents=True, exist_ok=True)
    kwargs: dict[str, Any] = {"echo": echo}
    if in_memory:
        # One shared connection, or each checkout would see its own empty database.
        kwargs.update(poolclass=StaticPool, connect_args={"check_same_thread": False})
    engine = sa.create_engine(url, **kwargs)

    @event.listens_for(engine, "connect")
    def _configure(dbapi_connection: Any, _record: Any) -> None:
        # Let SQLAlchemy, not the sqlite3 module, decide when transactions begin (see "begin" below).
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        try:
            if not in_memory:
                cursor.execute("PRAGMA journal_mode=WAL")
                # FULL: each commit is on disk before it returns. WAL's NORMAL survives a crash of
                # the process but not of the machine (power, kernel): the last commits roll back.
                # A lost 'submitting' or SID after Twilio accepted the send means the job is sent
                # again; a lost inbox row after the 202 is a notification BC never resends. The
                # cost is one fsync per commit (~0.5 ms here), which group commits share.
                cursor.execute("PRAGMA synchronous=FULL")
            cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
            cursor.execute("PRAGMA foreign_keys=ON")
        finally:
            cursor.close()

    @event.listens_for(engine, "begin")
    def _begin(connection: sa.Connection) -> None:
        # Readers (read_scope) begin DEFERRED: in WAL mode they neither wait for nor block writers.
        if connection.get_execution_options().get(READ_ONLY_OPTION):
            connection.exec_driver_sql("BEGIN")
        else:
            connection.exec_driver_sql("BEGIN IMMEDIATE")

    return engine


def make_session(engine: Engine) -> Session:
    """A session whose objects stay readable after commit (workers pass them on after the transaction)."""
    return Session(engine, expire_on_commit=False)


@contextmanager
def session_scope(engine: Engine) -> Iterator[Session]:
    """One unit of work: commit on success, roll back on error, always close.

    The repository functions in this package never commit; the caller decides the transaction.
    """
    session = make_session(engine)
    try:
        yield session
        session.commit()
    except BaseException:
        session.rollback()
        raise
    finally:
        session.close()


def dialect_insert(session: Session) -> Any:
    """The backend's INSERT construct (both offer on_conflict_do_nothing / on_conflict_do_update)."""
    return postgresql.insert if is_postgres(session) else sqlite.insert


@contextmanager
def read_scope(engine: Engine) -> Iterator[Session]:
    """A session for reading only (audit API, reports): never commits; on SQLite it takes no write lock."""
    session = Session(engine.execution_options(**{READ_ONLY_OPTION: True}), expire_on_commit=False)
    try:
        yield session
    finally:
        session.rollback()
        session.close()


def insert_ignoring_conflicts(
    session: Session,
    table: sa.Table,
    rows: Sequence[Mapping[str, Any]],
    *,
    conflict_columns: Sequence[str],
    returning: sa.ColumnElement[Any],
) -> list[Any]:
    """INSERT ... ON CONFLICT (cols) DO NOTHING RETURNING col, on both backends.

    Returns the `returning` value of each row actually inserted (rows that hit the conflict are
    silently dropped): the database constraint, not a prior SELECT, decides what is a duplicate,
    so two writers racing with the same key still produce one row.
    """
    inserted: list[Any] = []
    # One statement with the rows as parameters (SQLAlchemy's "insertmanyvalues" batches them and
    # collects RETURNING): compiled once and cached. `.values(chunk)` compiled a new statement with
    # a bind per cell for every chunk, which cost more than the database work (bench: sweep).
    stmt = (
        dialect_insert(session)(table)
        .on_conflict_do_nothing(index_elements=list(conflict_columns))
        .returning(returning)
    )
    for start in range(0, len(rows), INSERT_CHUNK_ROWS):
        chunk = [dict(r) for r in rows[start : start + INSERT_CHUNK_ROWS]]
        inserted.extend(session.execute(stmt, chunk).scalars().all())
    return inserted


def upsert_statement(
    session: Session,
    table: sa.Table,
    rows: Sequence[Mapping[str, Any]],
    *,
    conflict_columns: Sequence[str],
    update_columns: Sequence[str],
    where: Any = None,
) -> Any:
    """INSERT ... ON CONFLICT (cols) DO UPDATE SET col = excluded.col [WHERE ...] for either backend.

    `where` is a callable taking the `excluded` namespace and returning a condition, or None.
    """
    stmt = dialect_insert(session)(table).values([dict(r) for r in rows])
    condition = where(stmt.excluded) if where is not None else None
    return stmt.on_conflict_do_update(
        index_elements=list(conflict_columns),
        set_={name: stmt.excluded[name] for name in update_columns},
        where=condition,
    )


def ping(session: Session) -> None:
    """One round trip to the database (raises SQLAlchemyError when it does not answer)."""
    session.exec(sa.select(1))  # type: ignore[call-overload]


# How long the /ready write probe waits for SQLite's write lock (a busy writer is not a failure;
# one that holds the lock for longer than this is).
WRITE_PROBE_TIMEOUT_MS = 500


def write_probe(engine: Engine) -> None:
    """Write, as this instance would, in a transaction that is then rolled back; raises
    SQLAlchemyError when the write fails. A read (ping) passes on a database that cannot store
    anything: a full disk, a read-only PostgreSQL (default_transaction_read_only, a standby), a
    SQLite write lock held by another process.

    SQLite: BEGIN IMMEDIATE takes the write lock; the probe then creates a table and writes two
    pages into it, so it needs pages the file does not have yet (a full disk fails here with
    SQLITE_FULL: https://www.sqlite.org/rescode.html#full). The rollback leaves the file as it was.
    PostgreSQL: an INSERT into leases (a read-only transaction refuses it: 25006), rolled back.
    """
    with engine.connect() as conn:
        sqlite_file = not is_postgres(conn)
        # On the driver's connection: through SQLAlchemy the PRAGMA would begin (BEGIN IMMEDIATE).
        driver: Any = conn.connection.driver_connection
        if sqlite_file:
            driver.execute(f"PRAGMA busy_timeout={WRITE_PROBE_TIMEOUT_MS}")
        try:
            with conn.begin() as tx:
                if sqlite_file:
                    conn.exec_driver_sql("CREATE TABLE mlc_write_probe (b BLOB)")
                    conn.exec_driver_sql("INSERT INTO mlc_write_probe VALUES (zeroblob(8192))")
                else:
                    conn.exec_driver_sql(
                        "INSERT INTO leases (name, holder, expires_at, acquired_at, generation) "
                        "VALUES ('ready-write-probe', 'ready', now(), now(), 0) ON CONFLICT DO NOTHING"
                    )
                tx.rollback()
        finally:
            if sqlite_file:
                driver.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")


def write_failure(exc: sa.exc.SQLAlchemyError) -> str:
    """What a failed write probe means, in a few words (never the statement or its parameters)."""
    text = str(getattr(exc, "orig", exc) or exc).lower()
    if "locked" in text or "busy" in text:
        return "locked: another process holds the write lock"
    if "full" in text:
        return "cannot write: database or disk is full"
    if "read-only" in text or "readonly" in text:
        return "cannot write: the database is read-only"
    return f"cannot write: {type(getattr(exc, 'orig', exc)).__name__}"
