"""Read API for the audit: messages with their status history and the BC record they came from.

Bearer-protected (settings.api_token). Phone numbers are returned in full here: the API is for
operators and integrations with a token; the HTML audit pages mask them.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from litestar import Controller, get
from litestar.di import NamedDependency
from litestar.exceptions import NotFoundException, ValidationException
from litestar.params import FromPath, FromQuery, QueryParameter
from pydantic import BaseModel

from server.services import Services
from server.store.db import read_scope
from server.store.messages import MessageFilter, get_message, list_messages
from server.store.states import MessageStatus
from server.store.tables import MessageEvent, OutboxMessage
from server.web.auth import make_bearer_guard_for_app
from server.web.params import Cursor

STATUSES = frozenset(s.value for s in MessageStatus)


class SourceRecord(BaseModel):
    company_id: str
    entity: str
    record_id: str | None
    number: str | None
    url: str | None


class MessageOut(BaseModel):
    job_id: str
    rule_id: str
    status: str
    twilio_status: str | None
    channel: str
    recipient: str | None
    body: str
    segments: int
    dedupe_key: str
    reason: str | None
    twilio_sid: str | None
    attempts: int
    error_code: str | None
    error_message: str | None
    hold_until: datetime | None
    is_test: bool
    created_at: datetime
    updated_at: datetime
    source: SourceRecord


class EventOut(BaseModel):
    status: str
    twilio_status: str | None
    source: str
    error_code: str | None
    detail: str | None
    at: datetime


class MessageDetailOut(MessageOut):
    events: list[EventOut]


class MessagePageOut(BaseModel):
    items: list[MessageOut]
    next_cursor: int | None


def _record_url(services: NamedDependency[Services], message: OutboxMessage) -> str | None:
    if not message.record_id or not services.settings.bc.tenant_id:
        return None
    bc = services.bc.config
    return f"{bc.api_url}/companies({message.company_id})/{message.entity}({message.record_id})"


def message_out(services: NamedDependency[Services], message: OutboxMessage) -> dict[str, Any]:
    return {
        "job_id": message.job_id,
        "rule_id": message.rule_id,
        "status": message.status,
        "twilio_status": message.twilio_status,
        "channel": message.channel,
        "recipient": message.recipient,
        "body": message.body,
        "segments": message.segments,
        "dedupe_key": message.dedupe_key,
        "reason": message.reason,
        "twilio_sid": message.twilio_sid,
        "attempts": message.attempts,
        "error_code": message.error_code,
        "error_message": message.error_message,
        "hold_until": message.hold_until,
        "is_test": message.is_test,
        "created_at": message.created_at,
        "updated_at": message.updated_at,
        "source": {
            "company_id": message.company_id,
            "entity": message.entity,
            "record_id": message.record_id,
            "number": message.record_number,
            "url": _record_url(services, message),
        },
    }


def event_out(event: MessageEvent) -> dict[str, Any]:
    return {
        "status": event.status,
        "twilio_status": event.twilio_status,
        "source": event.source,
        "error_code": event.error_code,
        "detail": event.detail,
        "at": event.at,
    }


class MessagesController(Controller):
    path = "/api/messages"
    guards = [make_bearer_guard_for_app()]  # noqa: RUF012 - Litestar reads a class attribute

    @get("/", sync_to_thread=True)
    def list_messages_handler(
        self,
        services: NamedDependency[Services],
        status: Annotated[list[str] | None, QueryParameter(description="One or more statuses")] = None,
        rule: FromQuery[str | None] = None,
        entity: FromQuery[str | None] = None,
        record: Annotated[str | None, QueryParameter(description="BC record id")] = None,
        recipient: Annotated[str | None, QueryParameter(description="E.164 number")] = None,
        created_from: Annotated[datetime | None, QueryParameter(name="from")] = None,
        created_to: Annotated[datetime | None, QueryParameter(name="to")] = None,
        limit: Annotated[int, QueryParameter(ge=1, le=500)] = 50,
        cursor: Cursor = None,
    ) -> MessagePageOut:
        unknown = sorted(set(status or ()) - STATUSES)
        if unknown:
            raise ValidationException(
                detail=f"status: unknown value(s) {', '.join(unknown)}; expected one of {', '.join(sorted(STATUSES))}"
            )
        for name, moment in (("from", created_from), ("to", created_to)):
            if moment is not None and moment.tzinfo is None:
                raise ValidationException(detail=f"{name}: give a time zone (e.g. 2026-11-25T09:00:00Z)")
        filters = MessageFilter(
            statuses=status or None,
            rule_id=rule,
            entity=entity,
            record_id=record,
            recipient=recipient,
            created_from=created_from,
            created_to=created_to,
        )
        with read_scope(services.db) as session:
            page = list_messages(session, filters, limit=limit, after=cursor)
            items = [message_out(services, m) for m in page.items]
        return MessagePageOut.model_validate({"items": items, "next_cursor": page.next_cursor})

    @get("/{job_id:str}", sync_to_thread=True)
    def get_message_handler(
        self, services: NamedDependency[Services], job_id: FromPath[str]
    ) -> MessageDetailOut:
        with read_scope(services.db) as session:
            detail = get_message(session, job_id)
            if detail is None:
                raise NotFoundException(detail=f"no message with job id {job_id!r}")
            data = message_out(services, detail.message)
            data["events"] = [event_out(e) for e in detail.events]
        return MessageDetailOut.model_validate(data)


ROUTES = [MessagesController]
