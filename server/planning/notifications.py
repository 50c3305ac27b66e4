"""The ingest behind `/webhooks/bc` (server/web/bc_webhook.py): check BC's change notifications
and store them. Store first, work later.

- Each item's clientState is compared in constant time with the stored subscription's; an unknown
  subscription, a mismatch, or a resource outside the subscription's (company, entity) drops the
  item (logged without the clientState). Nothing is fetched from BC inside the request: the fetch
  worker is woken instead.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import json
import threading
import time
import weakref
from collections import Counter
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime
from typing import Any, NamedTuple

import msgspec
from pydantic import TypeAdapter, ValidationError
from sqlalchemy import Engine

from server.bc.models import ChangeType, NotificationItem, Timestamp
from server.metrics import count_notifications
from server.runtime.crashpoints import crash_point
from server.runtime.jsondepth import check_json_depth
from server.runtime.logs import get_logger
from server.services import Services
from server.store.db import read_scope
from server.store.inbox import RECORD_ID_MAX, NotificationIn, ResourceParser, store_notifications
from server.store.subscriptions import client_state_matches, get_by_subscription_ids
from server.store.tables import BcSubscription

log = get_logger("ml_connector.webhooks.bc")

LIVE_STATUSES = frozenset({"creating", "active", "renewing"})


@dataclass(frozen=True)
class Verdict:
    """What became of one POST: the items kept, and why the others were dropped."""

    accepted: list[NotificationIn]
    dropped: list[tuple[int, str]]  # (index in value[], reason)


def parse_body(raw: bytes) -> list[Any]:
    """The `value` array of a notification POST; ValueError when the body is not that shape or nests
    deeper than MAX_JSON_DEPTH."""
    check_json_depth(raw)  # JSONTooDeepError, a ValueError: json.loads recurses (RecursionError)
    try:
        body = json.loads(raw.decode("utf-8-sig"))  # BC sends no BOM since v19; older ones did
    except (UnicodeDecodeError, ValueError) as exc:
        raise ValueError(f"body is not JSON: {exc}") from None
    if not isinstance(body, dict) or not isinstance(body.get("value"), list):
        raise ValueError('body must be a JSON object with a "value" array')
    items: list[Any] = body["value"]
    return items


ITEMS = TypeAdapter(list[NotificationItem])
_TIMESTAMP = TypeAdapter(Timestamp)


class Item(NamedTuple):
    """One well-formed notification item, as check_items judges it."""

    subscription_id: str
    client_state: str | None
    resource: str
    change_type: str
    last_modified: datetime


class _WireItem(msgspec.Struct, frozen=True, gc=False):
    # NotificationItem's fields, its times still the strings BC sent (see decode_items).
    subscriptionId: str
    expirationDateTime: str
    resource: str
    changeType: ChangeType
    lastModifiedDateTime: str
    clientState: str | None = None


class _WireBody(msgspec.Struct, gc=False):
    value: list[_WireItem]


_WIRE = msgspec.json.Decoder(_WireBody)


def decode_items(raw: bytes) -> list[Item] | None:
    """The items of a body whose every item is well formed, read from the bytes in one pass; None
    when anything is unusual (not JSON, a BOM, a malformed item, ...): the caller then reads the
    body with parse_body and check_items validates item by item, naming what is wrong.

    msgspec checks the shape (unknown fields ignored, as NotificationItem's extra="allow" does);
    the times go through NotificationItem's own Timestamp validation, once per distinct string
    (BC repeats expirationDateTime in every item), so a time means exactly what it meant before
    (msgspec's own datetime rounds a 7th fractional digit, pydantic truncates it). Bench ingest:
    ~0.1 ms for 100 items, where json.loads and the pydantic validation took ~0.5 ms.
    """
    try:
        wire = _WIRE.decode(raw).value
    except (ValueError, RecursionError):
        # msgspec.DecodeError (and ValidationError), UnicodeDecodeError; RecursionError: a deeply
        # nested unknown field (msgspec recurses to skip it). parse_body then names the fault.
        return None
    times: dict[str, datetime] = {}
    items: list[Item] = []
    try:
        for w in wire:
            if w.expirationDateTime not in times:
                times[w.expirationDateTime] = _TIMESTAMP.validate_python(w.expirationDateTime)
            last_modified = times.get(w.lastModifiedDateTime)
            if last_modified is None:
                last_modified = times[w.lastModifiedDateTime] = _TIMESTAMP.validate_python(
                    w.lastModifiedDateTime
                )
            items.append(Item(w.subscriptionId, w.clientState, w.resource, w.changeType, last_modified))
    except ValidationError:
        return None
    return items


# How long a live subscription read from the store is trusted without reading it again.
SUBSCRIPTION_TTL_SECONDS = 1.0


class SubscriptionCache:
    """Live subscriptions as last read from the store, so a busy webhook does not read them per POST.

    Semantics (tests/server/planning/test_subscription_cache.py):
    - only live subscriptions (creating/active/renewing) are kept; an unknown or dead one is read
      again for every POST that names it, so a subscription that becomes live is accepted at once;
    - an entry is trusted for `ttl` seconds (monotonic time), then read again: a subscription
      deleted or dropped, or whose clientState changed, is noticed within `ttl`;
    - a clientState that does not match a cached entry is checked against a fresh read before the
      item is dropped, so a new clientState is accepted at once (only an old one lingers, for ttl).
    Safe to share between threads: entries are replaced whole, never changed in place.
    """

    def __init__(
        self, ttl: float = SUBSCRIPTION_TTL_SECONDS, monotonic: Callable[[], float] = time.monotonic
    ):
        self.ttl = ttl
        self.monotonic = monotonic
        self._entries: dict[str, tuple[float, BcSubscription]] = {}

    def get(self, engine: Engine, subscription_ids: Iterable[str]) -> dict[str, BcSubscription | None]:
        """The live subscriptions among `subscription_ids`, reading the store for any not fresh here."""
        now = self.monotonic()
        found: dict[str, BcSubscription | None] = {}
        missing: list[str] = []
        for sub_id in dict.fromkeys(subscription_ids):
            entry = self._entries.get(sub_id)
            if entry is not None and 0 <= now - entry[0] < self.ttl:
                found[sub_id] = entry[1]
            else:
                missing.append(sub_id)
        if missing:
            found.update(self.refresh(engine, missing))
        return found

    def refresh(self, engine: Engine, subscription_ids: Iterable[str]) -> dict[str, BcSubscription | None]:
        """Read `subscription_ids` from the store now; remember the live ones, forget the rest.
        The rows come back detached (read-only copies, safe to share between threads)."""
        ids = list(dict.fromkeys(subscription_ids))
        read_at = self.monotonic()
        with read_scope(engine) as session:
            rows = get_by_subscription_ids(session, ids)
            session.expunge_all()
        live = {sub_id: row for sub_id, row in rows.items() if row.status in LIVE_STATUSES}
        for sub_id in ids:
            if sub_id in live:
                self._entries[sub_id] = (read_at, live[sub_id])
            else:
                self._entries.pop(sub_id, None)
        return {sub_id: live.get(sub_id) for sub_id in ids}


@dataclass
class _Post:
    """One POST waiting for the webhook's writer thread."""

    items: list[Item] | list[Any]  # decode_items' answer, or the raw `value` array
    decoded: bool
    context: contextvars.Context  # the request's (log lines keep its request id)
    loop: asyncio.AbstractEventLoop
    future: asyncio.Future[tuple[Verdict, int]]


class Ingest:
    """Per-app state of the webhook: the subscription cache, and the thread that stores batches.

    The database work runs off the event loop (a busy database -- SQLite's write lock, a PostgreSQL
    restart -- must not stall every other request, /ready included), in one writer thread. POSTs
    that arrive while it is busy queue, and its next round checks each of them and stores all their
    items in one transaction (group commit); each POST is answered only after the commit that holds
    its items. One writer, because on SQLite only one can hold the lock anyway: six to_thread
    workers queueing for it in SQLite's busy handler (which sleeps 1..100 ms between tries) cut the
    throughput and pushed p99 latency to seconds (bench: ingest).
    """

    def __init__(self) -> None:
        self.cache = SubscriptionCache()
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="webhook-bc")
        self._lock = threading.Lock()
        self._queue: list[_Post] = []
        self._writing = False

    def state(self) -> tuple[bool, int]:
        """Whether the writer is at work, and how many POSTs wait for its next round."""
        with self._lock:
            return self._writing, len(self._queue)

    async def check_and_store(
        self, services: Services, items: list[Item] | list[Any], *, decoded: bool = False
    ) -> tuple[Verdict, int]:
        """Check the items (decode_items' when `decoded`, else raw ones) and store the good ones;
        returns (verdict, new items) once committed."""
        loop = asyncio.get_running_loop()
        post = _Post(items, decoded, contextvars.copy_context(), loop, loop.create_future())
        with self._lock:
            self._queue.append(post)
            start, self._writing = not self._writing, True
        if start:
            self._executor.submit(self._write, services)
        return await post.future

    def _write(self, services: Services) -> None:
        while True:
            with self._lock:
                posts, self._queue = self._queue, []
                if not posts:
                    self._writing = False
                    return
            outcomes: dict[int, tuple[Verdict, int] | BaseException] = {}
            try:
                self._write_round(services, posts, outcomes)
            except Exception as exc:  # never leave a POST waiting
                for n in range(len(posts)):
                    outcomes.setdefault(n, exc)
            _answer(posts, outcomes)

    def _write_round(
        self, services: Services, posts: list[_Post], outcomes: dict[int, tuple[Verdict, int] | BaseException]
    ) -> None:
        checked: list[tuple[int, Verdict]] = []
        for n, post in enumerate(posts):
            try:
                verdict = post.context.run(
                    check_and_count, services, self.cache, post.items, decoded=post.decoded
                )
            except Exception as exc:  # e.g. the subscriptions could not be read: that POST gets a 503
                outcomes[n] = exc
                continue
            if verdict.accepted:
                checked.append((n, verdict))
            else:
                outcomes[n] = (verdict, 0)
        if not checked:
            return
        try:
            counts = store_posts(services, [verdict.accepted for _, verdict in checked])
        except Exception:
            if len(checked) == 1:
                raise
            # One POST's failure must not fail those it shared the transaction with: store each alone.
            for n, verdict in checked:
                try:
                    outcomes[n] = (verdict, store_posts(services, [verdict.accepted])[0])
                except Exception as exc:
                    outcomes[n] = exc
            return
        for (n, verdict), stored in zip(checked, counts, strict=True):
            outcomes[n] = (verdict, stored)


def _answer(posts: list[_Post], outcomes: dict[int, tuple[Verdict, int] | BaseException]) -> None:
    """Hand each POST its outcome on its event loop: one wake-up per loop and round, not per POST."""
    by_loop: dict[asyncio.AbstractEventLoop, list[tuple[_Post, tuple[Verdict, int] | BaseException]]] = {}
    for n, post in enumerate(posts):
        by_loop.setdefault(post.loop, []).append((post, outcomes[n]))

    def settle(answers: list[tuple[_Post, tuple[Verdict, int] | BaseException]]) -> None:
        for post, outcome in answers:
            if post.future.done():  # the request was cancelled meanwhile (client gone)
                continue
            if isinstance(outcome, BaseException):
                post.future.set_exception(outcome)
            else:
                post.future.set_result(outcome)

    for loop, answers in by_loop.items():
        with contextlib.suppress(RuntimeError):  # that loop is closed: nobody is waiting any more
            loop.call_soon_threadsafe(settle, answers)


# One per Services (an app and its database); weak, so a closed app's state goes with it.
_ingests: weakref.WeakKeyDictionary[Services, Ingest] = weakref.WeakKeyDictionary()
_ingests_lock = threading.Lock()


def ingest_for(services: Services) -> Ingest:
    with _ingests_lock:
        ingest = _ingests.get(services)
        if ingest is None:
            ingest = _ingests[services] = Ingest()
        return ingest


def validate_items(raw_items: list[Any]) -> tuple[list[tuple[int, Item]], list[tuple[int, str]]]:
    """The well-formed items of a raw `value` array, and why the others are dropped (by index)."""
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
    items = [
        (n, Item(i.subscriptionId, i.clientState, i.resource, i.changeType, i.lastModifiedDateTime))
        for n, i in parsed
    ]
    return items, dropped


def check_items(
    db: Engine, cache: SubscriptionCache, items: list[Item] | list[Any], *, decoded: bool = False
) -> Verdict:
    """Check each item (validating raw ones unless `decoded`) and its clientState against the
    stored subscription (constant time)."""
    if decoded:
        parsed: list[tuple[int, Item]] = list(enumerate(items))
        dropped: list[tuple[int, str]] = []
    else:
        parsed, dropped = validate_items(items)
    subscriptions = cache.get(db, (item.subscription_id for _, item in parsed))
    refreshed: set[str] = set()

    def judge(subscription_id: str, client_state: str | None) -> BcSubscription | str:
        sub = subscriptions.get(subscription_id)
        if (
            sub is not None
            and subscription_id not in refreshed
            and not client_state_matches(sub, client_state)
        ):
            # Not matching what we remember: the clientState may have changed since; ask the store.
            refreshed.add(subscription_id)
            sub = cache.refresh(db, [subscription_id]).get(subscription_id)
            subscriptions[subscription_id] = sub
        if sub is None:
            return "unknown subscription"
        if not client_state_matches(sub, client_state):
            return "clientState does not match"
        return sub

    # A batch repeats one clientState per subscription: hash and compare each distinct pair once,
    # and keep what the items are checked against: (company id, lower-cased, entity) or a reason.
    verdicts: dict[tuple[str, str | None], tuple[str, str, str] | str] = {}
    accepted: list[NotificationIn] = []
    parse_resource = ResourceParser()
    for n, item in parsed:
        key = (item.subscription_id, item.client_state)
        verdict = verdicts.get(key)
        if verdict is None:
            judged = judge(*key)
            verdict = verdicts[key] = (
                judged
                if isinstance(judged, str)
                else (judged.company_id, judged.company_id.lower(), judged.entity)
            )
        if isinstance(verdict, str):
            dropped.append((n, verdict))
            continue
        company_id, company, entity = verdict
        ref = parse_resource(item.resource)
        if ref.entity != entity or (ref.company_id or "").lower() != company:
            dropped.append((n, "resource outside the subscription"))
            continue
        if ref.record_id is not None and len(ref.record_id) > RECORD_ID_MAX:
            # BC's ids are GUIDs; a longer one would fail the insert on PostgreSQL and turn the
            # whole batch into a 503 that BC retries for 36 hours.
            dropped.append((n, f"resource: record id longer than {RECORD_ID_MAX} characters"))
            continue
        accepted.append(
            NotificationIn(
                item.subscription_id,
                item.resource,
                item.change_type,
                item.last_modified,
                company_id,
                entity,
                ref,
            )
        )
    return Verdict(accepted, dropped)


def check_and_count(
    services: Services, cache: SubscriptionCache, items: list[Item] | list[Any], *, decoded: bool = False
) -> Verdict:
    """check_items, then log and count what was dropped and what was accepted."""
    verdict = check_items(services.db, cache, items, decoded=decoded)
    for n, reason in verdict.dropped:
        # Never log the clientState itself (nor the raw item, which carries it).
        log.warning("bc notification dropped", item=n, reason=reason)
    count_notifications(services, "unknown", len(verdict.dropped), outcome="dropped")
    for entity, received in Counter(item.entity or "unknown" for item in verdict.accepted).items():
        count_notifications(services, entity, received, outcome="accepted")
    return verdict


def store_posts(services: Services, posts: list[list[NotificationIn]]) -> list[int]:
    """Store the accepted items of several POSTs in one transaction; how many were new, per POST."""
    with services.db.begin() as connection:
        now = services.clock.now()
        counts = [store_notifications(connection, items, now=now) for items in posts]
    crash_point("webhook.bc.stored")
    return counts
