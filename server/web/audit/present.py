"""How stored values look on the audit pages: status badges, local times, masked numbers.

Nothing here touches the database or the request: plain functions the Jinja environment uses as
filters, so they are easy to test on their own.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from zoneinfo import ZoneInfo

from jinja2 import Environment, FileSystemLoader, StrictUndefined, select_autoescape

from engine.phones import mask
from server.store.states import MessageStatus
from server.twilio.meanings import ErrorMeaning, meaning_of
from server.web.audit import TEMPLATES_DIR

S = MessageStatus


@dataclass(frozen=True)
class StatusLook:
    label: str
    tone: str  # css modifier: ok, info, wait, warn, bad, muted
    explanation: str


STATUS_LOOKS: dict[str, StatusLook] = {
    S.PLANNED: StatusLook("Planned", "wait", "Waiting to be sent."),
    S.HELD: StatusLook("Held", "wait", "Held until the rule's quiet hours end."),
    S.SUBMITTING: StatusLook("Submitting", "info", "Being handed to Twilio."),
    S.UNKNOWN: StatusLook(
        "Checking", "warn", "Twilio's answer was lost; being reconciled before any resend."
    ),
    S.NEEDS_REVIEW: StatusLook(
        "Needs review",
        "bad",
        "Twilio's answer was lost and its list could not prove it sent or not sent: a person checks "
        "Twilio, then runs `ml-connector messages resolve`.",
    ),
    S.QUEUED: StatusLook("Queued", "info", "Accepted by Twilio."),
    S.SENDING: StatusLook("Sending", "info", "Twilio is handing it to the carrier."),
    S.SENT: StatusLook("Sent", "info", "The carrier accepted it; no delivery receipt yet."),
    S.DELIVERED: StatusLook("Delivered", "ok", "The handset received it."),
    S.UNDELIVERED: StatusLook("Undelivered", "bad", "The carrier could not deliver it."),
    S.FAILED: StatusLook("Failed", "bad", "It could not be sent."),
    S.SKIPPED: StatusLook("Skipped", "muted", "Not sent (see the reason)."),
    S.OPTED_OUT: StatusLook("Opted out", "muted", "Not sent: the recipient replied STOP."),
}

PROBLEM_STATUSES: frozenset[str] = frozenset({S.FAILED, S.UNDELIVERED, S.NEEDS_REVIEW})

# A run of 7+ digits with the separators people type: phone numbers inside free text
# (Twilio's error messages name the number; a skip reason quotes what BC held).
_NUMBER_IN_TEXT = re.compile(r"\+?\d[\d \-()]{5,}\d")
_ISO_DATE = re.compile(r"\d{4}-\d{2}-\d{2}")


def status_look(status: str) -> StatusLook:
    return STATUS_LOOKS.get(status, StatusLook(status.replace("_", " ").capitalize(), "muted", ""))


def mask_phone(value: str | None) -> str:
    """'+1 20** ***118' for a stored E.164 number; an em dash when there is none."""
    if not value:
        return "—"
    return mask(value)


def mask_numbers_in(text: str | None) -> str:
    """Free text with every phone-number-like run masked (amounts keep their decimal point)."""
    if not text:
        return ""

    def replace(match: re.Match[str]) -> str:
        raw = match.group(0)
        digits = sum(ch.isdigit() for ch in raw)
        if digits < 7 or _ISO_DATE.fullmatch(raw):
            return raw
        return mask(raw)

    return _NUMBER_IN_TEXT.sub(replace, text)


def local_time(moment: datetime | None, zone: ZoneInfo) -> str:
    if moment is None:
        return "—"
    return moment.astimezone(zone).strftime("%d %b %Y %H:%M:%S %Z")


def short_time(moment: datetime | None, zone: ZoneInfo) -> str:
    if moment is None:
        return "—"
    return moment.astimezone(zone).strftime("%d %b %H:%M")


def error_meaning(code: str | int | None) -> ErrorMeaning | None:
    return meaning_of(code)


def truncate(text: str, limit: int = 90) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1].rstrip() + "…"


def build_environment(templates_dir: Path = TEMPLATES_DIR) -> Environment:
    """Autoescaped HTML templates; a missing variable is an error, never a silently blank cell."""
    env = Environment(
        loader=FileSystemLoader(templates_dir),
        autoescape=select_autoescape(["html"]),
        undefined=StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters["mask_phone"] = mask_phone
    env.filters["mask_numbers"] = mask_numbers_in
    env.filters["truncate_text"] = truncate
    env.globals["status_look"] = status_look
    env.globals["error_meaning"] = error_meaning
    env.globals["PROBLEM_STATUSES"] = PROBLEM_STATUSES
    return env
