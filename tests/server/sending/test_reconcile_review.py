"""'needs_review': what the reconciler could not decide, where people see it (the read API, the
metrics) and how an operator resolves it (`ml-connector messages resolve`), each with an audit entry."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import httpx
import pytest
import sqlalchemy as sa
from sqlalchemy.engine import Engine

from server.cli import main
from server.sandbox.stack import Stack
from server.store.audit import list_audit
from server.store.db import read_scope

from .conftest import insert, message, row
from .test_reconcile import dispatcher, interrupted, sent_with_body, texts_to


async def left_for_review(stack: Stack) -> str:
    """A job the reconciler could not decide: two texts at Twilio could each be it."""
    stack.twilio_sim.auto_advance = False
    stack.twilio_sim.drop_after_accept_next(1)
    (job,) = insert(stack, row(1))
    sender = dispatcher(stack)
    await sender.run_once()
    stack.clock.advance(timedelta(seconds=1))  # type: ignore[attr-defined]
    await texts_to(stack, row(1).to or "", 1, body=row(1).body)
    stack.clock.advance(timedelta(seconds=121))  # type: ignore[attr-defined]
    await sender.run_once()
    assert message(stack, job).status == "needs_review"
    return job


def cli_env(stack: Stack, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MLC_DATABASE_URL", stack.database_url)
    for name, value in stack.twilio_sim.connector_env().items():
        monkeypatch.setenv(name, value)


async def test_needs_review_is_in_the_read_api_and_the_metrics(stack: Stack, api: httpx.AsyncClient) -> None:
    job = await left_for_review(stack)

    listed = (await api.get("/api/messages", params={"status": "needs_review"})).json()["items"]
    assert [(m["job_id"], m["status"]) for m in listed] == [(job, "needs_review")]
    metrics = (await api.get("/metrics")).text
    assert 'mlc_messages{status="needs_review"} 1.0' in metrics


async def test_resolve_sent_records_the_sid_checked_at_twilio(
    stack: Stack, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    job = await left_for_review(stack)
    first, second = (m["sid"] for m in stack.twilio_sim.messages())
    cli_env(stack, monkeypatch)

    assert (
        await asyncio.to_thread(
            main, ["messages", "resolve", job, "--sent", "SM" + "0" * 32, "--reason", "x"]
        )
        == 1
    )
    assert "--sent: Twilio has no SM000" in capsys.readouterr().err
    assert (
        await asyncio.to_thread(
            main,
            ["messages", "resolve", job, "--sent", first, "--reason", "the earlier one", "--by", "alice"],
        )
        == 0
    )
    assert capsys.readouterr().out == f"{job}: sent as {first} (queued) (by alice)\n"

    resolved = message(stack, job)
    assert (resolved.status, resolved.twilio_sid) == ("queued", first)
    with read_scope(stack.services.db) as session:
        (entry,) = list_audit(session, action="message.resolved_sent")
        assert (entry.actor, entry.subject, entry.details["sid"], entry.details["reason"]) == (
            "alice",
            job,
            first,
            "the earlier one",
        )
    assert (
        await asyncio.to_thread(main, ["messages", "resolve", job, "--not-sent", "--reason", "again"]) == 1
    )  # not in review now
    assert "status is 'queued', not 'needs_review'" in capsys.readouterr().err
    assert second != first


async def test_resolve_not_sent_sends_it_once_more(
    stack: Stack, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    (job,) = insert(stack, row(1))
    interrupted(stack, job)
    stack.clock.advance(timedelta(seconds=121))  # type: ignore[attr-defined]
    await dispatcher(stack, max_listed=1, page_size=1).run_once()  # the list is empty: proof
    assert message(stack, job).status == "queued"
    (other,) = insert(stack, row(2))
    interrupted(stack, other)
    await texts_to(stack, row(2).to or "", 3)
    stack.clock.advance(timedelta(seconds=121))  # type: ignore[attr-defined]
    await dispatcher(stack, max_listed=2, page_size=2).run_once()
    assert message(stack, other).status == "needs_review"
    cli_env(stack, monkeypatch)

    assert (
        await asyncio.to_thread(
            main, ["messages", "resolve", other, "--not-sent", "--reason", "not in the console"]
        )
        == 0
    )
    assert message(stack, other).status == "planned"
    # Due from the moment the command ran (by the wall clock): the test's clock catches up.
    stack.clock.advance(datetime.now(UTC) - stack.clock.now() + timedelta(seconds=1))  # type: ignore[attr-defined]
    await dispatcher(stack).run_once()
    assert sent_with_body(stack, row(2).body) == 1
    with read_scope(stack.services.db) as session:
        (entry,) = list_audit(session, action="message.resolved_not_sent")
        assert (entry.subject, entry.details) == (other, {"reason": "not in the console"})
        assert entry.actor.startswith("cli")


def test_the_migrated_database_admits_needs_review_and_nothing_else(engine: Engine) -> None:

    with engine.begin() as connection:
        connection.execute(
            sa.text(
                "INSERT INTO outbox (job_id, rule_id, entity, company_id, channel, body, segments, "
                "dedupe_key, status, attempts, next_attempt_at, is_test, created_at, updated_at, timezone) "
                "VALUES ('j1', 'r', 'customers', 'c', 'sms', 'b', 1, 'k', 'needs_review', 1, "
                "CURRENT_TIMESTAMP, false, CURRENT_TIMESTAMP, CURRENT_TIMESTAMP, 'UTC')"
            )
        )
    with pytest.raises(sa.exc.IntegrityError), engine.begin() as connection:
        connection.execute(sa.text("UPDATE outbox SET status = 'needs_reviewed'"))
