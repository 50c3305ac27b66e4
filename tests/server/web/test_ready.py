"""/ready says whether this instance can write, by writing (a probe rolled back), over real HTTP:
a SQLite file that cannot grow (SQLITE_FULL, as on a full disk) and a PostgreSQL database whose
transactions are read-only both answer 503 naming the database check."""

from __future__ import annotations

import sqlite3
from typing import Any

import httpx
import pytest
import sqlalchemy as sa
from sqlalchemy import event

from server.sandbox.stack import Stack

pytestmark = pytest.mark.timeout(120)


async def ready(stack: Stack) -> httpx.Response:
    async with httpx.AsyncClient(base_url=stack.url, timeout=30) as http:
        return await http.get("/ready")


@pytest.fixture
def stack_url(sqlite_url: str) -> str:
    return sqlite_url


async def test_ready_is_503_when_the_sqlite_file_cannot_grow(stack: Stack) -> None:
    assert (await ready(stack)).status_code == 200
    engine = stack.services.db

    @event.listens_for(engine, "connect")
    def _full(dbapi_connection: Any, _record: Any) -> None:
        # max_page_count at the pages the file has: every write that needs a page fails with
        # SQLITE_FULL, "database or disk is full" (https://www.sqlite.org/pragma.html#pragma_max_page_count).
        cursor = dbapi_connection.cursor()
        pages = cursor.execute("PRAGMA page_count").fetchone()[0]
        cursor.execute(f"PRAGMA max_page_count={pages}")
        cursor.close()

    engine.dispose()  # new connections, each with the limit
    answer = await ready(stack)
    assert answer.status_code == 503
    assert answer.json()["status"] == "not ready"
    assert answer.json()["checks"]["database"] == "cannot write: database or disk is full"

    event.remove(engine, "connect", _full)
    engine.dispose()
    assert (await ready(stack)).status_code == 200


async def test_ready_is_503_while_another_process_holds_the_sqlite_write_lock(
    stack: Stack, sqlite_url: str
) -> None:
    locker = sqlite3.connect(sqlite_url.removeprefix("sqlite:///"), isolation_level=None)
    locker.execute("BEGIN IMMEDIATE")
    try:
        answer = await ready(stack)
        assert answer.status_code == 503
        assert answer.json()["checks"]["database"] == "locked: another process holds the write lock"
    finally:
        locker.execute("ROLLBACK")
        locker.close()
    assert (await ready(stack)).status_code == 200


@pytest.mark.postgres
async def test_ready_is_503_when_postgres_transactions_are_read_only(
    postgres_url: str, stack_class: type[Stack], clock: Any
) -> None:
    async with stack_class(database_url=postgres_url, clock=clock) as stack:
        assert (await ready(stack)).status_code == 200
        name = sa.engine.make_url(postgres_url).database
        admin = sa.create_engine(postgres_url, isolation_level="AUTOCOMMIT")
        with admin.connect() as conn:
            conn.execute(sa.text(f'ALTER DATABASE "{name}" SET default_transaction_read_only = on'))
        admin.dispose()
        stack.services.db.dispose()  # the setting applies to new sessions
        answer = await ready(stack)
        assert answer.status_code == 503
        assert answer.json()["checks"]["database"] == "cannot write: the database is read-only"
