"""The BC simulator's HTTP surface (plain ASGI, served by uvicorn over TLS).

- Entra ID: `/{tenant}/v2.0/.well-known/openid-configuration` and `/{tenant}/oauth2/v2.0/token`
  (client credentials; tokens expire by the simulator clock).
- BC API v2.0 under `/v2.0/{tenant}/{environment}/api/v2.0/...` (bearer token required), plus the
  custom page `/api/contoso/finance/v1.0/companies({id})/vendorBankAccounts`.
- Control API under `/_sim/...` (no auth; loopback only) for the sandbox and tests:
    GET  info | stats | requests | subscriptions | notifications/deliveries
    POST seed {"seed"} | clock/advance {"seconds"} | faults {Fault fields} | tokens/expire
         notifications/flush | notifications/drop {"count"}
         config {"collection_threshold", "notification_window_seconds"}
    DELETE faults | requests
    GET/POST companies/{id}/{entitySet};  PATCH/DELETE companies/{id}/{entitySet}/{recordId}
  Record changes made here bump @odata.etag and lastModifiedDateTime and queue notifications.

BC docs pages are cited by their path under
https://learn.microsoft.com/dynamics365/business-central/dev-itpro/.
"""

from __future__ import annotations

import asyncio
import bisect
import itertools
import json
import re
import uuid
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field, fields
from datetime import timedelta
from typing import Any
from urllib.parse import parse_qsl, quote, urlencode, urlsplit

from simulators.bc.catalog import ENTITIES, STANDARD_API, EntityKind
from simulators.bc.odata import (
    ExpandItem,
    ODataQueryError,
    parse_expand,
    parse_filter,
    parse_select,
)
from simulators.bc.state import BCState, Fault, SimError
from simulators.bc.webhooks import Notifier, handshake

# SaaS maximum; not configurable on the server
# (BC docs webservices/server-driven-paging-in-odata-web-services).
MAX_PAGE_SIZE = 20_000
MAX_BODY = 1_048_576
BC_SCOPE = "https://api.businesscentral.dynamics.com/.default"
_GUID = r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}"
_SEGMENT = re.compile(rf"^([A-Za-z]+)(?:\(({_GUID})\))?$")
_SUBSCRIPTION = re.compile(r"^subscriptions\(\{?'?([0-9a-fA-F]{32})'?\}?\)$")
_SECRET_HEADERS = {"authorization", "cookie", "proxy-authorization"}

Scope = dict[str, Any]
Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]


@dataclass
class Request:
    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        if not self.body:
            return {}
        try:
            return json.loads(self.body)
        except ValueError as exc:
            raise SimError(400, "BadRequest", f"The request body is not valid JSON: {exc}") from exc


@dataclass
class Response:
    status: int
    body: bytes = b""
    headers: dict[str, str] = field(default_factory=dict)


def json_response(status: int, data: Any, headers: dict[str, str] | None = None) -> Response:
    return Response(
        status,
        json.dumps(data).encode(),
        {"Content-Type": "application/json; odata.metadata=minimal; odata.streaming=true", **(headers or {})},
    )


def odata_error(status: int, code: str, message: str, headers: dict[str, str] | None = None) -> Response:
    # BC appends the correlation id to every error message (BC docs webservices/use-odata-batch).
    text = f"{message}  CorrelationId:  {uuid.uuid4()}."
    return json_response(status, {"error": {"code": code, "message": text}}, headers)


class BCApp:
    def __init__(
        self, state: BCState, *, seed: Callable[[str], Any], info: Callable[[], dict[str, Any]]
    ) -> None:
        self.state = state
        self.seed = seed
        self.info = info
        self.origin = ""  # https://127.0.0.1:PORT, set once the socket is bound
        self.notifier: Notifier | None = None
        self.loop: asyncio.AbstractEventLoop | None = None
        self._notifier_task: asyncio.Task[None] | None = None

    @property
    def base_url(self) -> str:
        return f"{self.origin}/v2.0/{self.state.tenant_id}/{self.state.environment}"

    # -- ASGI --------------------------------------------------------------------------------------

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await self._lifespan(receive, send)
            return
        if scope["type"] != "http":
            return
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if len(body) > MAX_BODY:
                await self._send(send, odata_error(413, "BadRequest", "The request body is too large."))
                return
            if not message.get("more_body"):
                break
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        query = dict(parse_qsl(scope["query_string"].decode("latin-1"), keep_blank_values=True))
        request = Request(scope["method"], scope["path"], query, headers, body)
        try:
            response = await self.route(request)
        except SimError as exc:
            response = odata_error(exc.status, exc.code, exc.message, exc.headers)
        except ODataQueryError as exc:
            response = odata_error(400, exc.code, str(exc))
        if not request.path.startswith("/_sim/"):
            self._log(request, response)
        await self._send(send, response)

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                self.loop = asyncio.get_running_loop()
                self.notifier = Notifier(self.state)
                self._notifier_task = asyncio.create_task(self.notifier.run())
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                if self._notifier_task is not None:
                    self._notifier_task.cancel()
                if self.notifier is not None:
                    await self.notifier.aclose()
                await send({"type": "lifespan.shutdown.complete"})
                return

    @staticmethod
    async def _send(send: Send, response: Response) -> None:
        headers = [(k.lower().encode(), v.encode()) for k, v in response.headers.items()]
        headers.append((b"content-length", str(len(response.body)).encode()))
        await send({"type": "http.response.start", "status": response.status, "headers": headers})
        await send({"type": "http.response.body", "body": response.body})

    def _log(self, request: Request, response: Response) -> None:
        headers = {k: ("***" if k in _SECRET_HEADERS else v) for k, v in request.headers.items()}
        entry: dict[str, Any] = {
            "method": request.method,
            "path": request.path,
            "query": dict(request.query),
            "headers": headers,
            "status": response.status,
        }
        # Bodies of API writes are kept (tests read what the client wrote); token requests hold secrets.
        if request.body and request.path.startswith("/v2.0/"):
            entry["body"] = request.body.decode("utf-8", "replace")
        self.state.log_request(entry)

    # -- routing -----------------------------------------------------------------------------------

    async def route(self, request: Request) -> Response:
        path = request.path
        tenant = self.state.tenant_id
        if path.startswith("/_sim/"):
            return await self.control(request, path[len("/_sim/") :])
        if path in (
            f"/{tenant}/v2.0/.well-known/openid-configuration",
            f"/{tenant}/.well-known/openid-configuration",
        ):
            return self.discovery()
        if path == f"/{tenant}/oauth2/v2.0/token" and request.method == "POST":
            return self.token(request)
        prefix = f"/v2.0/{tenant}/{self.state.environment}/"
        if path.startswith(prefix):
            return await self.api(request, path[len(prefix) :])
        if path.startswith("/v2.0/"):
            return odata_error(
                404, "BadRequest_ResourceNotFound", "The tenant or environment does not exist."
            )
        return odata_error(404, "BadRequest_NotFound", f"No resource at '{path}'.")

    # -- Entra ID ----------------------------------------------------------------------------------

    def discovery(self) -> Response:
        authority = f"{self.origin}/{self.state.tenant_id}"
        return json_response(
            200,
            {
                "token_endpoint": f"{authority}/oauth2/v2.0/token",
                "authorization_endpoint": f"{authority}/oauth2/v2.0/authorize",
                "issuer": f"{authority}/v2.0",
                "jwks_uri": f"{authority}/discovery/v2.0/keys",
                "token_endpoint_auth_methods_supported": ["client_secret_post", "client_secret_basic"],
                "response_types_supported": ["code", "id_token", "code id_token", "id_token token"],
                "scopes_supported": ["openid", "profile", "email", "offline_access"],
                "tenant_region_scope": "EU",
            },
        )

    def token(self, request: Request) -> Response:
        form = dict(parse_qsl(request.body.decode("utf-8", "replace"), keep_blank_values=True))

        def refuse(status: int, error: str, description: str) -> Response:
            return json_response(
                status,
                {"error": error, "error_description": description, "error_codes": [int(description[6:13])]},
            )

        if form.get("grant_type") != "client_credentials":
            return refuse(
                400, "unsupported_grant_type", "AADSTS70003: The app requested an unsupported grant type."
            )
        if form.get("client_id") != self.state.client_id:
            return refuse(
                400,
                "unauthorized_client",
                "AADSTS700016: Application with identifier was not found in the directory.",
            )
        if form.get("client_secret") != self.state.client_secret:
            return refuse(401, "invalid_client", "AADSTS7000215: Invalid client secret provided.")
        if BC_SCOPE not in form.get("scope", "").split():
            return refuse(400, "invalid_scope", "AADSTS1002012: The provided value for scope is not valid.")
        token, expires_in = self.state.issue_token()
        return json_response(
            200,
            {
                "token_type": "Bearer",
                "expires_in": expires_in,
                "ext_expires_in": expires_in,
                "access_token": token,
            },
        )

    # -- BC API ------------------------------------------------------------------------------------

    async def api(self, request: Request, rest: str) -> Response:
        auth = request.headers.get("authorization", "")
        if not auth.startswith("Bearer ") or not self.state.token_valid(auth[len("Bearer ") :].strip()):
            return odata_error(
                401,
                "Authentication_InvalidCredentials",
                "The server has rejected the client credentials.",
                {
                    "WWW-Authenticate": 'Bearer authorization_uri="'
                    + self.origin
                    + '/common/oauth2/authorize"'
                },
            )
        self.state.enter()
        try:
            for fault in self.state.take_faults(request.method, request.path):
                if fault.kind == "delay":
                    await asyncio.sleep(fault.delay_seconds)
                else:
                    headers = (
                        {"Retry-After": f"{fault.retry_after:g}"} if fault.retry_after is not None else {}
                    )
                    code = fault.code or ("Application_TooManyRequests" if fault.status == 429 else "Unknown")
                    message = fault.message or f"Injected fault: HTTP {fault.status}."
                    return odata_error(fault.status, code, message, headers)
            return await self.api_route(request, rest)
        finally:
            self.state.leave()

    async def api_route(self, request: Request, rest: str) -> Response:
        match = re.match(r"^(api/(?:v2\.0|[A-Za-z0-9_]+/[A-Za-z0-9_]+/v[0-9.]+))/(.*)$", rest)
        if not match:
            raise SimError(404, "BadRequest_NotFound", f"No API at '{rest}'.")
        api, tail = match.group(1), match.group(2)
        if api == STANDARD_API:
            if tail == "subscriptions":
                return await self.subscriptions(request)
            sub = _SUBSCRIPTION.match(tail)
            if sub:
                return await self.subscription(request, sub.group(1))
            if tail == "companies":
                return self.companies(request, None)
            company = re.match(rf"^companies\(({_GUID})\)$", tail)
            if company:
                return self.companies(request, company.group(1).lower())
        scoped = re.match(rf"^companies\(({_GUID})\)/(.+)$", tail)
        if scoped:
            company_id, remainder = scoped.group(1).lower(), scoped.group(2)
        elif "company" in request.query:
            # The company may also be passed as ?company=<id> (api-endpoint-structure.md).
            company_id, remainder = request.query["company"].lower(), tail
        else:
            raise SimError(404, "BadRequest_NotFound", f"No resource at '{tail}'.")
        if company_id not in self.state.company_ids():
            raise SimError(404, "BadRequest_NotFound", f"The company '{company_id}' does not exist.")
        segments = []
        for part in remainder.split("/"):
            seg = _SEGMENT.match(part)
            if not seg:
                raise SimError(404, "BadRequest_NotFound", f"The segment '{part}' is not valid.")
            segments.append((seg.group(1), seg.group(2).lower() if seg.group(2) else None))
        journal_id: str | None = None
        if (
            len(segments) == 2
            and segments[0][0] == "customerPaymentJournals"
            and segments[0][1]
            and segments[1][0] == "customerPayments"
        ):
            journal_id = segments[0][1]
            if self.state.get_record(company_id, "customerPaymentJournals", journal_id) is None:
                raise SimError(404, "Internal_RecordNotFound", f"The journal {journal_id} does not exist.")
            segments = segments[1:]
        if len(segments) != 1:
            raise SimError(
                404, "BadRequest_NotFound", f"The path '{remainder}' is not supported by the simulator."
            )
        entity, record_id = segments[0]
        kind = ENTITIES.get(entity)
        if kind is None or kind.api != api:
            raise SimError(
                404,
                "BadRequest_NotFound",
                f"Resource not found for the segment '{entity}'.",
            )
        context = f"{self.base_url}/{api}/$metadata#companies({company_id})/" + (
            f"customerPaymentJournals({journal_id})/{entity}" if journal_id else entity
        )
        if record_id is None:
            if request.method != "GET":
                raise SimError(
                    405, "BadRequest_MethodNotAllowed", f"'{request.method}' is not allowed on '{entity}'."
                )
            return self.collection(request, company_id, kind, journal_id, context, f"{api}/{tail}")
        return self.entity(request, company_id, kind, record_id, journal_id, context + "/$entity")

    def _shape(
        self,
        company_id: str,
        kind: EntityKind,
        record: dict[str, Any],
        select: tuple[str, ...] | None,
        expand: tuple[ExpandItem, ...],
        related_index: dict[tuple[str, str], dict[str, list[dict[str, Any]]]] | None = None,
    ) -> dict[str, Any]:
        """One record as the API shows it. Call with `self.state.lock` held (records are not copied
        until here); `related_index` caches one lookup per expanded set for a whole page."""
        if select is not None:
            unknown = [f for f in select if f not in kind.template and f not in kind.navigation]
            if unknown:
                raise SimError(
                    400,
                    "BadRequest_NotFound",
                    f"Could not find a property named '{unknown[0]}' on type 'Microsoft.NAV.{kind.odata_type}'.",
                )
            out = {
                "@odata.etag": record["@odata.etag"],
                **{k: record[k] for k in kind.template if k in select},
            }
        else:
            out = dict(record)
        for item in expand:
            nav = kind.navigation.get(item.name)
            if nav is None:
                raise SimError(
                    400,
                    "BadRequest_NotFound",
                    f"Could not find a property named '{item.name}' on type 'Microsoft.NAV.{kind.odata_type}'.",
                )
            target = ENTITIES[nav.target]
            key = str(record[nav.local_key]).lower()
            index = related_index if related_index is not None else {}
            lookup = index.get((nav.target, nav.remote_key))
            if lookup is None:
                # Built once per page: a page of 1,000 invoices expanding `customer` used to copy
                # and scan every customer once per invoice.
                lookup = {}
                for r in self.state.ordered_view(company_id, nav.target):
                    lookup.setdefault(str(r[nav.remote_key]).lower(), []).append(r)
                index[(nav.target, nav.remote_key)] = lookup
            related = lookup.get(key, [])
            shaped = [self._shape(company_id, target, r, item.select, item.expand, index) for r in related]
            out[item.name] = shaped if nav.many else (shaped[0] if shaped else None)
        return out

    @staticmethod
    def _options(request: Request) -> tuple[tuple[str, ...] | None, tuple[ExpandItem, ...]]:
        select = parse_select(request.query["$select"]) if "$select" in request.query else None
        expand = parse_expand(request.query["$expand"]) if "$expand" in request.query else ()
        return select, expand

    def collection(
        self,
        request: Request,
        company_id: str,
        kind: EntityKind,
        journal_id: str | None,
        context: str,
        path: str,
    ) -> Response:
        q = request.query
        select, expand = self._options(request)
        page_size, applied = _page_size(request.headers.get("prefer", ""))
        headers = {"Preference-Applied": f"odata.maxpagesize={page_size}"} if applied else {}
        known = set(kind.template)
        predicate = parse_filter(q["$filter"], known, kind.odata_type).predicate if "$filter" in q else None
        with self.state.lock:
            # One page is found and copied under the lock; the rest of the set is never copied,
            # and a $skiptoken page starts where the last one ended (the view is in key order), so
            # paging through N records costs O(N), not O(N^2).
            view = self.state.ordered_view(company_id, kind.name)
            if "$skiptoken" in q:
                after = self.state.seq.get(q["$skiptoken"].lower())
                if after is None:
                    raise SimError(400, "BadRequest", "The $skiptoken is not valid.")
                seq = self.state.seq
                view = view[bisect.bisect_right(view, after, key=lambda r: seq.get(r["id"], 0)) :]
            candidates: Iterator[dict[str, Any]] = iter(view)
            if journal_id:
                candidates = (r for r in candidates if r["journalId"] == journal_id)
            if predicate is not None:
                candidates = filter(predicate, candidates)
            if "$skiptoken" not in q and "$skip" in q:
                candidates = itertools.islice(candidates, _non_negative(q["$skip"], "$skip"), None)
            limit = min(_non_negative(q["$top"], "$top"), page_size) if "$top" in q else page_size
            records = list(itertools.islice(candidates, limit + 1))
            next_link = None
            if "$top" in q:
                # With $top BC sends no nextLink (microsoft/AL#6858).
                records = records[:limit]
            elif len(records) > page_size:
                records = records[:page_size]
                params = {k: v for k, v in q.items() if k not in ("$skiptoken", "$skip")}
                params["$skiptoken"] = records[-1]["id"]
                next_link = (
                    f"{self.origin}/v2.0/{self.state.tenant_id}/{self.state.environment}/{path}?"
                    + urlencode(params, quote_via=quote, safe="$,()'")
                )
            index: dict[tuple[str, str], dict[str, list[dict[str, Any]]]] = {}
            value = [self._shape(company_id, kind, r, select, expand, index) for r in records]
        body: dict[str, Any] = {
            "@odata.context": context,
            "value": value,
        }
        if next_link:
            body["@odata.nextLink"] = next_link
        return json_response(200, body, headers)

    def entity(
        self,
        request: Request,
        company_id: str,
        kind: EntityKind,
        record_id: str,
        journal_id: str | None,
        context: str,
    ) -> Response:
        record = self.state.get_record(company_id, kind.name, record_id)
        if record is None or (journal_id and record["journalId"] != journal_id):
            raise SimError(
                404, "Internal_RecordNotFound", f"The {kind.odata_type} {record_id} does not exist."
            )
        if request.method == "GET":
            select, expand = self._options(request)
            with self.state.lock:
                shaped = self._shape(company_id, kind, record, select, expand)
            return json_response(200, {"@odata.context": context, **shaped})
        if request.method == "PATCH":
            changes = request.json()
            if not isinstance(changes, dict):
                raise SimError(400, "BadRequest", "The request body must be a JSON object.")
            updated = self.state.update_record(
                company_id, kind.name, record_id, changes, if_match=request.headers.get("if-match"), api=True
            )
            return json_response(200, {"@odata.context": context, **updated})
        if request.method == "DELETE":
            if_match = request.headers.get("if-match")
            if not if_match:
                raise SimError(
                    400,
                    "BadRequest_InvalidToken",
                    "Could not validate the client concurrency token required by the service. "
                    "Please provide a valid token in the client request.",
                )
            if if_match not in ("*", record["@odata.etag"]):
                raise SimError(409, "Request_EntityChanged", "Another user has already changed the record.")
            self.state.delete_record(company_id, kind.name, record_id)
            return Response(204)
        raise SimError(405, "BadRequest_MethodNotAllowed", f"'{request.method}' is not allowed here.")

    def companies(self, request: Request, company_id: str | None) -> Response:
        if request.method != "GET":
            raise SimError(405, "BadRequest_MethodNotAllowed", "Companies are read-only.")
        context = f"{self.base_url}/api/v2.0/$metadata#companies"
        with self.state.lock:
            companies = [dict(c) for c in self.state.companies.values()]
        if company_id is None:
            return json_response(200, {"@odata.context": context, "value": companies})
        for company in companies:
            if company["id"] == company_id:
                return json_response(200, {"@odata.context": context + "/$entity", **company})
        raise SimError(404, "BadRequest_NotFound", f"The company '{company_id}' does not exist.")

    # -- subscriptions -----------------------------------------------------------------------------

    async def _handshake(self, notification_url: str) -> None:
        parts = urlsplit(notification_url)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise SimError(
                400, "BadRequest", f"The notificationUrl '{notification_url}' is not an absolute URL."
            )
        assert self.notifier is not None
        ok, why = await handshake(self.notifier.client, notification_url)
        if not ok:
            # No echo, no subscription (BC docs api-reference/v2.0/dynamics-subscriptions).
            raise SimError(400, "BadRequest", f"The subscription could not be validated: {why}.")

    async def subscriptions(self, request: Request) -> Response:
        context = f"{self.base_url}/api/v2.0/$metadata#subscriptions"
        if request.method == "GET":
            return json_response(200, {"@odata.context": context, "value": self.state.list_subscriptions()})
        if request.method != "POST":
            raise SimError(
                405, "BadRequest_MethodNotAllowed", f"'{request.method}' is not allowed on subscriptions."
            )
        body = request.json()
        if not isinstance(body, dict):
            raise SimError(400, "BadRequest", "The request body must be a JSON object.")
        for name in ("notificationUrl", "resource"):
            if not isinstance(body.get(name), str) or not body[name]:
                raise SimError(
                    400, "BadRequest_RequiredParamNotProvided", f"The property '{name}' is required."
                )
        client_state = body.get("clientState") or ""
        if not isinstance(client_state, str) or len(client_state) > 2048:
            raise SimError(
                400, "Application_StringExceededLength", "clientState is longer than 2048 characters."
            )
        company_id, entity = self.state.check_resource(body["resource"])
        await self._handshake(body["notificationUrl"])
        created = self.state.add_subscription(
            body["notificationUrl"], body["resource"], client_state, company_id, entity
        )
        return json_response(201, {"@odata.context": context + "/$entity", **created})

    async def subscription(self, request: Request, sid: str) -> Response:
        context = f"{self.base_url}/api/v2.0/$metadata#subscriptions/$entity"
        if request.method == "GET":
            subs = {s["subscriptionId"]: s for s in self.state.list_subscriptions()}
            if sid not in subs:
                raise SimError(404, "BadRequest_NotFound", f"The subscription '{sid}' does not exist.")
            return json_response(200, {"@odata.context": context, **subs[sid]})
        if request.method not in ("PATCH", "DELETE"):
            raise SimError(405, "BadRequest_MethodNotAllowed", f"'{request.method}' is not allowed here.")
        current = self.state.find_subscription(sid, request.headers.get("if-match"))
        if request.method == "DELETE":
            self.state.delete_subscription(sid)
            return Response(204)
        changes = request.json()
        if not isinstance(changes, dict):
            raise SimError(400, "BadRequest", "The request body must be a JSON object.")
        changes = {
            k: v for k, v in changes.items() if k in ("notificationUrl", "clientState") and isinstance(v, str)
        }
        # Renewing repeats the handshake (BC docs api-reference/v2.0/dynamics-subscriptions).
        await self._handshake(changes.get("notificationUrl", current["notificationUrl"]))
        return json_response(200, {"@odata.context": context, **self.state.renew_subscription(sid, changes)})

    # -- control API -------------------------------------------------------------------------------

    async def control(self, request: Request, rest: str) -> Response:
        try:
            return await self._control(request, rest)
        except (ValueError, KeyError, TypeError) as exc:
            return json_response(400, {"error": {"code": "BadRequest", "message": str(exc)}})

    async def _control(self, request: Request, rest: str) -> Response:
        state = self.state
        method = request.method
        parts = rest.strip("/").split("/")
        if rest == "info" and method == "GET":
            return json_response(200, self.info())
        if rest == "stats" and method == "GET":
            return json_response(200, state.stats())
        if rest == "seed" and method == "POST":
            self.seed(str(request.json().get("seed", "demo")))
            return json_response(200, {"companies": state.company_ids()})
        if rest == "clock/advance" and method == "POST":
            advance = getattr(state.clock, "advance", None)
            if advance is None:
                raise ValueError("this simulator's clock cannot be advanced")
            moment = advance(timedelta(seconds=float(request.json()["seconds"])))
            return json_response(200, {"now": moment.isoformat()})
        if rest == "faults" and method == "POST":
            body = request.json()
            allowed = {f.name for f in fields(Fault)}
            unknown = set(body) - allowed
            if unknown:
                raise ValueError(f"unknown fault field(s): {', '.join(sorted(unknown))}")
            state.add_fault(Fault(**body))
            return json_response(201, {"faults": len(state.faults)})
        if rest == "faults" and method == "DELETE":
            state.clear_faults()
            return Response(204)
        if rest == "notifications/drop" and method == "POST":
            with state.lock:
                state.drop_notifications += int(request.json().get("count", 1))
            return json_response(200, {"drop_notifications": state.drop_notifications})
        if rest == "notifications/flush" and method == "POST":
            assert self.notifier is not None
            return json_response(200, {"outcomes": await self.notifier.send_due(force=True)})
        if rest == "notifications/deliveries" and method == "GET":
            with state.lock:
                return json_response(200, {"value": list(state.delivery_log)})
        if rest == "tokens/expire" and method == "POST":
            return json_response(200, {"expired": state.expire_tokens()})
        if rest == "requests" and method == "GET":
            with state.lock:
                return json_response(200, {"value": list(state.request_log)})
        if rest == "requests" and method == "DELETE":
            with state.lock:
                state.request_log.clear()
                state.max_in_flight = state.in_flight
            return Response(204)
        if rest == "subscriptions" and method == "GET":
            return json_response(200, {"value": state.list_subscriptions()})
        if rest == "config" and method == "POST":
            body = request.json()
            with state.lock:
                if "collection_threshold" in body:
                    state.collection_threshold = int(body["collection_threshold"])
                if "notification_window_seconds" in body:
                    state.notification_window = timedelta(seconds=float(body["notification_window_seconds"]))
            return json_response(200, {"collection_threshold": state.collection_threshold})
        if len(parts) in (3, 4) and parts[0] == "companies":
            company_id, entity = parts[1], parts[2]
            if len(parts) == 3 and method == "GET":
                return json_response(200, {"value": state.list_records(company_id, entity)})
            if len(parts) == 3 and method == "POST":
                return json_response(201, state.create_record(company_id, entity, request.json()))
            if len(parts) == 4 and method == "PATCH":
                return json_response(200, state.update_record(company_id, entity, parts[3], request.json()))
            if len(parts) == 4 and method == "DELETE":
                state.delete_record(company_id, entity, parts[3])
                return Response(204)
        return json_response(
            404,
            {"error": {"code": "BadRequest_NotFound", "message": f"no control route {method} /_sim/{rest}"}},
        )


def _non_negative(value: str, name: str) -> int:
    try:
        number = int(value)
    except ValueError:
        number = -1
    if number < 0:
        raise SimError(400, "BadRequest", f"The value of {name} must be a non-negative integer.")
    return number


def _page_size(prefer: str) -> tuple[int, bool]:
    for part in prefer.split(","):
        name, _, value = part.strip().partition("=")
        if name.strip().lower() == "odata.maxpagesize":
            try:
                size = int(value.strip())
            except ValueError:
                continue
            if size > 0:
                return min(size, MAX_PAGE_SIZE), True
    return MAX_PAGE_SIZE, False
