"""Recipients: a rule's `to:` entries compiled once, and each read per record into an E.164 number.

A recipient that cannot be read or normalised becomes a recorded skip (a code such as ML401 and a
reason), never a send to a guess.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import phonenumbers

from engine.conditions import Getter
from engine.errors import PhoneError
from engine.phones import to_e164


@dataclass(frozen=True)
class RecipientTarget:
    """One recipient entry of a rule: a field path read per record, or a fixed E.164 number."""

    spec: str  # as written in the rule (a path or a number); part of the job id
    path: str | None = None
    getter: Getter | None = None
    number: str | None = None  # E.164, for fixed numbers
    # Reads the recipient's country (recipient.region_from) so a national number is read as theirs.
    region_getter: Getter | None = None


@lru_cache(maxsize=16_384)
def normalise(raw: str, region: str | None) -> str:
    # A sweep meets the same customer number on many invoices; phonenumbers is the costly part.
    # Failures raise PhoneError and are not cached.
    return to_e164(raw, region).number


def recipient(
    region: str | None, target: RecipientTarget, record: Mapping[str, Any]
) -> tuple[str | None, str | None, str | None]:
    """(E.164, skip_code, skip_reason)."""
    if target.number is not None:
        return target.number, None, None
    assert target.getter is not None
    raw = target.getter(record)
    if raw is None or (isinstance(raw, str) and not raw.strip()):
        head = (target.path or "").split(".")[0]
        if target.path and "." in target.path and not isinstance(record.get(head), Mapping):
            return None, "ML401", f"{head} was not expanded on the record, so {target.path} is unknown"
        return None, "ML401", f"{target.path} is empty"
    if target.region_getter is not None:
        # The recipient's own country reads a national number; the rule's region is the fallback.
        country = target.region_getter(record)
        if isinstance(country, str) and country.strip().upper() in phonenumbers.SUPPORTED_REGIONS:
            region = country.strip().upper()
    try:
        return normalise(str(raw), region), None, None
    except PhoneError as exc:
        return None, exc.code, f"{target.path} {raw!r}: {exc.reason}"
