"""Request context: every request gets an id, every log line written while serving it carries the id,
and one JSON access-log line is written when it ends.

The id comes from the caller's `X-Request-ID` when it is a short token (a proxy's id is kept, so the
two logs join up), else a fresh one; it is echoed in the response's `X-Request-ID`. The access line
names the path without its query string: filters carry phone numbers and record ids.
"""

from __future__ import annotations

import re
import time
import uuid
from typing import Any

import structlog
from litestar.datastructures import MutableScopeHeaders
from litestar.enums import ScopeType
from litestar.types import ASGIApp, Message, Receive, Scope, Send

from server.runtime.logs import get_logger

REQUEST_ID_HEADER = "x-request-id"
_VALID_ID = re.compile(r"^[A-Za-z0-9._:-]{8,64}$")
# Probes and scrapes every few seconds would drown the useful lines at INFO.
QUIET_PATHS = frozenset({"/health", "/ready", "/metrics"})

log = get_logger("ml_connector.access")


def request_id_from(scope: Scope) -> str:
    for name, value in scope.get("headers", ()):
        if name == b"x-request-id":
            candidate = value.decode("latin-1").strip()
            if _VALID_ID.match(candidate):
                return candidate
            break
    return uuid.uuid4().hex


def request_context_middleware(app: ASGIApp) -> ASGIApp:
    async def middleware(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != ScopeType.HTTP:
            await app(scope, receive, send)
            return
        request_id = request_id_from(scope)
        status: dict[str, int] = {}

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                status["code"] = message["status"]
                MutableScopeHeaders.from_message(message)[REQUEST_ID_HEADER] = request_id
            await send(message)

        started = time.perf_counter()
        with structlog.contextvars.bound_contextvars(request_id=request_id):
            try:
                await app(scope, receive, send_with_id)
            finally:
                fields: dict[str, Any] = {
                    "method": scope.get("method"),
                    "path": scope.get("path"),
                    "status": status.get("code", 500),
                    "duration_ms": round((time.perf_counter() - started) * 1000, 1),
                    "client": (scope.get("client") or (None,))[0],
                }
                if scope.get("path") in QUIET_PATHS and fields["status"] < 400:
                    log.debug("request", **fields)
                else:
                    log.info("request", **fields)

    return middleware
