"""Send windows in the recipient's local time: zones from the number, DST, weekdays, holidays."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from engine.loader import load_ruleset
from server.sending.quiet import parse_quiet_hours
from server.sending.sendwindow import (
    Hold,
    SendWindowError,
    Window,
    country_of,
    hold_for,
    next_send_time,
    recipient_zones,
)

NY = "+12125550100"  # a New York number (America/New_York)
LONDON = "+442079460018"
QUIET = parse_quiet_hours("20:00-08:00")


@pytest.fixture(scope="module")
def ladder(repo_root: Path) -> object:
    rule = load_ruleset(repo_root / "rules").get("invoice-overdue")
    assert rule is not None
    return rule


def test_the_zone_comes_from_the_number_unless_the_rule_overrides_it() -> None:
    assert [z.key for z in recipient_zones(NY, Window(quiet_hours=QUIET))] == ["America/New_York"]
    assert [z.key for z in recipient_zones(LONDON, Window(quiet_hours=QUIET))] == ["Europe/London"]
    override = Window(quiet_hours=QUIET, timezone="Asia/Tokyo")
    assert [z.key for z in recipient_zones(NY, override)] == ["Asia/Tokyo"]
    # No number: the customer's country, then the rule's zone.
    # +44 also covers the Crown Dependencies, which keep London's clock.
    assert "Europe/London" in [z.key for z in recipient_zones(None, Window(), country="GB")]
    assert [z.key for z in recipient_zones(None, Window(), fallback="Europe/Paris")] == ["Europe/Paris"]
    assert country_of(NY) == "US" and country_of(LONDON) == "GB" and country_of("nonsense") is None


def test_a_recipient_in_another_zone_is_held_until_their_morning(ladder: object) -> None:
    # 02:00 UTC on Tuesday 24 Nov 2026 is 18:00 in Los Angeles (the rule's zone) but 21:00 in New York.
    now = datetime(2026, 11, 24, 2, 0, tzinfo=UTC)
    hold = hold_for(now, ladder, NY)
    assert hold == Hold(
        datetime(2026, 11, 24, 13, 0, tzinfo=UTC), "quiet hours 20:00-08:00 in America/New_York"
    )  # 08:00 New York time
    assert hold_for(now, ladder, "+15035550142") is None  # Portland: 18:00, inside the window


def test_the_hold_ends_at_local_opening_time_across_a_dst_change() -> None:
    window = Window(quiet_hours=QUIET)
    ny = (ZoneInfo("America/New_York"),)
    # Saturday 31 Oct 2026 23:00 EDT; clocks go back on Sunday 1 Nov at 02:00. 08:00 EST = 13:00 UTC.
    hold = next_send_time(datetime(2026, 11, 1, 3, 0, tzinfo=UTC), window, ny)
    assert hold is not None and hold.until == datetime(2026, 11, 1, 13, 0, tzinfo=UTC)
    # Spring: Saturday 13 Mar 2027 23:00 EST; clocks jump on Sunday 14 Mar. 08:00 EDT = 12:00 UTC.
    hold = next_send_time(datetime(2027, 3, 14, 4, 0, tzinfo=UTC), window, ny)
    assert hold is not None and hold.until == datetime(2027, 3, 14, 12, 0, tzinfo=UTC)


def test_a_public_holiday_moves_the_send_to_the_next_working_morning(ladder: object) -> None:
    # Wednesday 25 Nov 2026 21:00 in New York; Thursday 26 Nov is Thanksgiving (US).
    hold = hold_for(datetime(2026, 11, 26, 2, 0, tzinfo=UTC), ladder, NY)
    assert hold is not None
    assert hold.until == datetime(2026, 11, 27, 13, 0, tzinfo=UTC)  # Friday 08:00 New York
    assert "Thanksgiving" in hold.reason and "quiet hours" in hold.reason
    # The same moment for a London number: 02:00 Thursday, quiet until 08:00 (no UK holiday).
    london = hold_for(datetime(2026, 11, 26, 2, 0, tzinfo=UTC), ladder, LONDON)
    assert london is not None and london.until == datetime(2026, 11, 26, 8, 0, tzinfo=UTC)


def test_send_days_and_business_hours() -> None:
    window = Window(days=frozenset({0, 1, 2, 3, 4}), hours=parse_quiet_hours("09:00-17:30"))
    london = (ZoneInfo("Europe/London"),)
    saturday = datetime(2026, 11, 28, 12, 0, tzinfo=UTC)
    hold = next_send_time(saturday, window, london)
    assert hold is not None and hold.until == datetime(2026, 11, 30, 9, 0, tzinfo=UTC)  # Monday 09:00
    assert "sat is not a send day" in hold.reason
    evening = datetime(2026, 11, 25, 18, 0, tzinfo=UTC)  # Wednesday 18:00, after 17:30
    hold = next_send_time(evening, window, london)
    assert hold is not None and hold.until == datetime(2026, 11, 26, 9, 0, tzinfo=UTC)
    assert next_send_time(datetime(2026, 11, 25, 10, 0, tzinfo=UTC), window, london) is None


def test_a_number_spanning_zones_waits_until_the_window_is_open_in_all() -> None:
    zones = (ZoneInfo("America/New_York"), ZoneInfo("America/Los_Angeles"))
    # 15:30 UTC: 10:30 in New York, 07:30 in Los Angeles (still quiet there) -> 16:00 UTC.
    hold = next_send_time(datetime(2026, 11, 25, 15, 30, tzinfo=UTC), Window(quiet_hours=QUIET), zones)
    assert hold is not None and hold.until == datetime(2026, 11, 25, 16, 0, tzinfo=UTC)


def test_a_window_that_never_opens_is_an_error_not_a_loop() -> None:
    window = Window(hours=parse_quiet_hours("09:00-10:00"), quiet_hours=parse_quiet_hours("08:00-11:00"))
    with pytest.raises(SendWindowError, match="never opens"):
        next_send_time(datetime(2026, 11, 25, 12, 0, tzinfo=UTC), window, (ZoneInfo("UTC"),))


def test_a_job_whose_rule_is_gone_uses_the_window_stored_on_its_row() -> None:
    now = datetime(2026, 11, 25, 23, 0, tzinfo=UTC)
    hold = hold_for(now, None, LONDON, stored_timezone="Europe/London", stored_quiet_hours="21:00-07:00")
    assert hold is not None and hold.until == datetime(2026, 11, 26, 7, 0, tzinfo=UTC)
    assert hold_for(now, None, LONDON) is None


def test_the_dispatcher_drop_in_reads_an_outbox_row(ladder: object) -> None:
    from engine.ruleset import RuleSet
    from server.sending.sendwindow import hold_until_for_row
    from server.store.tables import OutboxMessage

    ruleset = RuleSet([ladder])  # type: ignore[list-item]
    row = OutboxMessage(
        job_id="j1",
        rule_id="invoice-overdue",
        entity="salesInvoices",
        company_id="c",
        recipient=NY,
        channel="sms",
        body="x",
        dedupe_key="k",
        timezone="America/Los_Angeles",
        quiet_hours="20:00-08:00",
        next_attempt_at=datetime(2026, 11, 24, 2, 0, tzinfo=UTC),
        created_at=datetime(2026, 11, 24, 2, 0, tzinfo=UTC),
        updated_at=datetime(2026, 11, 24, 2, 0, tzinfo=UTC),
    )
    now = datetime(2026, 11, 24, 2, 0, tzinfo=UTC)  # 21:00 in New York
    assert hold_until_for_row(row, ruleset, now) == datetime(2026, 11, 24, 13, 0, tzinfo=UTC)
    # The rule is gone: the window stored on the row applies in its stored zone (18:00 in LA: send).
    assert hold_until_for_row(row, RuleSet([]), now) is None
