"""`/api/pauses` (bearer): pause reminders for a customer or an invoice until a date, list, lift.

    POST /api/pauses {"scope": "customer", "subject": "C0042", "until": "2026-12-15", "reason": "promise to pay"}
    GET  /api/pauses[?all=true]
    POST /api/pauses/{id}/lift

A date for `until` means "through that day" in the business time zone (server.store.pauses.parse_until).
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal
from zoneinfo import ZoneInfo

from litestar import Controller, get, post
from litestar.di import NamedDependency
from litestar.exceptions import NotFoundException, ValidationException
from litestar.params import JSONBody, QueryParameter
from pydantic import BaseModel, ConfigDict, Field

from server.services import Services
from server.store.db import read_scope, session_scope
from server.store.pauses import PauseError, add_pause, lift_pause, list_pauses, parse_until
from server.store.tables import ReminderPause
from server.web.auth import make_bearer_guard_for_app
from server.web.params import RowId


class PauseIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    scope: Literal["customer", "invoice"]
    subject: str = Field(min_length=1, max_length=64, description="customer or invoice number, or BC id")
    until: str = Field(description="a date (through that day) or an ISO date-time with offset")
    reason: str = Field(default="", max_length=500)
    company_id: str | None = Field(default=None, max_length=64, description="default: every company")


class PauseOut(BaseModel):
    id: int
    scope: str
    subject: str
    company_id: str | None
    until: datetime
    reason: str
    created_by: str
    created_at: datetime
    lifted_at: datetime | None
    lifted_by: str | None
    active: bool


def pause_out(row: ReminderPause, now: datetime) -> PauseOut:
    assert row.id is not None
    return PauseOut(
        id=row.id,
        scope=row.scope,
        subject=row.subject,
        company_id=row.company_id,
        until=row.until,
        reason=row.reason,
        created_by=row.created_by,
        created_at=row.created_at,
        lifted_at=row.lifted_at,
        lifted_by=row.lifted_by,
        active=row.lifted_at is None and row.until > now,
    )


class PausesController(Controller):
    path = "/api/pauses"
    guards = [make_bearer_guard_for_app()]  # noqa: RUF012 - Litestar reads a class attribute

    @get("/", sync_to_thread=True)
    def list_handler(
        self,
        services: NamedDependency[Services],
        include_ended: Annotated[
            bool, QueryParameter(name="all", description="lifted and ended too")
        ] = False,
    ) -> list[PauseOut]:
        now = services.clock.now()
        with read_scope(services.db) as session:
            return [pause_out(r, now) for r in list_pauses(session, now=now, include_ended=include_ended)]

    @post("/", sync_to_thread=True, status_code=201)
    def add_handler(self, services: NamedDependency[Services], data: JSONBody[PauseIn]) -> PauseOut:
        now = services.clock.now()
        try:
            until = parse_until(data.until, ZoneInfo(services.settings.business_timezone))
            with session_scope(services.db) as session:
                row = add_pause(
                    session,
                    scope=data.scope,
                    subject=data.subject,
                    until=until,
                    reason=data.reason,
                    created_by="api",
                    now=now,
                    company_id=data.company_id,
                )
                return pause_out(row, now)
        except PauseError as exc:
            raise ValidationException(detail=str(exc)) from None

    @post("/{pause_id:int}/lift", sync_to_thread=True, status_code=200)
    def lift_handler(self, services: NamedDependency[Services], pause_id: RowId) -> PauseOut:
        now = services.clock.now()
        with session_scope(services.db) as session:
            row = lift_pause(session, pause_id, by="api", now=now)
            if row is None:
                raise NotFoundException(detail=f"no active pause #{pause_id}")
            return pause_out(row, now)


ROUTES = [PausesController]
