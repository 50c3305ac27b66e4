"""`/webhooks/bc`: BC's validation handshake and change notifications. Store first, work later.

A thin handler: the checks and the group-committed store are server/planning/notifications.py.
BC's rules shape the answers (https://learn.microsoft.com/en-us/dynamics365/business-central/dev-itpro/api-reference/v2.0/dynamics-subscriptions):
- Handshake: `?validationToken=...` on POST or GET -> 200 text/plain with the raw token (never
  HTML, so a token carrying markup is only ever echoed as plain text).
- A 4xx other than 408/429 makes BC DELETE the subscription and stop; 5xx/408/429 make it retry for
  36 hours. So: good items -> 202 (even when other items in the same POST were bad); every item bad
  -> 403 (a forged POST learns nothing, and a subscription whose clientState we no longer accept is
  one BC should drop); a database failure -> 503 so BC retries and no notification is lost.
- A body that cannot be read (not JSON, nested deeper than MAX_JSON_DEPTH, over MLC_MAX_BODY_BYTES)
  -> 202 with nothing stored, logged and counted (outcome malformed / too_large): see `unreadable`.
"""

from __future__ import annotations

from typing import Any

from litestar import Request, Response, route
from litestar.di import NamedDependency
from litestar.enums import MediaType
from litestar.exceptions import HTTPException
from litestar.types import ControllerRouterHandler
from sqlalchemy.exc import SQLAlchemyError

from server.metrics import count_notifications
from server.planning.notifications import Item, decode_items, ingest_for, parse_body
from server.runtime.logs import get_logger
from server.services import Services

log = get_logger("ml_connector.webhooks.bc")

MAX_TOKEN_LENGTH = 1024  # BC's tokens are short; refuse to echo anything huge


def text(body: str, status: int) -> Response[str]:
    return Response(content=body, status_code=status, media_type=MediaType.TEXT)


def unreadable(services: Services, outcome: str, reason: str) -> Response[str]:
    log.warning(
        "bc notification body unreadable; answered 202, nothing stored", outcome=outcome, reason=reason[:200]
    )
    count_notifications(services, "unknown", outcome=outcome)
    return text(f"nothing stored: {reason[:200]}", 202)


# raw_body: this handler reads and bounds its own body (server/web/params.py, bounded_json_body).
@route(
    "/webhooks/bc",
    http_method=["GET", "POST"],
    status_code=202,
    include_in_schema=True,
    opt={"raw_body": True},
)
async def bc_webhook(request: Request[Any, Any, Any], services: NamedDependency[Services]) -> Response[str]:
    """BC webhook endpoint: validation handshake (POST or GET) and change notifications (POST)."""
    token = request.query_params.get("validationToken")
    if token is not None:
        if not token or len(token) > MAX_TOKEN_LENGTH:
            return text("validationToken is empty or too long", 400)
        return text(token, 200)
    if request.method != "POST":
        return text("expected a validationToken query parameter", 400)
    # A body we cannot read is answered 2xx, logged and counted, never 4xx: BC answers any 4xx but
    # 408/429 by deleting every subscription of the company on this URL (codeunit 6154 "API Webhook
    # Notification Send", SendNotifications -> DeleteInvalidSubscriptions), and a 5xx only buys
    # retries of the same unreadable body. BC's own notifications are small and flat; the poller
    # and the sweep still read what changed.
    try:
        body = await request.body()
    except HTTPException as exc:
        if exc.status_code != 413:
            raise
        return unreadable(services, "too_large", f"body over {services.settings.max_body_bytes} bytes")
    items: list[Item] | list[Any] | None = decode_items(body)
    decoded = items is not None
    if items is None:
        try:
            items = parse_body(body)  # a ValueError names the fault; JSONTooDeepError is one
        except ValueError as exc:
            return unreadable(services, "malformed", str(exc))
    try:
        verdict, stored = await ingest_for(services).check_and_store(services, items, decoded=decoded)
        if items and not verdict.accepted:
            return text("no acceptable notification in the request", 403)
    except SQLAlchemyError as exc:
        log.error("bc notification not stored; BC will retry", error=type(exc).__name__)
        return text("temporarily unable to store notifications", 503)
    if stored:
        services.wake("fetcher")
    return text(f"accepted {len(verdict.accepted)}, new {stored}", 202)


ROUTES: list[ControllerRouterHandler] = [bc_webhook]
