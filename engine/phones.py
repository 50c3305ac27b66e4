"""Recipient numbers to E.164 with phonenumbers, refusing anything we cannot be sure of.

Twilio may "standardize" a number without "+" in unexpected ways, so the connector normalises to
E.164 itself and refuses what does not parse (https://www.twilio.com/docs/glossary/what-e164). A
refusal is a `PhoneError` with a code and a reason a finance user can act on; it is never a guess.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import phonenumbers
from phonenumbers import NumberParseException, PhoneNumberType, shortnumberinfo
from phonenumbers import timezone as phone_timezone
from phonenumbers.tzdata import TIMEZONE_DATA

from engine.errors import PhoneError

_TYPE_NAMES: dict[int, str] = {
    value: name.lower()
    for name, value in vars(PhoneNumberType).items()
    if name.isupper() and isinstance(value, int)
}

# Ofcom reserves 07700 900000-900999 for drama and testing: never allocated, so safe in fixtures and
# the sandbox, yet phonenumbers' metadata calls them invalid. Accepted, and labelled as fictional.
_FICTIONAL_RANGES: dict[int, tuple[tuple[str, int], ...]] = {44: (("7700900", 10),)}

# Types that certainly cannot receive a text; lines and VoIP may (or take voice), so they pass.
_NOT_SMS_CAPABLE = frozenset({"premium_rate", "toll_free", "shared_cost", "pager", "uan", "voicemail"})

_EXTENSION_WORDS = re.compile(r"(?i)\b(?:ext|extn|extension|x)\b\.?|#")
_LETTERS = re.compile(r"[^\W\d_]")


@dataclass(frozen=True)
class E164:
    """A normalised number: `number` is "+447700900123"; `number_type` is phonenumbers' type in lower case."""

    number: str
    region: str | None
    extension: str | None
    number_type: str


def check_region(region: str | None) -> None:
    """Raise ML405 unless `region` is None or an upper-case region phonenumbers knows ("GB")."""
    if region is None:
        return
    if not isinstance(region, str):
        # YAML 1.1 reads an unquoted NO (Norway) as false: say so.
        hint = ' (quote it in YAML: region: "NO")' if region is False else ""
        raise PhoneError("ML405", f"region must be a two-letter code, got {region!r}{hint}", raw=str(region))
    if region in phonenumbers.SUPPORTED_REGIONS:
        return
    if region.upper() in phonenumbers.SUPPORTED_REGIONS:
        raise PhoneError("ML405", f"region {region!r} must be upper case: {region.upper()!r}", raw=region)
    raise PhoneError(
        "ML405",
        f"unknown region {region!r}: expected an ISO 3166-1 alpha-2 code such as 'GB' or 'US'",
        raw=region,
    )


def _fictional(number: phonenumbers.PhoneNumber) -> bool:
    national = str(number.national_number)
    for prefix, length in _FICTIONAL_RANGES.get(number.country_code or 0, ()):
        if len(national) == length and national.startswith(prefix):
            return True
    return False


def to_e164(raw: str | None, default_region: str | None, *, allow_extension: bool = False) -> E164:
    """Normalise a phone number written by a person (in BC) to E.164.

    `default_region` applies to numbers written without "+country" ("07700 900123" with "GB").
    Raises PhoneError: ML401 empty or unparseable, ML402 not a valid number (or a short code),
    ML403 has an extension (unless `allow_extension`, e.g. for a voice call that dials it),
    ML405 bad default region.
    """
    try:
        check_region(default_region)
    except PhoneError as exc:
        raise PhoneError(exc.code, exc.reason, raw="" if raw is None else str(raw)) from None
    if raw is None or (isinstance(raw, str) and not raw.strip()):
        raise PhoneError("ML401", "no phone number (the field is empty)", raw="" if raw is None else raw)
    if not isinstance(raw, str):
        raise PhoneError(
            "ML401",
            f"expected the number as text, got {type(raw).__name__} (a leading 0 or + may be lost)",
            raw=str(raw),
        )
    text = raw.strip()
    try:
        parsed = phonenumbers.parse(text, default_region)
    except NumberParseException as exc:
        raise PhoneError("ML401", _parse_reason(exc, text, default_region), raw=raw) from None
    if parsed.extension:
        if not allow_extension:
            raise PhoneError(
                "ML403",
                f"{text!r} has extension {parsed.extension}: a switchboard extension cannot receive SMS",
                raw=raw,
            )
    elif _LETTERS.search(_EXTENSION_WORDS.sub("", text)):
        # phonenumbers turns 1-800-FLOWERS into digits; a typo like "O2O 7946" must not become a number.
        raise PhoneError("ML401", f"{text!r} contains letters; store the number as digits", raw=raw)
    if _fictional(parsed):
        number_type = "fictional_mobile"
    elif phonenumbers.is_valid_number(parsed):
        number_type = _TYPE_NAMES.get(phonenumbers.number_type(parsed), "unknown")
    else:
        raise PhoneError("ML402", _invalid_reason(parsed, text, default_region), raw=raw)
    region = phonenumbers.region_code_for_number(parsed)
    if region is None and number_type == "fictional_mobile":
        region = phonenumbers.region_code_for_country_code(parsed.country_code or 0)
    return E164(
        number=phonenumbers.format_number(parsed, phonenumbers.PhoneNumberFormat.E164),
        region=region,
        extension=parsed.extension if allow_extension and parsed.extension else None,
        number_type=number_type,
    )


def _parse_reason(exc: NumberParseException, text: str, region: str | None) -> str:
    if exc.error_type == NumberParseException.INVALID_COUNTRY_CODE:
        if region is None and not text.startswith("+"):
            return f"{text!r} has no +country code and no default region is set"
        return f"{text!r} does not start with a known country code"
    if exc.error_type == NumberParseException.NOT_A_NUMBER:
        return f"{text!r} is not a phone number"
    if (
        exc.error_type == NumberParseException.TOO_SHORT_NSN
        or exc.error_type == NumberParseException.TOO_SHORT_AFTER_IDD
    ):
        return f"{text!r} is too short to be a phone number"
    if exc.error_type == NumberParseException.TOO_LONG:
        return f"{text!r} is too long to be a phone number"
    return f"{text!r} cannot be read as a phone number"


def _invalid_reason(parsed: phonenumbers.PhoneNumber, text: str, region: str | None) -> str:
    number_region = region or phonenumbers.region_code_for_country_code(parsed.country_code or 0)
    if number_region and shortnumberinfo.is_emergency_number(text, number_region):
        return f"{text!r} is an emergency number in {number_region}"
    if (
        number_region
        and not text.startswith(("+", "00"))
        and shortnumberinfo.is_possible_short_number_for_region(parsed, number_region)
        and shortnumberinfo.is_valid_short_number_for_region(parsed, number_region)
    ):
        return f"{text!r} is a short code in {number_region}; short codes are not supported as recipients"
    reason = phonenumbers.is_possible_number_with_reason(parsed)
    where = f" for {number_region}" if number_region and number_region != "ZZ" else ""
    if reason == phonenumbers.ValidationResult.TOO_SHORT:
        return f"{text!r} is too short to be a phone number{where}"
    if reason == phonenumbers.ValidationResult.TOO_LONG:
        return f"{text!r} is too long to be a phone number{where}"
    return f"{text!r} is not a valid phone number{where}"


def check_sms_capable(number: E164) -> None:
    """Raise ML404 for number types that cannot receive a text (premium rate, toll free, pager...)."""
    if number.number_type in _NOT_SMS_CAPABLE:
        kind = number.number_type.replace("_", " ")
        raise PhoneError(
            "ML404", f"{mask(number.number)} is a {kind} number and cannot receive SMS", raw=number.number
        )


def region_timezones(e164: str) -> tuple[str, ...]:
    """IANA time zones the number may be in (for quiet hours); () when unknown.

    Falls back to the country's zones when the exact prefix is unknown (e.g. a fictional number).
    """
    try:
        parsed = phonenumbers.parse(e164, None)
    except NumberParseException:
        return ()
    zones = tuple(phone_timezone.time_zones_for_number(parsed))
    if zones and zones != (phone_timezone.UNKNOWN_TIMEZONE,):
        return zones
    country = TIMEZONE_DATA.get(str(parsed.country_code))
    return tuple(country) if country else ()


def mask(e164: str) -> str:
    """A number safe for logs and previews: "+44 77** ***123" (country code, first 2, last 3 digits)."""
    try:
        parsed = phonenumbers.parse(e164, None)
        country = f"+{parsed.country_code} "
        national = str(parsed.national_number)
        if parsed.italian_leading_zero:
            national = "0" * (parsed.number_of_leading_zeros or 1) + national
    except NumberParseException:
        country = ""
        national = "".join(ch for ch in e164 if ch.isdigit())
    if len(national) <= 5:
        return country + "*" * max(0, len(national) - 2) + national[-2:]
    hidden = national[:2] + "*" * (len(national) - 5) + national[-3:]
    return country + hidden[:4] + " " + hidden[4:]
