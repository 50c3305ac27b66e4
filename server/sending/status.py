"""Twilio's webhooks: `POST /webhooks/twilio/status` (message and call status callbacks) and
`POST /webhooks/twilio/inbound` (a handset texts us: STOP/START keep the opt-out registry).

Every request is checked first: X-Twilio-Signature over the URL Twilio called, rebuilt from
MLC_PUBLIC_BASE_URL + the raw path + the raw query (twilio-api.md 5.3 step 9: behind a proxy the URL
we see is not the one Twilio signed), and every form parameter, known or not (Twilio adds fields
without notice, 5.0). A bad or missing signature gets 403 and changes nothing.

Answers:
- status: applied through the store's apply_status, which only moves a message forward and
  records each (sid, status) once (5.4: duplicates and reordering are harmless). A callback for a
  message we do not know (no such SID, no such job) changes nothing and still answers 200: the
  signature proved Twilio sent it, a retry cannot make it known, and an error answer would only make
  Twilio retry and raise debugger alerts. It is logged.
- inbound: single-word opt-out keywords (STOP, UNSUBSCRIBE, END, QUIT, STOPALL, REVOKE, OPTOUT,
  CANCEL; case-insensitive, trimmed; section 8) or `OptOutType=STOP` (Advanced Opt-Out, custom
  keywords) record an opt-out; START/YES/UNSTOP (or OptOutType=START) opt back in; HELP/INFO change
  nothing (Twilio answers those itself). The answer is an empty TwiML <Response/> (text/xml).
- A database failure answers 503 so Twilio retries (its default is one retry).
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from enum import StrEnum
from typing import Any
from urllib.parse import parse_qs, parse_qsl

from litestar import Request, Response, post
from litestar.di import NamedDependency
from litestar.types import ControllerRouterHandler
from sqlalchemy.exc import SQLAlchemyError

from server.runtime.crashpoints import crash_point
from server.runtime.logs import get_logger
from server.services import Services
from server.settings import Settings
from server.store import optouts, outbox
from server.store.db import session_scope
from server.store.states import EventSource
from server.twilio.signatures import public_url, validate_request
from server.twilio.twiml import empty_messaging_response

log = get_logger("ml_connector.webhooks.twilio")

STATUS_PATH = "/webhooks/twilio/status"
INBOUND_PATH = "/webhooks/twilio/inbound"
XML = "text/xml"

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
    Otherwise only a message that is exactly one keyword counts ("STOP PLEASE" does not; section 8).
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
    Service, the whole pool (the service SID) — Twilio blocks a pool as one (section 8)."""
    senders = [s for s in (params.get("To", ""), params.get("MessagingServiceSid", "")) if s]
    return list(dict.fromkeys(senders))


def signature_ok(settings: Settings, request: Request[Any, Any, Any], body: bytes) -> bool:
    token = settings.twilio.auth_token.get_secret_value()
    if not token:
        log.error("twilio webhook refused: MLC_TWILIO__AUTH_TOKEN is not set, signatures cannot be checked")
        return False
    # The raw path and query as received: re-encoding them would change what Twilio signed.
    raw_path = request.scope.get("raw_path") or request.scope["path"].encode()
    path = raw_path.decode("latin-1") if isinstance(raw_path, bytes) else str(raw_path)
    path = path.split("?", 1)[0]
    query = request.scope.get("query_string", b"").decode("latin-1")
    url = public_url(settings.public_base_url, path, query)
    return validate_request(
        url=url,
        headers=request.headers,
        body=body,
        content_type=request.headers.get("content-type"),
        auth_token=token,
    )


def form_params(body: bytes) -> dict[str, str]:
    """Form fields (last value wins for a repeated name; Twilio sends each once)."""
    return dict(parse_qsl(body.decode("utf-8", "replace"), keep_blank_values=True))


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


def xml(status: int = 200) -> Response[str]:
    return Response(content=empty_messaging_response(), status_code=status, media_type=XML)


def refused(status: int, reason: str) -> Response[str]:
    return Response(content=reason, status_code=status, media_type="text/plain")


@post(STATUS_PATH, status_code=200, include_in_schema=True)
async def twilio_status(
    request: Request[Any, Any, Any], services: NamedDependency[Services]
) -> Response[str]:
    """Twilio message/call status callback (signed). `?job=` carries our job id."""
    body = await request.body()
    if not signature_ok(services.settings, request, body):
        log.warning("twilio status callback refused: bad signature")
        return refused(403, "invalid X-Twilio-Signature")
    params = form_params(body)
    report = read_status(params, request.scope.get("query_string", b"").decode("latin-1"))
    if report is None:
        return refused(400, "expected MessageSid/MessageStatus or CallSid/CallStatus")
    try:
        moved = await asyncio.to_thread(apply_report, services, report, params)
    except SQLAlchemyError as exc:
        log.error("twilio status not stored; Twilio will retry", error=type(exc).__name__)
        return refused(503, "temporarily unable to store the status")
    if moved is None:
        log.warning("twilio status for an unknown message ignored", sid=report.sid, job=report.job_id)
    return xml()


@post(INBOUND_PATH, status_code=200, include_in_schema=True)
async def twilio_inbound(
    request: Request[Any, Any, Any], services: NamedDependency[Services]
) -> Response[str]:
    """Twilio inbound-message webhook (signed): opt-out keywords update the registry."""
    body = await request.body()
    if not signature_ok(services.settings, request, body):
        log.warning("twilio inbound webhook refused: bad signature")
        return refused(403, "invalid X-Twilio-Signature")
    params = form_params(body)
    try:
        action = await asyncio.to_thread(apply_inbound, services, params)
    except SQLAlchemyError as exc:
        log.error("twilio inbound not stored; Twilio will retry", error=type(exc).__name__)
        return refused(503, "temporarily unable to store the message")
    if action is not None:
        log.info("twilio inbound keyword", action=action.value, sid=params.get("MessageSid"))
    return xml()


ROUTES: list[ControllerRouterHandler] = [twilio_status, twilio_inbound]
