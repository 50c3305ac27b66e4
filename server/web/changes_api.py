"""HTTP API for OTP-gated changes (bearer-protected): propose, confirm, list, show.

Handlers only translate: the work is in server/changes/gate.py. Who proposes and who confirms is
the identity the bearer token resolves to (server/web/auth.py), never a name in the body. A
proposal over a limit is 429 with Retry-After; a step this identity may not take is 403. A
confirmation answers with the change and what happened to it; the HTTP status says the same for
clients that look only at it: 200 written, 400 wrong code (still pending), 403 not the chosen
approver, 409 conflict or not confirmable, 410 code or change expired, 429 too many wrong codes,
502 BC refused the write, 503 BC/Twilio unavailable.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from litestar import Controller, Request, Response, get, post
from litestar.di import NamedDependency
from litestar.exceptions import (
    HTTPException,
    NotFoundException,
    PermissionDeniedException,
    ServiceUnavailableException,
    ValidationException,
)
from litestar.params import JSONBody, QueryParameter
from pydantic import BaseModel, ConfigDict, Field

from server.changes.fields import (
    ChangeConfigError,
    ChangeError,
    ChangeForbiddenError,
    ChangeInputError,
    ChangeLimitError,
    ChangeNotFoundError,
    ChangeRequest,
    ChangeStateError,
    UpstreamError,
)
from server.changes.gate import ChangeGate, expire_due
from server.services import Services
from server.store.changes import get_change, list_changes
from server.store.db import read_scope
from server.store.tables import CHANGE_STATUSES
from server.web.auth import identity_of, make_bearer_guard_for_app
from server.web.params import Cursor, RowId

OUTCOME_STATUS = {
    "written": 200,
    "wrong_code": 400,
    "conflict": 409,
    "code_expired": 410,
    "expired": 410,
    "rejected": 429,
    "failed": 502,
}


class ChangeOut(BaseModel):
    id: int
    status: str
    entity: str
    company_id: str
    record_id: str
    changes: dict[str, str]
    approver: str
    approver_identity: str | None
    approver_role: str | None
    channel: str
    attempts: int
    max_attempts: int
    requested_by: str
    reason: str | None
    created_at: datetime
    expires_at: datetime
    updated_at: datetime
    written_at: datetime | None


class ConfirmIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    code: str = Field(min_length=1, max_length=16, description="The code the approver received")


class ConfirmOut(BaseModel):
    outcome: str
    message: str
    change: ChangeOut


class ChangePageOut(BaseModel):
    items: list[ChangeOut]
    next_cursor: int | None


def _http_error(exc: ChangeError) -> HTTPException:
    if isinstance(exc, ChangeLimitError):
        # Retry-After in seconds (https://www.rfc-editor.org/rfc/rfc9110#field.retry-after).
        return HTTPException(status_code=429, detail=str(exc), headers={"Retry-After": str(exc.retry_after)})
    if isinstance(exc, ChangeForbiddenError):
        return PermissionDeniedException(detail=str(exc))
    if isinstance(exc, ChangeInputError):
        return ValidationException(detail=str(exc))
    if isinstance(exc, ChangeNotFoundError):
        return NotFoundException(detail=str(exc))
    if isinstance(exc, ChangeStateError):
        return HTTPException(status_code=409, detail=str(exc))
    if isinstance(exc, UpstreamError | ChangeConfigError):
        return ServiceUnavailableException(detail=str(exc))
    return HTTPException(status_code=500, detail=str(exc))


class ChangesController(Controller):
    path = "/api/changes"
    guards = [make_bearer_guard_for_app()]  # noqa: RUF012 - Litestar reads a class attribute

    @post("/", status_code=201)
    async def propose(
        self,
        request: Request[Any, Any, Any],
        services: NamedDependency[Services],
        data: JSONBody[ChangeRequest],
    ) -> ChangeOut:
        gate = ChangeGate.from_services(services)
        try:
            change = await gate.propose(data, identity_of(request))
            return ChangeOut.model_validate(gate.summary(change))
        except ChangeError as exc:
            raise _http_error(exc) from exc

    @post("/{change_id:int}/confirm")
    async def confirm(
        self,
        request: Request[Any, Any, Any],
        services: NamedDependency[Services],
        change_id: RowId,
        data: JSONBody[ConfirmIn],
    ) -> Response[ConfirmOut]:
        gate = ChangeGate.from_services(services)
        try:
            result = await gate.confirm(change_id, data.code, identity=identity_of(request))
            summary = gate.summary(result.change)
        except ChangeError as exc:
            raise _http_error(exc) from exc
        body = ConfirmOut(
            outcome=result.outcome, message=result.message, change=ChangeOut.model_validate(summary)
        )
        return Response(body, status_code=OUTCOME_STATUS.get(result.outcome, 200))

    @get("/", sync_to_thread=True)
    def list_handler(
        self,
        services: NamedDependency[Services],
        status: Annotated[list[str] | None, QueryParameter(description="One or more statuses")] = None,
        limit: Annotated[int, QueryParameter(ge=1, le=500)] = 50,
        cursor: Cursor = None,
    ) -> ChangePageOut:
        unknown = sorted(set(status or ()) - set(CHANGE_STATUSES))
        if unknown:
            raise ValidationException(
                detail=f"status: unknown value(s) {', '.join(unknown)}; expected one of {', '.join(CHANGE_STATUSES)}"
            )
        expire_due(services.db, services.clock.now())
        with read_scope(services.db) as session:
            rows = list_changes(session, statuses=status, limit=limit + 1, before_id=cursor)
            gate = ChangeGate.from_services(services)
            try:
                items: list[Any] = [gate.summary(r) for r in rows[:limit]]
            except ChangeError as exc:
                raise _http_error(exc) from exc
            next_cursor = rows[limit - 1].id if len(rows) > limit else None
        return ChangePageOut.model_validate({"items": items, "next_cursor": next_cursor})

    @get("/{change_id:int}", sync_to_thread=True)
    def get_handler(self, services: NamedDependency[Services], change_id: RowId) -> ChangeOut:
        expire_due(services.db, services.clock.now())
        with read_scope(services.db) as session:
            change = get_change(session, change_id)
            if change is None:
                raise NotFoundException(detail=f"no change with id {change_id}")
            gate = ChangeGate.from_services(services)
            try:
                return ChangeOut.model_validate(gate.summary(change))
            except ChangeError as exc:
                raise _http_error(exc) from exc


ROUTES = [ChangesController]
