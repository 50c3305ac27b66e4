"""What Twilio's webhooks mean: status callbacks applied to the outbox, and STOP/START keywords
kept in the opt-out registry. The HTTP side (signature check, form parsing, answers) is
server/web/twilio_webhooks.py, which calls `apply_report` and `handle_inbound` here.

- status: applied through the store's apply_status, which only moves a message forward and
  records each (sid, status) once (callbacks may repeat and arrive out of order:
  https://www.twilio.com/docs/messaging/guides/track-outbound-message-status). A callback for a
  message we do not know (no such SID, no such job) changes nothing and still answers 200: the
  signature proved Twilio sent it, a retry cannot make it known, and an error answer would only make
  Twilio retry and raise debugger alerts. It is logged.
- inbound: single-word opt-out keywords (STOP, UNSUBSCRIBE, END, QUIT, STOPALL, REVOKE, OPTOUT,
  CANCEL; case-insensitive, trimmed; https://help.twilio.com/articles/223134027) or
  `OptOutType=STOP` (Advanced Opt-Out, custom keywords) record an opt-out; START/YES/UNSTOP (or OptOutType=START) opt back in; HELP/INFO change
  nothing (Twilio answers those itself). The answer is an empty TwiML <Response/> (text/xml).
  Each MessageSid counts once, and a keyword changes the registry only when its message is not
  older than the one that set the current state (handle_inbound says what "older" means).
- A database failure answers 503 so Twilio retries (its default is one retry).
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from urllib.parse import parse_qs

from server.runtime.crashpoints import crash_point
from server.runtime.logs import get_logger
from server.services import Services
from server.settings import Settings
from server.store import inbound, optouts, outbox
from server.store.db import read_scope, session_scope
from server.store.states import EventSource
from server.twilio.errors import DeliveryError

log = get_logger("ml_connector.webhooks.twilio")

STATUS_PATH = "/webhooks/twilio/status"
INBOUND_PATH = "/webhooks/twilio/inbound"

OPT_OUT_WORDS = frozenset({"STOP", "UNSUBSCRIBE", "END", "QUIT", "STOPALL", "REVOKE", "OPTOUT", "CANCEL"})
OPT_IN_WORDS = frozenset({"START", "YES", "UNSTOP"})
HELP_WORDS = frozenset({"HELP", "INFO"})


class OptAction(StrEnum):
    OPT_OUT = "opt-out"
    OPT_IN = "opt-in"
    HELP = "help"


def keyword_action(body: str | None, opt_out_type: str | None = None) -> OptAction | None:
    """What an inbound message means for the opt-out registry.

    Twilio's OptOutType (Advanced Opt-Out) wins: it also covers custom and other-language keywords.
    Otherwise only a message that is exactly one keyword counts ("STOP PLEASE" does not, as in
    Twilio's own filtering: https://help.twilio.com/articles/223134027).
    """
    kind = (opt_out_type or "").strip().upper()
    if kind == "STOP":
        return OptAction.OPT_OUT
    if kind == "START":
        return OptAction.OPT_IN
    if kind == "HELP":
        return OptAction.HELP
    word = (body or "").strip().upper()
    if word in OPT_OUT_WORDS:
        return OptAction.OPT_OUT
    if word in OPT_IN_WORDS:
        return OptAction.OPT_IN
    if word in HELP_WORDS:
        return OptAction.HELP
    return None


def sender_key(settings: Settings) -> str:
    """Our sender as the opt-out registry names it: the From number, else the Messaging Service."""
    return settings.twilio.from_number or settings.twilio.messaging_service_sid


def inbound_senders(params: dict[str, str]) -> list[str]:
    """Registry senders a keyword applies to: the number texted and, when it belongs to a Messaging
    Service, the whole pool (the service SID) — Twilio blocks a pool as one
    (https://help.twilio.com/articles/223134027)."""
    senders = [s for s in (params.get("To", ""), params.get("MessagingServiceSid", "")) if s]
    return list(dict.fromkeys(senders))


@dataclass(frozen=True)
class StatusReport:
    sid: str | None
    status: str
    job_id: str | None
    error_code: str | None


def read_status(params: dict[str, str], query: str) -> StatusReport | None:
    """A message (MessageSid/MessageStatus) or call (CallSid/CallStatus) status report, or None."""
    sid = params.get("MessageSid") or params.get("SmsSid") or params.get("CallSid") or None
    status = params.get("MessageStatus") or params.get("SmsStatus") or params.get("CallStatus") or ""
    job = parse_qs(query).get("job", [None])[0] or None
    if not status.strip() or (sid is None and job is None):
        return None
    return StatusReport(sid=sid, status=status, job_id=job, error_code=params.get("ErrorCode") or None)


def apply_report(services: Services, report: StatusReport, params: dict[str, str]) -> bool | None:
    """Apply one status report. True moved, False recorded/no-op, None: no such message."""
    now = services.clock.now()
    with session_scope(services.db) as session:
        moved = outbox.apply_status_report(
            session,
            twilio_status=report.status,
            now=now,
            sid=report.sid,
            job_id=report.job_id,
            error_code=report.error_code,
            params=params,
            source=EventSource.CALLBACK,
        )
        if moved is not None:
            crash_point("callback.applying")
        return moved


# How long an inbound keyword waits for its message's date_created from Twilio: well inside the
# 15 s Twilio gives the webhook to answer (https://www.twilio.com/docs/usage/webhooks/webhooks-connection-overrides).
MESSAGE_TIME_TIMEOUT_SECONDS = 5.0


class InboundTimeUnknownError(Exception):
    """An inbound START whose time could not be read from Twilio: not applied, not recorded."""


@dataclass(frozen=True)
class InboundOutcome:
    action: OptAction | None
    duplicate: bool = False  # this MessageSid was seen before: nothing changed
    applied: bool = False  # the opt-out registry changed


async def message_created_at(services: Services, sid: str, phone: str) -> datetime | None:
    """The message's date_created as Twilio's Messages API holds it, or None when it cannot be read."""
    try:
        async with asyncio.timeout(MESSAGE_TIME_TIMEOUT_SECONDS):
            record = await services.twilio.fetch_message(sid)
    except (DeliveryError, TimeoutError) as exc:
        log.warning("inbound message time not read from Twilio", sid=sid, error=type(exc).__name__)
        return None
    if record.from_ != phone or record.date_created is None:
        log.warning("inbound message time not usable: Twilio holds another sender or no date", sid=sid)
        return None
    return record.date_created


async def handle_inbound(services: Services, params: dict[str, str]) -> InboundOutcome:
    """Apply an inbound text once per MessageSid, ordered by when the message was created.

    Twilio's inbound webhook carries no time of its own (its parameters:
    https://www.twilio.com/docs/messaging/guides/webhook-request), and its signature covers no time
    either, so a retry or a replayed request looks exactly like the first delivery. Two rules:
    - the MessageSid is recorded once (store/inbound.py): a second delivery changes nothing;
    - "newer" means a later date_created, read from Twilio's Messages API for the SID (the Message
      resource: https://www.twilio.com/docs/messaging/api/message-resource); a delivery that
      arrives late (a first attempt that failed and was retried after a later STOP) then cannot undo
      that STOP. date_created has one-second precision: a tie goes to the message that arrived later.
      When Twilio cannot be asked, a STOP applies at the time it arrived (stopping is never held
      back); a START is not applied and answered 503, unrecorded: a retry can still apply it
      (Twilio retries a 5xx when the URL asks for it, `#rp=5xx`: the connection-overrides page
      above), or the customer texts START again.
    A keyword without a MessageSid (Twilio always sends one) can only opt out, at its arrival time.
    """
    action = keyword_action(params.get("Body"), params.get("OptOutType"))
    phone = params.get("From", "").strip()
    sid = (params.get("MessageSid") or params.get("SmsSid") or "").strip() or None
    received = services.clock.now()
    keyword = action in (OptAction.OPT_OUT, OptAction.OPT_IN) and bool(phone)
    if sid is None:
        if keyword and action is OptAction.OPT_OUT:
            applied = await asyncio.to_thread(_store_inbound, services, params, None, action, received, None)
            return InboundOutcome(action, applied=bool(applied))
        if keyword:
            log.warning("inbound START without a MessageSid ignored", phone=phone)
        return InboundOutcome(action)
    if await asyncio.to_thread(_seen, services, sid):
        return InboundOutcome(action, duplicate=True)
    created = await message_created_at(services, sid, phone) if keyword else None
    if keyword and action is OptAction.OPT_IN and created is None:
        raise InboundTimeUnknownError(sid)
    applied = await asyncio.to_thread(_store_inbound, services, params, sid, action, received, created)
    if applied is None:
        return InboundOutcome(action, duplicate=True)
    return InboundOutcome(action, applied=applied)


def _seen(services: Services, sid: str) -> bool:
    with read_scope(services.db) as session:
        return inbound.is_seen(session, sid)


def _store_inbound(
    services: Services,
    params: dict[str, str],
    sid: str | None,
    action: OptAction | None,
    received: datetime,
    created: datetime | None,
) -> bool | None:
    """Record the message and apply its keyword in one transaction. None: already recorded."""
    phone = params.get("From", "").strip()
    at = created or received
    with session_scope(services.db) as session:
        if sid is not None and not inbound.record_inbound(
            session,
            sid=sid,
            phone=phone[:32],
            action=action.value if action else None,
            message_at=at,
            twilio_created_at=created,
            received_at=received,
        ):
            return None  # a concurrent delivery of the same SID won the insert
        if action not in (OptAction.OPT_OUT, OptAction.OPT_IN) or not phone:
            return False
        applied = False
        for sender in inbound_senders(params):
            if action is OptAction.OPT_OUT:
                applied |= optouts.set_opt_out(
                    session,
                    phone,
                    source="inbound-stop",
                    now=received,
                    sender=sender,
                    message_at=at,
                    message_sid=sid,
                )
            elif sid is not None:
                applied |= optouts.set_opt_in(
                    session, phone, sender=sender, now=received, message_at=at, message_sid=sid
                )
        if applied and sid is not None:
            inbound.mark_applied(session, sid)
        return applied
