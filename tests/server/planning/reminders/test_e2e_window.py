"""End to end with the simulators and the sandbox clock: a reminder waits for the RECIPIENT's send
window (another time zone, across a DST change, a public holiday), and test mode diverts every send."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import pytest

from server.sandbox.stack import Stack
from tests.server.planning.reminders.conftest import (
    customer_with_invoice,
    row_for,
    start,
    sweep_and_dispatch,
    texts_to,
)

pytestmark = pytest.mark.timeout(90)


async def test_a_new_york_recipient_is_held_until_8am_new_york_time(
    tmp_path: Path, stacks: list[Stack]
) -> None:
    # Tuesday 24 Nov 2026 21:00 in New York (02:00 UTC on the 25th); 18:00 in Los Angeles, the
    # rule's own zone, where the old rule-zone quiet hours would have let it through.
    stack, clock = await start(tmp_path, datetime(2026, 11, 25, 2, 0, tzinfo=UTC))
    stacks.append(stack)
    customer_with_invoice(stack, "+1 212 555 0100", date(2026, 11, 23), "PS-NY0001")
    await sweep_and_dispatch(stack)
    held = row_for(stack, "PS-NY0001")
    assert (held.status, held.hold_until) == ("held", datetime(2026, 11, 25, 13, 0, tzinfo=UTC))
    assert texts_to(stack, "+12125550100") == []
    clock.advance(timedelta(hours=10, minutes=59))  # 07:59 in New York: still quiet
    await stack.run("dispatcher")
    assert texts_to(stack, "+12125550100") == []
    clock.advance(timedelta(minutes=1))  # 08:00 in New York
    await stack.run("dispatcher")
    await stack.twilio_sim.asettle()
    [body] = texts_to(stack, "+12125550100")
    # Planned on the 24th ("1 day overdue"), rendered again at release on the 25th (server/sending/release.py).
    assert "PS-NY0001" in body and "2 days overdue" in body


async def test_a_hold_across_the_dst_change_and_a_sunday_ends_at_monday_8am_local(
    tmp_path: Path, stacks: list[Stack]
) -> None:
    # Saturday 24 Oct 2026 21:00 BST in London; clocks go back on Sunday; Sundays are not send days.
    stack, clock = await start(tmp_path, datetime(2026, 10, 24, 20, 0, tzinfo=UTC))
    stacks.append(stack)
    customer_with_invoice(stack, "+44 20 7946 0321", date(2026, 10, 23), "PS-UK0001")
    await sweep_and_dispatch(stack)
    held = row_for(stack, "PS-UK0001")
    # Monday 26 Oct 08:00 GMT (no longer BST) = 08:00 UTC.
    assert (held.status, held.hold_until) == ("held", datetime(2026, 10, 26, 8, 0, tzinfo=UTC))
    assert held.hold_until is not None
    clock.advance(held.hold_until - clock.now())
    await stack.run("dispatcher")
    await stack.twilio_sim.asettle()
    assert len(texts_to(stack, "+442079460321")) == 1


async def test_thanksgiving_holds_a_us_reminder_until_the_next_working_morning(
    tmp_path: Path, stacks: list[Stack]
) -> None:
    # Thursday 26 Nov 2026 10:00 in New York: Thanksgiving.
    stack, _ = await start(tmp_path, datetime(2026, 11, 26, 15, 0, tzinfo=UTC))
    stacks.append(stack)
    customer_with_invoice(stack, "+1 212 555 0111", date(2026, 11, 25), "PS-NY0002")
    await sweep_and_dispatch(stack)
    held = row_for(stack, "PS-NY0002")
    assert (held.status, held.hold_until) == ("held", datetime(2026, 11, 27, 13, 0, tzinfo=UTC))
