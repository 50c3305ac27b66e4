"""Quiet hours (pure, then through the dispatcher) and the send budget (with a fake monotonic clock)."""

from __future__ import annotations

import random
from datetime import UTC, datetime
from pathlib import Path

import pytest

from engine.loader import load_ruleset
from server.runtime.clock import ManualClock
from server.runtime.retry import backoff_delay
from server.sandbox.stack import Stack
from server.sending.budget import SendBudget
from server.sending.quiet import QuietHoursError, parse_quiet_hours, quiet_until

from .conftest import creates, insert, make_dispatcher, message, row

LONDON = "Europe/London"


def utc(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


@pytest.mark.parametrize(
    ("now", "window", "tz", "expected"),
    [
        ("2026-11-25T22:00", "21:00-08:00", LONDON, "2026-11-26T08:00"),  # evening: ends tomorrow
        ("2026-11-26T03:00", "21:00-08:00", LONDON, "2026-11-26T08:00"),  # after midnight: ends today
        ("2026-11-25T21:00", "21:00-08:00", LONDON, "2026-11-26T08:00"),  # start is inclusive
        ("2026-11-25T08:00", "21:00-08:00", LONDON, None),  # end is exclusive
        ("2026-11-25T12:00", "21:00-08:00", LONDON, None),
        ("2026-11-25T12:30", "12:00-13:00", LONDON, "2026-11-25T13:00"),  # same-day window
        ("2026-11-25T13:00", "12:00-13:00", LONDON, None),
        ("2026-07-01T21:30", "22:00-07:00", LONDON, "2026-07-02T06:00"),  # BST: 22:30 local, ends 07:00 BST
        ("2026-07-01T20:30", "22:00-07:00", LONDON, None),  # 21:30 BST
        ("2026-11-25T12:00", "20:00-08:00", "America/Los_Angeles", "2026-11-25T16:00"),  # 04:00 PST
        ("2026-11-25T12:00", "08:00-08:00", LONDON, None),  # start == end: no window
        ("2026-11-25T12:00", None, LONDON, None),
    ],
)
def test_quiet_until(now: str, window: str | None, tz: str, expected: str | None) -> None:
    assert quiet_until(utc(now), window, tz) == (utc(expected) if expected else None)


def test_quiet_window_across_the_spring_forward_night() -> None:
    # 29 March 2026, London: 01:00 GMT becomes 02:00 BST. 00:30 GMT is inside 23:00-01:30 local;
    # 01:30 local does not exist that night, so the window ends at the first real instant after it.
    end = quiet_until(utc("2026-03-29T00:30"), "23:00-01:30", LONDON)
    assert end == utc("2026-03-29T01:30")  # 02:30 BST
    assert end is not None and end > utc("2026-03-29T00:30")


def test_bad_windows_are_named() -> None:
    with pytest.raises(QuietHoursError, match=r"quiet_hours '9pm-8am': expected HH:MM-HH:MM"):
        parse_quiet_hours("9pm-8am")
    with pytest.raises(QuietHoursError, match="hours are 00-23"):
        parse_quiet_hours("25:00-08:00")
    with pytest.raises(QuietHoursError, match="'Europe/Londn' is not an IANA time zone"):
        quiet_until(utc("2026-11-25T12:00"), "21:00-08:00", "Europe/Londn")


async def test_quiet_hours_hold_and_later_release(stack: Stack, clock: ManualClock) -> None:
    clock.set(utc("2026-11-25T22:00"))
    (job,) = insert(stack, row(1, quiet_hours="21:00-08:00", timezone=LONDON))
    dispatcher = make_dispatcher(stack)

    assert await dispatcher.run_once() == 1
    held = message(stack, job)
    assert (held.status, held.hold_until, held.next_attempt_at) == (
        "held",
        utc("2026-11-26T08:00"),
        utc("2026-11-26T08:00"),
    )
    clock.set(utc("2026-11-26T07:59"))
    assert await dispatcher.run_once() == 0
    assert creates(stack) == []

    clock.set(utc("2026-11-26T08:00"))
    assert await dispatcher.run_once() == 1
    sent = message(stack, job)
    assert (sent.status, sent.attempts, sent.hold_until) == ("queued", 1, None)
    assert len(creates(stack)) == 1


RULE_FILE = """\
version: 1
id: quiet-notice
description: A test rule whose only purpose is its send window.
trigger: {entity: salesInvoices, events: [sweep]}
when:
  - status: Open
recipient: {phone: "+44 7700 900123"}
send: {channel: sms, template: quiet-notice.sms.j2}
once_per: [id]
timezone: America/Los_Angeles
quiet_hours: "20:00-08:00"
"""


async def test_the_loaded_rule_decides_the_window(stack: Stack, tmp_path: Path) -> None:
    """The rule as loaded now says 20:00-08:00 America/Los_Angeles (12:00 UTC is 04:00 there); the row
    was planned without a window: the rule wins (an edited rule applies to jobs already queued)."""
    (tmp_path / "rules").mkdir()
    (tmp_path / "templates").mkdir()
    (tmp_path / "rules" / "quiet-notice.yaml").write_text(RULE_FILE)
    (tmp_path / "templates" / "quiet-notice.sms.j2").write_text("Invoice {{ number }} is open.")
    stack.services.ruleset = load_ruleset(tmp_path / "rules", tmp_path / "templates", default_region="GB")
    (job,) = insert(stack, row(1, rule_id="quiet-notice", job_id="quiet-notice:1"))

    await make_dispatcher(stack).run_once()

    held = message(stack, job)
    assert (held.status, held.hold_until) == ("held", utc("2026-11-25T16:00"))
    assert creates(stack) == []


class FakeTime:
    def __init__(self) -> None:
        self.now = 100.0
        self.slept: list[float] = []

    def __call__(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.slept.append(round(seconds, 6))
        self.now += seconds


async def test_a_burst_is_smoothed_not_refused() -> None:
    fake = FakeTime()
    budget = SendBudget(4.0, now=fake, sleep=fake.sleep)
    waits = [await budget.acquire() for _ in range(5)]
    assert [round(w, 6) for w in waits] == [0.0, 0.25, 0.25, 0.25, 0.25]
    fake.now += 10  # idle: the bucket refills only up to its burst size
    assert [round(await budget.acquire(), 6) for _ in range(2)] == [0.0, 0.25]


def test_reservations_queue_up_without_waiting_in_between() -> None:
    fake = FakeTime()
    budget = SendBudget(2.0, now=fake)
    assert [budget.reserve() for _ in range(4)] == [0.0, 0.5, 1.0, 1.5]


def test_a_pause_holds_every_send() -> None:
    fake = FakeTime()
    budget = SendBudget(100.0, now=fake)
    budget.pause(3.0)
    assert budget.reserve() == 3.0
    fake.now += 3.0
    assert budget.reserve() == 0.0


def test_backoff_is_full_jitter_under_a_growing_ceiling() -> None:
    rng = random.Random(7)
    for attempt, ceiling in [(1, 5.0), (2, 10.0), (3, 20.0), (10, 600.0)]:
        delays = [backoff_delay(attempt, base=5.0, cap=600.0, rng=rng) for _ in range(200)]
        assert min(delays) >= 0.0 and max(delays) <= ceiling
        assert max(delays) > ceiling / 2  # spread over the whole range, not clustered at the base
    assert backoff_delay(1, base=5.0, cap=600.0, rng=rng, retry_after=30.0) >= 30.0


async def test_voice_job_places_a_call_with_say_twiml(any_stack: Stack) -> None:
    stack = any_stack
    (job,) = insert(stack, row(1, channel="voice", body="Invoice SI-1 & 2 <overdue>"))
    await make_dispatcher(stack).run_once()

    (request,) = creates(stack, "Calls.json")
    form = request.form_dict()
    assert form["Twiml"] == [
        '<?xml version="1.0" encoding="UTF-8"?><Response><Say>Invoice SI-1 &amp; 2 &lt;overdue&gt;</Say></Response>'
    ]
    assert form["StatusCallbackEvent"] == ["initiated", "ringing", "answered", "completed"]
    assert form["From"] == [stack.twilio_sim.from_number]
    assert form["StatusCallback"][0].endswith(f"/webhooks/twilio/status?job={job.replace(':', '%3A')}")
    (call,) = stack.twilio_sim.calls()
    assert message(stack, job).twilio_sid == call["sid"]

    await stack.twilio_sim.asettle()
    done = message(stack, job)
    assert (done.status, done.twilio_status) == ("delivered", "completed")
    assert creates(stack) == []


async def test_a_busy_line_is_undelivered(stack: Stack) -> None:
    stack.twilio_sim.set_number("+447700900124", call_outcome="busy")
    (job,) = insert(stack, row(1, channel="voice", to="+447700900124"))
    await make_dispatcher(stack).run_once()
    await stack.twilio_sim.asettle()
    assert message(stack, job).status == "undelivered"


async def test_a_pause_that_begins_while_waiting_is_waited_out_too() -> None:
    """Concurrent sends: one waits for its turn when another meets a 429 and pauses the budget."""
    fake = FakeTime()
    budget = SendBudget(10.0, now=fake, sleep=fake.sleep)
    paused = False

    async def sleep_and_meet_a_429(seconds: float) -> None:
        nonlocal paused
        await fake.sleep(seconds)
        if not paused:
            paused = True
            budget.pause(5.0)  # another send was answered 429 meanwhile

    budget._sleep = sleep_and_meet_a_429
    assert await budget.acquire() == 0.0
    assert round(await budget.acquire(), 6) == 5.1  # its turn (0.1 s), then the whole pause
    assert fake.slept == [0.1, 5.0]
    assert round(await budget.wait_unpaused(), 6) == 0.0
