"""`/webhooks/bc`: BC's validation handshake and change notifications. Store first, work later.

BC's rules shape the answers (bc-api.md section b, "What this means"):
- Handshake: `?validationToken=...` on POST or GET -> 200 text/plain with the raw token (never
  HTML, so a token carrying markup is only ever echoed as plain text).
- A 4xx other than 408/429 makes BC DELETE the subscription and stop; 5xx/408/429 make it retry for
  36 hours. So: good items -> 202 (even when other items in the same POST were bad); every item bad
  -> 403 (a forged POST learns nothing, and a subscription whose clientState we no longer accept is
  one BC should drop); a database failure -> 503 so BC retries and no notification is lost.
- Each item's clientState is compared in constant time with the stored subscription's; an unknown
  subscription, a mismatch, or a resource outside the subscription's (company, entity) drops the
  item (logged without the clientState). Nothing is fetched from BC inside the request: the fetch
  worker is woken instead.
"""

from __future__ import annotations

import asyncio
import json
from collections import Counter
from dataclasses import dataclass
from typing import Any

from litestar import Request, Response, route
from litestar.di import NamedDependency
from litestar.enums import MediaType
from litestar.types import ControllerRouterHandler
from pydantic import TypeAdapter, ValidationError
from sqlalchemy.exc import SQLAlchemyError

from server.bc.models import NotificationItem
from server.crashpoints import crash_point
from server.logs import get_logger
from server.metrics import count_notifications
from server.services import Services
from server.store.db import read_scope, session_scope
from server.store.inbox import NotificationIn, parse_resource, store_notifications
from server.store.subscriptions import client_state_matches, get_by_subscription_ids

log = get_logger("ml_connector.webhooks.bc")

MAX_TOKEN_LENGTH = 1024  # BC's tokens are short; refuse to echo anything huge
LIVE_STATUSES = frozenset({"creating", "active", "renewing"})


@dataclass(frozen=True)
class Verdict:
    """What became of one POST: the items kept, and why the others were dropped."""

    accepted: list[NotificationIn]
    dropped: list[tuple[int, str]]  # (index in value[], reason)


def text(body: str, status: int) -> Response[str]:
    return Response(content=body, status_code=status, media_type=MediaType.TEXT)


def parse_body(raw: bytes) -> list[Any]:
    """The `value` array of a notification POST; ValueError (-> 400) when the body is not that shape."""
    try:
        body = json.loads(raw.decode("utf-8-sig"))  # BC sends no BOM since v19; older ones did
    except (UnicodeDecodeError, ValueError) as exc:
        raise ValueError(f"body is not JSON: {exc}") from None
    if not isinstance(body, dict) or not isinstance(body.get("value"), list):
        raise ValueError('body must be a JSON object with a "value" array')
    items: list[Any] = body["value"]
    return items


ITEMS = TypeAdapter(list[NotificationItem])


def check_items(services: Services, raw_items: list[Any]) -> Verdict:
    """Validate each item and its clientState against the stored subscription (constant time)."""
    parsed: list[tuple[int, NotificationItem]] = []
    dropped: list[tuple[int, str]] = []
    try:
        # One validation for the whole batch (BC sends up to hundreds of items per POST) ...
        parsed = list(enumerate(ITEMS.validate_python(raw_items)))
    except ValidationError:
        # ... and item by item only when something is malformed, to drop just those.
        for n, raw in enumerate(raw_items):
            try:
                parsed.append((n, NotificationItem.model_validate(raw)))
            except ValidationError as exc:
                fields = ", ".join(".".join(str(p) for p in e["loc"]) or "item" for e in exc.errors())
                dropped.append((n, f"malformed item ({fields})"))
    with read_scope(services.db) as session:
        subscriptions = get_by_subscription_ids(session, (item.subscriptionId for _, item in parsed))
        session.expunge_all()  # keep the rows readable after the read transaction ends
    accepted: list[NotificationIn] = []
    # A batch repeats one clientState per subscription: hash and compare each distinct pair once.
    matches: dict[tuple[str, str | None], bool] = {}
    for n, item in parsed:
        sub = subscriptions.get(item.subscriptionId)
        if sub is None or sub.status not in LIVE_STATUSES:
            dropped.append((n, "unknown subscription"))
            continue
        key = (item.subscriptionId, item.clientState)
        if key not in matches:
            matches[key] = client_state_matches(sub, item.clientState)
        if not matches[key]:
            dropped.append((n, "clientState does not match"))
            continue
        ref = parse_resource(item.resource)
        same_company = (ref.company_id or "").lower() == sub.company_id.lower()
        if not same_company or ref.entity != sub.entity:
            dropped.append((n, "resource outside the subscription"))
            continue
        accepted.append(
            NotificationIn(
                subscription_id=item.subscriptionId,
                resource=item.resource,
                change_type=item.changeType,
                last_modified=item.lastModifiedDateTime,
                company_id=sub.company_id,
                entity=sub.entity,
            )
        )
    return Verdict(accepted, dropped)


def check_and_store(services: Services, raw_items: list[Any]) -> tuple[Verdict, int]:
    """Check every item, then store the good ones in one transaction; returns (verdict, new items)."""
    verdict = check_items(services, raw_items)
    for n, reason in verdict.dropped:
        # Never log the clientState itself (nor the raw item, which carries it).
        log.warning("bc notification dropped", item=n, reason=reason)
    count_notifications(services, "unknown", len(verdict.dropped), outcome="dropped")
    for entity, received in Counter(item.entity or "unknown" for item in verdict.accepted).items():
        count_notifications(services, entity, received, outcome="accepted")
    if not verdict.accepted:
        return verdict, 0
    with session_scope(services.db) as session:
        stored = store_notifications(session, verdict.accepted, now=services.clock.now())
    crash_point("webhook.bc.stored")
    return verdict, stored


@route("/webhooks/bc", http_method=["GET", "POST"], status_code=202, include_in_schema=True)
async def bc_webhook(request: Request[Any, Any, Any], services: NamedDependency[Services]) -> Response[str]:
    """BC webhook endpoint: validation handshake (POST or GET) and change notifications (POST)."""
    token = request.query_params.get("validationToken")
    if token is not None:
        if not token or len(token) > MAX_TOKEN_LENGTH:
            return text("validationToken is empty or too long", 400)
        return text(token, 200)
    if request.method != "POST":
        return text("expected a validationToken query parameter", 400)
    try:
        raw_items = parse_body(await request.body())
    except ValueError as exc:
        return text(str(exc), 400)
    try:
        # In a thread: a busy database (SQLite's write lock, a PostgreSQL restart) must not stall the
        # event loop and with it every other request, /ready included.
        verdict, stored = await asyncio.to_thread(check_and_store, services, raw_items)
        if raw_items and not verdict.accepted:
            return text("no acceptable notification in the request", 403)
    except SQLAlchemyError as exc:
        log.error("bc notification not stored; BC will retry", error=type(exc).__name__)
        return text("temporarily unable to store notifications", 503)
    if stored:
        services.wake("fetcher")
    return text(f"accepted {len(verdict.accepted)}, new {stored}", 202)


ROUTES: list[ControllerRouterHandler] = [bc_webhook]
