"""Typed HTTP parameters shared by the API controllers.

Row ids and cursors are bounded by the database's INTEGER (PostgreSQL: 32-bit): a larger number
names no row, and would fail inside the driver as a 500 instead of a clear 400. JSON bodies are
bounded in depth before anything decodes them (bounded_json_body, the app's before_request).
"""

from __future__ import annotations

from typing import Annotated, Any

from litestar import Request
from litestar.exceptions import ValidationException
from litestar.params import PathParameter, QueryParameter

from server.runtime.jsondepth import JSONTooDeepError, check_json_depth

MAX_ROW_ID = 2**31 - 1

RowId = Annotated[int, PathParameter(ge=1, le=MAX_ROW_ID)]
Cursor = Annotated[int | None, QueryParameter(ge=1, le=MAX_ROW_ID)]


async def bounded_json_body(request: Request[Any, Any, Any]) -> None:
    """Before any handler decodes it: a JSON body deeper than MAX_JSON_DEPTH is a 400 naming the
    bound (the decoders recurse, and a RecursionError was a 500). A handler that answers its own
    callers (the BC webhook, which must never answer a 4xx) opts out with opt={"raw_body": True}."""
    if request.route_handler.opt.get("raw_body") or request.method in ("GET", "HEAD", "OPTIONS"):
        return
    body = await request.body()  # over MLC_MAX_BODY_BYTES: 413, raised here
    try:
        check_json_depth(body)
    except JSONTooDeepError as exc:
        raise ValidationException(detail=f"request body: {exc}") from None
