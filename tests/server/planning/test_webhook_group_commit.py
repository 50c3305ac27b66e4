"""`/webhooks/bc` under concurrent POSTs: those that queue while the writer is busy share its next
transaction (group commit), yet each is answered on its own, only after that commit, with its own
count of new items; a POST the database refuses fails alone (503: BC retries), not its neighbours."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import httpx
import pytest
import sqlalchemy as sa

from server.planning.notifications import ingest_for
from server.sandbox.stack import Stack
from tests.server.planning.conftest import inbox_rows
from tests.server.planning.test_webhook import customers_subscription, item

pytestmark = pytest.mark.timeout(60)


@contextmanager
def write_lock_held(stack: Stack) -> Iterator[None]:
    """Another writer holds SQLite's lock: the webhook's writer waits for it in its current round."""
    with stack.services.db.begin() as conn:  # BEGIN IMMEDIATE (server.store.db)
        conn.exec_driver_sql("SELECT 1")
        yield


async def until(stack: Stack, writing: bool, queued: int) -> None:
    ingest = ingest_for(stack.services)
    for _ in range(1000):
        if ingest.state() == (writing, queued):
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"writer (at work, queued) is {ingest.state()}, expected {(writing, queued)}")


async def post_all(stack: Stack, first: dict[str, Any], rest: list[dict[str, Any]]) -> list[httpx.Response]:
    async with httpx.AsyncClient(base_url=stack.url, timeout=30) as http:
        with write_lock_held(stack):
            head = asyncio.create_task(http.post("/webhooks/bc", json=first))
            await until(stack, True, 0)  # taken by the writer, which now waits for the lock
            tail = [asyncio.create_task(http.post("/webhooks/bc", json=body)) for body in rest]
            await until(stack, True, len(rest))  # so these all go in its next round
        return [await head, *[await t for t in tail]]


async def test_grouped_posts_get_their_own_answers(lite_stack: Stack) -> None:
    sub, secret = await customers_subscription(lite_stack)
    a, b, c, forged = (
        {"value": [item(sub, secret, "r-1")]},
        {"value": [item(sub, secret, "r-2"), item(sub, secret, "r-3")]},
        {"value": [item(sub, secret, "r-3"), item(sub, secret, "r-4")]},  # r-3 also in b: stored once
        {"value": [item(sub, secret, "r-5", client_state="forged")]},
    )
    answers = await post_all(lite_stack, a, [b, c, forged])
    assert [(r.status_code, r.text) for r in answers] == [
        (202, "accepted 1, new 1"),
        (202, "accepted 2, new 2"),
        (202, "accepted 2, new 1"),
        (403, "no acceptable notification in the request"),
    ]
    assert sorted(r.record_id or "" for r in inbox_rows(lite_stack)) == ["r-1", "r-2", "r-3", "r-4"]


async def test_a_post_the_database_refuses_fails_alone(lite_stack: Stack) -> None:
    sub, secret = await customers_subscription(lite_stack)
    with lite_stack.services.db.begin() as conn:  # the database refuses one record, whatever the reason
        conn.exec_driver_sql(
            "CREATE TRIGGER refuse_poison BEFORE INSERT ON notification_inbox "
            "WHEN NEW.record_id = 'poison' BEGIN SELECT RAISE(ABORT, 'refused'); END"
        )
    answers = await post_all(
        lite_stack,
        {"value": [item(sub, secret, "r-1")]},
        [
            {"value": [item(sub, secret, "r-2")]},
            {"value": [item(sub, secret, "r-3"), item(sub, secret, "poison")]},
            {"value": [item(sub, secret, "r-4")]},
        ],
    )
    assert [r.status_code for r in answers] == [202, 202, 503, 202]
    assert sorted(r.record_id or "" for r in inbox_rows(lite_stack)) == ["r-1", "r-2", "r-4"]
    with lite_stack.services.db.begin() as conn:
        conn.execute(sa.text("DROP TRIGGER refuse_poison"))
    retried = await post_all(lite_stack, {"value": [item(sub, secret, "r-3")]}, [])
    assert [(r.status_code, r.text) for r in retried] == [(202, "accepted 1, new 1")]
