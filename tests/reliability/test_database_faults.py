"""The database goes away under the running connector: a private PostgreSQL cluster is stopped and
started mid-run, and another process holds SQLite's write lock. /ready says so while it lasts; BC's
notifications are answered 503 (so BC retries) and nothing is lost or sent twice afterwards."""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path

import httpx
import pytest
import sqlalchemy as sa

from .conftest import PrivateCluster, World, eventually, open_world, write_figures

pytestmark = pytest.mark.timeout(240)


async def ready(world: World) -> tuple[int, dict[str, object]]:
    async with httpx.AsyncClient(base_url=world.connector.url, timeout=15) as http:
        response = await http.get("/ready")
        return response.status_code, response.json()


async def started(world: World) -> None:
    world.connector.start()
    await world.connector.wait_healthy()

    async def subscribed() -> bool:
        return len(world.bc.subscriptions()) == 2

    await eventually(subscribed, what="subscriptions created")


async def test_postgres_restarted_mid_run(private_postgres: PrivateCluster, tmp_path: Path) -> None:
    admin = sa.create_engine(private_postgres.url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(sa.text("CREATE DATABASE connector"))
    admin.dispose()
    url = private_postgres.url.rsplit("/", 1)[0] + "/connector"
    async with open_world(url, tmp_path) as world:
        await started(world)
        world.create_customers(30)
        await asyncio.sleep(0.5)  # mid-flow: some notified, some fetched, some sent
        private_postgres.stop()
        outage: list[dict[str, object]] = []

        async def reports_outage() -> bool:
            status, body = await ready(world)
            outage.append(body)
            return status == 503 and "unreachable" in str(body["checks"])

        await eventually(reports_outage, within=30, what="/ready reports the database outage")
        world.create_customers(30, start=30)  # BC notifies while the database is down
        await asyncio.sleep(1.0)
        private_postgres.start()

        async def recovered() -> bool:
            return (await ready(world))[0] == 200

        await eventually(recovered, within=60, what="/ready recovers")
        want = world.expected()
        await world.wait_settled(want, within=120, what="settled after the outage")
        figures = await world.check_invariants(want)
        write_figures("db-postgres-restart", {"fault": "postgres restarted", **figures})


async def test_sqlite_locked_by_another_writer(tmp_path: Path) -> None:
    path = tmp_path / "connector.sqlite3"
    async with open_world(f"sqlite:///{path}", tmp_path) as world:
        await started(world)
        world.create_customers(20)
        await asyncio.sleep(0.3)
        locker = sqlite3.connect(path, timeout=30, isolation_level=None)
        locker.execute("BEGIN IMMEDIATE")  # another writer takes the write lock and keeps it
        try:
            world.create_customers(20, start=20)

            async def reports_lock() -> bool:
                status, body = await ready(world)
                return status == 503 and "locked" in str(body["checks"])

            await eventually(reports_lock, within=30, what="/ready reports the locked database")
            await asyncio.sleep(2.0)
        finally:
            locker.execute("ROLLBACK")
            locker.close()

        async def recovered() -> bool:
            return (await ready(world))[0] == 200

        await eventually(recovered, within=60, what="/ready recovers")
        want = world.expected()
        await world.wait_settled(want, within=120, what="settled after the lock")
        figures = await world.check_invariants(want)
        write_figures("db-sqlite-locked", {"fault": "sqlite write lock held", **figures})
