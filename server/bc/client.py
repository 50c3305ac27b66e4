"""Async Business Central API v2.0 client: one method per remote operation, retries in one place.

- Auth: app-only bearer tokens from `TokenProvider` (msal, cached); a 401 gets one fresh token and
  one more try.
- Retries (`_send`): 429, 408, 5xx and network errors, with exponential backoff and full jitter;
  a Retry-After header sets the wait. Permanent 4xx are raised at once. POST is retried only when BC
  says it did not process the request (429, 503) or when the connection was never made.
- Concurrency: at most `max_concurrency` requests in flight per client (one client per
  environment; BC processes 5 per user and queues the rest).
- Paging: server-driven; `iter_records` streams page by page following `@odata.nextLink` as an
  opaque URL (never `$top`+`$skip`), asking for `Prefer: odata.maxpagesize`.
"""

from __future__ import annotations

import asyncio
import json
import random
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from types import TracebackType
from typing import Any, Self, TypeVar
from urllib.parse import urljoin, urlsplit

import httpx

from server.bc.auth import TokenProvider, ssl_context
from server.bc.entities import STANDARD_API, EntitySet, check_guid
from server.bc.errors import (
    BCError,
    RetryableBCError,
    TransportError,
    UnsafeNextLinkError,
    error_from_response,
)
from server.bc.models import BCRecord, Company, Subscription, format_bc_datetime
from server.bc.settings import BCConfig

R = TypeVar("R", bound=BCRecord)
Sleep = Callable[[float], Awaitable[None]]
OnResponse = Callable[[str, int | None], None]
"""Called after every HTTP try with the method and the status (None: no response came back)."""

_SAFE_TO_REPEAT = frozenset({"GET", "HEAD", "DELETE", "PUT", "PATCH"})  # PATCH carries If-Match


def _json_default(value: Any) -> Any:
    if isinstance(value, Decimal):
        return int(value) if value == value.to_integral_value() else float(value)
    if isinstance(value, datetime):
        return format_bc_datetime(value)
    if isinstance(value, date):
        return value.isoformat()
    raise TypeError(f"cannot send {type(value).__name__} to BC")


def _parse_json(response: httpx.Response) -> Any:
    if not response.content:
        return None
    try:
        # Money stays exact: JSON numbers with a fraction become Decimal, never float.
        return json.loads(response.content, parse_float=Decimal)
    except ValueError:
        return None


class BCClient:
    def __init__(
        self,
        config: BCConfig,
        *,
        tokens: TokenProvider | None = None,
        http: httpx.AsyncClient | None = None,
        sleep: Sleep = asyncio.sleep,
        rng: random.Random | None = None,
        on_response: OnResponse | None = None,
    ) -> None:
        self.config = config
        # An observer handed in (server.services wires the metrics here); the client imports none.
        self.on_response = on_response
        self._tokens = tokens or TokenProvider(config)
        self._owns_tokens = tokens is None
        self._http = http or httpx.AsyncClient(
            verify=ssl_context(config.ca_cert), timeout=config.timeout_seconds, trust_env=False
        )
        self._owns_http = http is None
        self._semaphore = asyncio.Semaphore(config.max_concurrency)
        self._sleep = sleep
        self._rng = rng or random.Random()  # noqa: S311 - jitter, not cryptography
        origin = urlsplit(config.base_url)
        self._origin = (origin.scheme, origin.netloc.lower())

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        if self._owns_http:
            await self._http.aclose()
        if self._owns_tokens:
            self._tokens.close()

    # -- transport ---------------------------------------------------------------------------------

    def url(self, path: str) -> str:
        """Absolute URL of a path relative to `{api_host}/v2.0/{tenant}/{environment}/`."""
        return f"{self.config.base_url}/{path.lstrip('/')}"

    def resolve(self, url: str) -> str:
        """An absolute URL for a link BC gave us (nextLink, notification resource), same origin only."""
        absolute = urljoin(self.config.base_url + "/", url)
        parts = urlsplit(absolute)
        if (parts.scheme, parts.netloc.lower()) != self._origin:
            # The bearer token must never go to a host other than the configured BC API host.
            raise UnsafeNextLinkError(
                f"link leaves the BC API host: {parts.scheme}://{parts.netloc}", url=url
            )
        return absolute

    def backoff_delay(self, attempt: int, retry_after: float | None) -> float:
        """Seconds to wait before try `attempt + 1`: Retry-After when given, else full jitter."""
        policy = self.config.retry
        if retry_after is not None:
            return min(retry_after, policy.max_retry_after)
        return policy.backoff(attempt, self._rng)

    async def _send(
        self,
        method: str,
        url: str,
        *,
        params: Mapping[str, str] | None = None,
        body: Any = None,
        headers: Mapping[str, str] | None = None,
    ) -> httpx.Response:
        policy = self.config.retry
        content = json.dumps(body, default=_json_default).encode() if body is not None else None
        attempt = 0
        refreshed = False
        while True:
            attempt += 1
            error: BCError
            never_sent = False
            response: httpx.Response | None = None
            try:
                token = await self._tokens.token(force_refresh=False)
            except RetryableBCError as exc:  # Entra unreachable: same policy as BC itself
                error, never_sent = exc, True
            else:
                request_headers = {"Accept": "application/json", "Authorization": f"Bearer {token}"}
                if content is not None:
                    request_headers["Content-Type"] = "application/json"
                request_headers.update(headers or {})
                try:
                    async with self._semaphore:
                        response = await self._http.request(
                            method, url, params=params, content=content, headers=request_headers
                        )
                except httpx.TransportError as exc:
                    never_sent = isinstance(
                        exc, httpx.ConnectError | httpx.ConnectTimeout | httpx.PoolTimeout
                    )
                    error = TransportError(f"{type(exc).__name__}: {exc}", method=method, url=url)
                if self.on_response is not None:
                    self.on_response(method, response.status_code if response is not None else None)
            if response is not None:
                if response.status_code < 400:
                    return response
                if response.status_code == 401 and not refreshed:
                    # The token may have been revoked or expired early: one fresh token, one retry.
                    refreshed = True
                    attempt -= 1
                    await self._tokens.token(force_refresh=True)
                    continue
                error = error_from_response(
                    response.status_code,
                    _parse_json(response),
                    method=method,
                    url=str(response.request.url.copy_with(query=None)),
                    retry_after_header=response.headers.get("Retry-After"),
                )
            repeatable = method in _SAFE_TO_REPEAT or never_sent or error.status in (429, 503)
            if not isinstance(error, RetryableBCError) or not repeatable or attempt >= policy.max_attempts:
                raise error
            await self._sleep(self.backoff_delay(attempt, error.retry_after))

    async def get_json(
        self, url: str, params: Mapping[str, str] | None = None, *, page_size: int | None = None
    ) -> Any:
        """The parsed JSON behind a path (relative to the environment root) or a same-origin URL."""
        return await self._get_json(self.resolve(url), params, page_size)

    async def _get_json(
        self, url: str, params: Mapping[str, str] | None = None, page_size: int | None = None
    ) -> Any:
        headers = {"Prefer": f"odata.maxpagesize={page_size}"} if page_size else None
        response = await self._send("GET", url, params=params, headers=headers)
        return _parse_json(response)

    # -- reading -----------------------------------------------------------------------------------

    async def iter_pages(
        self, url: str, params: Mapping[str, str] | None = None, *, page_size: int | None = None
    ) -> AsyncIterator[list[dict[str, Any]]]:
        """Raw pages of a collection URL, following `@odata.nextLink` until BC stops sending one."""
        size = page_size or self.config.page_size
        next_url: str | None = self.resolve(url)
        next_params = params
        while next_url is not None:
            page = await self._get_json(next_url, next_params, size)
            if not isinstance(page, dict) or not isinstance(page.get("value"), list):
                raise BCError("expected an OData collection with a 'value' array", method="GET", url=next_url)
            yield page["value"]
            link = page.get("@odata.nextLink")
            next_url = self.resolve(str(link)) if link else None
            next_params = None  # the link carries the whole query; treat it as opaque

    async def iter_records(
        self,
        entity: EntitySet[R],
        company_id: str,
        *,
        filter: str | None = None,
        select: Iterable[str] | None = None,
        expand: Iterable[str] | None = None,
        top: int | None = None,
        page_size: int | None = None,
    ) -> AsyncIterator[R]:
        """Records of an entity set, streamed page by page (one page in memory at a time)."""
        params = _query(filter=filter, select=select, expand=expand, top=top)
        # With $top, BC returns no nextLink (microsoft/AL#6858): ask for a page that holds all of it.
        size = max(top, page_size or self.config.page_size) if top else page_size
        async for page in self.iter_pages(
            self.url(entity.collection_path(company_id)), params, page_size=size
        ):
            for raw in page:
                yield entity.model.model_validate(raw)

    async def list_records(self, entity: EntitySet[R], company_id: str, **options: Any) -> list[R]:
        """All matching records in a list; for small sets only (use iter_records for the rest)."""
        return [record async for record in self.iter_records(entity, company_id, **options)]

    async def get_record(
        self,
        entity: EntitySet[R],
        company_id: str,
        record_id: str,
        *,
        select: Iterable[str] | None = None,
        expand: Iterable[str] | None = None,
    ) -> R:
        raw = await self._get_json(
            self.url(entity.record_path(company_id, record_id)), _query(select=select, expand=expand)
        )
        return entity.model.model_validate(raw)

    def split_ids(
        self, entity: EntitySet[Any], company_id: str, ids: Iterable[str], **options: Any
    ) -> list[list[str]]:
        """Group ids so each `id eq A or id eq B ...` request URL stays within `max_url_length`."""
        base = self.url(entity.collection_path(company_id))
        unique = list(dict.fromkeys(check_guid(i) for i in ids))
        groups: list[list[str]] = []
        current: list[str] = []
        length = 0
        for record_id in unique:
            # Percent-encoding is per character, so one more id lengthens the URL by the encoded
            # length of its own clause: measured alone, the packing stays linear. Rebuilding the
            # whole URL for every candidate was quadratic and held the event loop for ~50 ms a batch.
            longer = length + _encoded_length(f" or id eq {record_id}")
            if current and longer <= self.config.max_url_length:
                current.append(record_id)
                length = longer
                continue
            if current:
                groups.append(current)
            current = [record_id]
            length = len(str(httpx.URL(base, params=_query(filter=_ids_filter(current), **options))))
        if current:
            groups.append(current)
        return groups

    async def iter_by_ids(
        self,
        entity: EntitySet[R],
        company_id: str,
        ids: Iterable[str],
        *,
        select: Iterable[str] | None = None,
        expand: Iterable[str] | None = None,
    ) -> AsyncIterator[R]:
        """The records with these ids, in as few requests as the URL length allows. Missing ids are skipped."""
        select = list(select) if select is not None else None
        expand = list(expand) if expand is not None else None
        for group in self.split_ids(entity, company_id, ids, select=select, expand=expand):
            async for record in self.iter_records(
                entity, company_id, filter=_ids_filter(group), select=select, expand=expand
            ):
                yield record

    async def get_by_ids(
        self, entity: EntitySet[R], company_id: str, ids: Iterable[str], **options: Any
    ) -> list[R]:
        return [record async for record in self.iter_by_ids(entity, company_id, ids, **options)]

    async def iter_changed_since(
        self,
        entity: EntitySet[R],
        company_id: str,
        since: datetime,
        *,
        overlap: timedelta = timedelta(0),
        select: Iterable[str] | None = None,
        expand: Iterable[str] | None = None,
    ) -> AsyncIterator[R]:
        """Records with `lastModifiedDateTime gt since - overlap` (watermark polling).

        An overlap re-reads a little: clocks and BC's 50 ms margin can repeat rows, so the caller
        de-duplicates by id + lastModifiedDateTime.
        """
        if since.tzinfo is None:
            raise ValueError("since: needs a timezone-aware datetime")
        moment = format_bc_datetime((since - overlap).astimezone(UTC))
        async for record in self.iter_records(
            entity, company_id, filter=f"lastModifiedDateTime gt {moment}", select=select, expand=expand
        ):
            yield record

    async def iter_url(self, url: str, model: type[R]) -> AsyncIterator[R]:
        """Records behind a URL BC gave us (a `collection` notification resource), taken as opaque.

        A URL naming one record yields that record; a collection URL is followed through its pages.
        """
        raw = await self._get_json(self.resolve(url), page_size=self.config.page_size)
        if isinstance(raw, dict) and isinstance(raw.get("value"), list):
            for item in raw["value"]:
                yield model.model_validate(item)
            link = raw.get("@odata.nextLink")
            if link:
                async for page in self.iter_pages(str(link)):
                    for item in page:
                        yield model.model_validate(item)
        else:
            yield model.model_validate(raw)

    async def list_companies(self) -> list[Company]:
        companies: list[Company] = []
        async for page in self.iter_pages(self.url(f"{STANDARD_API}/companies")):
            companies.extend(Company.model_validate(raw) for raw in page)
        return companies

    # -- writing -----------------------------------------------------------------------------------

    async def patch_record(
        self, entity: EntitySet[R], company_id: str, record_id: str, changes: Mapping[str, Any], *, etag: str
    ) -> R:
        """PATCH with If-Match: raises EntityChangedError when the record changed since `etag` was read."""
        if not etag:
            raise ValueError("etag: PATCH needs the record's @odata.etag (If-Match)")
        response = await self._send(
            "PATCH",
            self.url(entity.record_path(company_id, record_id)),
            body=dict(changes),
            headers={"If-Match": etag},
        )
        return entity.model.model_validate(_parse_json(response))

    # -- webhook subscriptions ---------------------------------------------------------------------

    @staticmethod
    def subscription_resource(entity: EntitySet[Any], company_id: str) -> str:
        return "/" + entity.collection_path(company_id)

    async def create_subscription(
        self, notification_url: str, resource: str, client_state: str | None = None
    ) -> Subscription:
        """BC calls `notification_url?validationToken=...` before answering; no echo, no subscription."""
        body: dict[str, str] = {"notificationUrl": notification_url, "resource": resource}
        if client_state is not None:
            if len(client_state) > 250:
                raise ValueError("client_state: keep it at most 250 characters (v1.0's documented limit)")
            body["clientState"] = client_state
        response = await self._send("POST", self.url(f"{STANDARD_API}/subscriptions"), body=body)
        return Subscription.model_validate(_parse_json(response))

    async def list_subscriptions(self) -> list[Subscription]:
        subscriptions: list[Subscription] = []
        async for page in self.iter_pages(self.url(f"{STANDARD_API}/subscriptions")):
            subscriptions.extend(Subscription.model_validate(raw) for raw in page)
        return subscriptions

    def _subscription_url(self, subscription_id: str) -> str:
        if not subscription_id.isalnum():
            raise ValueError(f"subscription_id: {subscription_id!r} is not a subscription id")
        return self.url(f"{STANDARD_API}/subscriptions('{subscription_id}')")

    async def renew_subscription(
        self, subscription_id: str, *, etag: str = "*", changes: Mapping[str, str] | None = None
    ) -> Subscription:
        """PATCH the subscription (If-Match required): BC repeats the handshake and extends it 3 days."""
        response = await self._send(
            "PATCH",
            self._subscription_url(subscription_id),
            body=dict(changes or {}),
            headers={"If-Match": etag},
        )
        return Subscription.model_validate(_parse_json(response))

    async def delete_subscription(self, subscription_id: str, *, etag: str = "*") -> None:
        await self._send("DELETE", self._subscription_url(subscription_id), headers={"If-Match": etag})


def _encoded_length(text: str) -> int:
    """How many characters `text` adds to a query value once httpx has encoded it."""
    return len(str(httpx.QueryParams({"q": text}))) - len("q=")


def _ids_filter(ids: list[str]) -> str:
    # One field only: BC refuses `or` across different fields (it answers 400 BadRequest).
    return " or ".join(f"id eq {record_id}" for record_id in ids)


def _query(
    *,
    filter: str | None = None,
    select: Iterable[str] | None = None,
    expand: Iterable[str] | None = None,
    top: int | None = None,
) -> dict[str, str]:
    params: dict[str, str] = {}
    if filter:
        params["$filter"] = filter
    if select:
        params["$select"] = ",".join(select)
    if expand:
        params["$expand"] = ",".join(expand)
    if top is not None:
        if top < 1:
            raise ValueError("top: must be at least 1")
        params["$top"] = str(top)
    return params
