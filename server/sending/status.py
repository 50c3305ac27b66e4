"""What Twilio's webhooks mean: status callbacks applied to the outbox, and STOP/START keywords
kept in the opt-out registry. The HTTP side (signature check, form parsing, answers) is
server/web/twilio_webhooks.py, which calls `apply_report` and `apply_inbound` here.

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
- A database failure answers 503 so Twilio retries (its default is one retry).
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from urllib.parse import parse_qs

from server.runtime.crashpoints import crash_point
from server.services import Services
from server.settings import Settings
from server.store import optouts, outbox
from server.store.db import session_scope
from server.store.states import EventSource

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


def apply_inbound(services: Services, params: dict[str, str]) -> OptAction | None:
    action = keyword_action(params.get("Body"), params.get("OptOutType"))
    phone = params.get("From", "").strip()
    if action not in (OptAction.OPT_OUT, OptAction.OPT_IN) or not phone:
        return action
    now = services.clock.now()
    with session_scope(services.db) as session:
        for sender in inbound_senders(params):
            if action is OptAction.OPT_OUT:
                optouts.set_opt_out(session, phone, source="inbound-stop", now=now, sender=sender)
            else:
                optouts.clear_opt_out(session, phone, now=now, sender=sender)
    return action
