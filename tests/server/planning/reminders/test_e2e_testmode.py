"""End to end with the simulators: test mode diverts every send (SMS and calls) to the test number."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest
from sqlmodel import select

from server.sandbox.stack import Stack
from server.store.db import read_scope
from server.store.tables import OutboxMessage
from tests.server.planning.reminders.conftest import start, sweep_and_dispatch

pytestmark = pytest.mark.timeout(90)


async def test_test_mode_diverts_every_send_to_the_test_number(
    tmp_path: Path, stacks: list[Stack], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MLC_TEST_MODE", "true")
    monkeypatch.setenv("MLC_TEST_NUMBER", "+44 7700 900999")
    stack, _ = await start(tmp_path, datetime(2026, 11, 25, 17, 0, tzinfo=UTC))  # inside every window
    stacks.append(stack)
    await sweep_and_dispatch(stack)
    sent = stack.twilio_sim.messages()
    assert sent, "the demo data has reminders to send"
    assert {m["to"] for m in sent} == {"+447700900999"}
    assert all(m["body"].startswith("[TEST for ") for m in sent)
    assert {c["to"] for c in stack.twilio_sim.calls()} <= {"+447700900999"}  # final-stage calls too
    with read_scope(stack.services.db) as session:
        rows = session.exec(select(OutboxMessage)).all()
        assert rows and all(r.is_test for r in rows)
