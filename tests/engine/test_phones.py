"""Recipient numbers: normalised to E.164 or refused with a code and a reason."""

from __future__ import annotations

from typing import Any

import pytest

from engine.errors import PhoneError
from engine.phones import E164, check_region, check_sms_capable, mask, region_timezones, to_e164


@pytest.mark.parametrize(
    ("raw", "region", "expected"),
    [
        ("07700 900123", "GB", E164("+447700900123", "GB", None, "fictional_mobile")),
        ("00 44 7700 900123", "GB", E164("+447700900123", "GB", None, "fictional_mobile")),
        ("+44 7700 900123", None, E164("+447700900123", "GB", None, "fictional_mobile")),
        ("07911 123456", "GB", E164("+447911123456", "GG", None, "mobile")),
        ("+44 (0) 7911 123456", None, E164("+447911123456", "GG", None, "mobile")),
        ("020 7946 0018", "GB", E164("+442079460018", "GB", None, "fixed_line")),
        ("+44 20 7946 0018", "US", E164("+442079460018", "GB", None, "fixed_line")),
        ("+1 (415) 555-2671", None, E164("+14155552671", "US", None, "fixed_line_or_mobile")),
        ("503-555-0142", "US", E164("+15035550142", "US", None, "fixed_line_or_mobile")),
        ("(503) 555.0142", "US", E164("+15035550142", "US", None, "fixed_line_or_mobile")),
        ("011 44 7911 123456", "US", E164("+447911123456", "GG", None, "mobile")),
        ("  +33 6 12 34 56 78  ", "GB", E164("+33612345678", "FR", None, "mobile")),
        ("+49 1512 3456789", None, E164("+4915123456789", "DE", None, "mobile")),
        ("+1 800 356 9377", None, E164("+18003569377", "US", None, "toll_free")),
    ],
)
def test_normalises(raw: str, region: str | None, expected: E164) -> None:
    assert to_e164(raw, region) == expected


@pytest.mark.parametrize(
    ("raw", "region", "code", "reason"),
    [
        (None, "GB", "ML401", "no phone number (the field is empty)"),
        ("", "GB", "ML401", "no phone number (the field is empty)"),
        ("   ", "GB", "ML401", "no phone number (the field is empty)"),
        ("abc", "GB", "ML401", "'abc' is not a phone number"),
        ("n/a", "GB", "ML401", "'n/a' is not a phone number"),
        ("+1 800 FLOWERS", None, "ML401", "'+1 800 FLOWERS' contains letters; store the number as digits"),
        ("07911 I23456", "GB", "ML401", "'07911 I23456' contains letters; store the number as digits"),
        ("07911 123456", None, "ML401", "'07911 123456' has no +country code and no default region is set"),
        ("+999 123456", None, "ML401", "'+999 123456' does not start with a known country code"),
        ("+44 123", "GB", "ML402", "'+44 123' is too short to be a phone number for GB"),
        ("+4479111234567890", None, "ML402", "'+4479111234567890' is too long to be a phone number for GB"),
        ("+44 7911 12345", None, "ML402", "'+44 7911 12345' is not a valid phone number for GB"),
        ("01234", "GB", "ML402", "'01234' is not a valid phone number for GB"),
        ("555-0142", "US", "ML402", "'555-0142' is not a valid phone number for US"),
        (
            "61212",
            "US",
            "ML402",
            "'61212' is a short code in US; short codes are not supported as recipients",
        ),
        ("999", "GB", "ML402", "'999' is an emergency number in GB"),
        ("112", "DE", "ML402", "'112' is an emergency number in DE"),
        (
            "+44 20 7946 0018 x123",
            None,
            "ML403",
            "'+44 20 7946 0018 x123' has extension 123: a switchboard extension cannot receive SMS",
        ),
        (
            "020 7946 0018 ext. 12",
            "GB",
            "ML403",
            "'020 7946 0018 ext. 12' has extension 12: a switchboard extension cannot receive SMS",
        ),
        (
            "(415) 555-2671 extension 7",
            "US",
            "ML403",
            "'(415) 555-2671 extension 7' has extension 7: a switchboard extension cannot receive SMS",
        ),
        (
            "+447911123456#12",
            None,
            "ML403",
            "'+447911123456#12' has extension 12: a switchboard extension cannot receive SMS",
        ),
        ("07911 123456", "gb", "ML405", "region 'gb' must be upper case: 'GB'"),
        (
            "07911 123456",
            "XX",
            "ML405",
            "unknown region 'XX': expected an ISO 3166-1 alpha-2 code such as 'GB' or 'US'",
        ),
        (
            "07911 123456",
            "GBR",
            "ML405",
            "unknown region 'GBR': expected an ISO 3166-1 alpha-2 code such as 'GB' or 'US'",
        ),
        (
            "+447911123456",
            False,
            "ML405",
            'region must be a two-letter code, got False (quote it in YAML: region: "NO")',
        ),
    ],
)
def test_refuses(raw: Any, region: Any, code: str, reason: str) -> None:
    with pytest.raises(PhoneError) as info:
        to_e164(raw, region)
    assert (info.value.code, info.value.reason) == (code, reason)
    assert info.value.raw == ("" if raw is None else str(raw))


def test_numbers_must_be_text() -> None:
    with pytest.raises(PhoneError) as info:
        to_e164(447911123456, "GB")  # type: ignore[arg-type]
    assert info.value.code == "ML401"
    assert info.value.reason == "expected the number as text, got int (a leading 0 or + may be lost)"


def test_extension_kept_when_allowed() -> None:
    assert to_e164("+44 20 7946 0018 x123", None, allow_extension=True) == E164(
        "+442079460018", "GB", "123", "fixed_line"
    )


def test_check_region() -> None:
    check_region("GB")
    check_region(None)
    with pytest.raises(PhoneError) as info:
        check_region("uk")
    assert info.value.code == "ML405"


def test_sms_capability() -> None:
    check_sms_capable(to_e164("07911 123456", "GB"))
    check_sms_capable(to_e164("07700 900123", "GB"))
    with pytest.raises(PhoneError) as info:
        check_sms_capable(to_e164("+1 800 356 9377", None))
    assert (info.value.code, info.value.reason) == (
        "ML404",
        "+1 80** ***377 is a toll free number and cannot receive SMS",
    )


@pytest.mark.parametrize(
    ("e164", "masked"),
    [
        ("+447700900123", "+44 77** ***123"),
        ("+14155552671", "+1 41** ***671"),
        ("+33612345678", "+33 61** **678"),
        ("+4915123456789", "+49 15** ****789"),
        ("+390612345678", "+39 06** ***678"),  # Italian leading zero kept
        ("not a number 12345678", "12** *678"),
        ("+44 12", "+44 12"),
    ],
)
def test_mask(e164: str, masked: str) -> None:
    assert mask(e164) == masked


def test_region_timezones() -> None:
    assert region_timezones("+14155552671") == ("America/Los_Angeles",)
    assert region_timezones("+33612345678") == ("Europe/Paris",)
    assert "Europe/London" in region_timezones("+447700900123")  # fictional range: country level
    assert region_timezones("garbage") == ()
