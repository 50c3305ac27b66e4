"""Twilio's webhooks: `POST /webhooks/twilio/status` (message and call status callbacks) and
`POST /webhooks/twilio/inbound` (a handset texts us: STOP/START keep the opt-out registry).

Thin handlers: what a callback or keyword means is server/sending/status.py.

Every request is checked first: X-Twilio-Signature over the URL Twilio called, rebuilt from
MLC_PUBLIC_BASE_URL + the raw path + the raw query (behind a proxy the URL we see is not the one
Twilio signed: https://www.twilio.com/docs/usage/webhooks/webhooks-security), and every form
parameter, known or not (Twilio adds fields without notice). A bad or missing signature gets 403
and changes nothing. The answer is an empty TwiML <Response/> (text/xml), also for a MessageSid
seen before (nothing changes); a database failure answers 503.
"""

from __future__ import annotations

import asyncio
from typing import Any
from urllib.parse import parse_qsl

from litestar import Request, Response, post
from litestar.di import NamedDependency
from litestar.types import ControllerRouterHandler
from sqlalchemy.exc import SQLAlchemyError

from server.runtime.logs import get_logger
from server.sending.status import (
    INBOUND_PATH,
    STATUS_PATH,
    InboundTimeUnknownError,
    apply_report,
    handle_inbound,
    read_status,
)
from server.services import Services
from server.settings import Settings
from server.twilio.signatures import public_url, validate_request
from server.twilio.twiml import empty_messaging_response

log = get_logger("ml_connector.webhooks.twilio")

XML = "text/xml"


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
        outcome = await handle_inbound(services, params)
    except SQLAlchemyError as exc:
        log.error("twilio inbound not stored; Twilio will retry", error=type(exc).__name__)
        return refused(503, "temporarily unable to store the message")
    except InboundTimeUnknownError:
        log.error("twilio inbound START not applied: its time could not be read from Twilio")
        return refused(503, "temporarily unable to order the message")
    if outcome.duplicate:
        # A retry or a replay of a message already handled: the same empty answer, nothing changed.
        log.info("twilio inbound seen before; ignored", sid=params.get("MessageSid"))
    elif outcome.action is not None:
        log.info(
            "twilio inbound keyword",
            action=outcome.action.value,
            applied=outcome.applied,
            sid=params.get("MessageSid"),
        )
    return xml()


ROUTES: list[ControllerRouterHandler] = [twilio_status, twilio_inbound]
