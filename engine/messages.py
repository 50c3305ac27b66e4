"""Planned messages: what evaluation produces and the service stores in its outbox as-is.

A `PlannedMessage`'s `job_id` is stable (same rule, record and dedupe-key values -> same id), so
replays and re-sweeps are harmless. A recipient that cannot be normalised becomes a recorded skip
(`to=None`, `skip_code`), never a send to a guess.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

JOB_ID_PREFIX = "mlc-"
JOB_ID_HEX = 40  # "mlc-" + 40 hex = 44 characters, well under the 64 the outbox allows


@dataclass(frozen=True)
class PlannedMessage:
    job_id: str
    rule_id: str
    entity: str
    record_id: str | None  # None for a grouped message (its members name the records)
    record_number: str | None
    channel: str
    to: str | None  # E.164; None when skipped
    body: str
    segments: int
    dedupe_key: str  # human-readable form of what job_id hashes
    reason: str  # why the rule fired
    skip_code: str | None = None  # e.g. ML401 (phone unparseable), ML203 (template failed)
    skip_reason: str | None = None
    timezone: str = "UTC"  # the rule's time zone, for quiet hours
    quiet_hours: str | None = None  # "HH:MM-HH:MM" local, or None
    stage: int | None = None  # the ladder / day stage reached (days), for reminders
    grace_days: int = 0  # the stage's grace period: stay silent if a payment was seen this recently
    group_job_id: str | None = None  # set on an invoice's row that was sent inside a grouped message
    # The (expanded) record the message is about: grouping lists its documents. Not part of equality.
    record: Mapping[str, Any] | None = field(default=None, compare=False, repr=False)

    @property
    def skipped(self) -> bool:
        return self.skip_code is not None


@dataclass(frozen=True)
class RuleOutcome:
    """What one rule did with one record: fired (with its messages) or not (with the reason)."""

    rule_id: str
    fired: bool
    reason: str
    messages: tuple[PlannedMessage, ...] = ()
    error: bool = False  # a condition failed to evaluate (bad data), rather than simply not holding


# What json.dumps(parts, sort_keys=True, separators=(",", ":"), default=str, ensure_ascii=False) uses,
# built once: the encoder keeps no state between calls.
_CANONICAL = json.JSONEncoder(sort_keys=True, separators=(",", ":"), default=str, ensure_ascii=False)
# How that encoder writes a str (ensure_ascii=False): the C function json itself calls.
encode_text: Callable[[str], str] = json.encoder.encode_basestring


def make_job_id(parts: list[Any]) -> str:
    """`mlc-` + 40 hex of sha256 over the canonical JSON of the identifying parts."""
    canonical = _CANONICAL.encode(parts)
    return JOB_ID_PREFIX + hashlib.sha256(canonical.encode("utf-8")).hexdigest()[:JOB_ID_HEX]


def new_message(fields: dict[str, Any]) -> PlannedMessage:
    """PlannedMessage(**fields) with every field given, without the frozen dataclass's __init__.

    That __init__ sets each of its 19 fields through object.__setattr__ (the frozen guard), which
    cost more than the rest of planning a message. PlannedMessage has no __post_init__ and no
    slots, so filling its __dict__ makes the very same object (tests compare the two).
    """
    message = object.__new__(PlannedMessage)
    message.__dict__.update(fields)
    return message
