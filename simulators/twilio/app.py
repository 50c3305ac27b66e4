"""The Twilio simulator's ASGI app: Messages, Calls, Verify and Accounts, with its control surface.

IncomingPhoneNumbers (GET list, `PhoneNumber` filter, Twilio's paging envelope) is seeded with the
configured sender numbers, each able to text and call; `set_incoming_number` / `remove_incoming_number`
(or POST /_sim/incoming-numbers) change that. Messaging Services (messaging.twilio.com) are not served:
the simulator has no checked contract for that API.

Faithfulness (contract: Twilio's OpenAPI, github.com/twilio/twilio-oai `twilio_api_v2010.json` and
`twilio_verify_v2.json`, and the docs pages cited where the behaviour is implemented): HTTP Basic with
AccountSid:AuthToken or ApiKeySid:Secret (else 401 / https://www.twilio.com/docs/errors/20003); only
form bodies are read (a JSON body gets https://www.twilio.com/docs/errors/21604 'To' required); Twilio's
error body; 201 on create; RFC 2822 dates on Messages/Calls, ISO 8601 on Verify; status callbacks
signed with the auth token by the twilio SDK's own RequestValidator
(https://www.twilio.com/docs/usage/webhooks/webhooks-security); no callback for the initial status;
duplicates and out-of-order delivery on request.

The app's lifespan starts the lifecycle worker and the callback HTTP client on the serving loop
(simulators/loopback.py runs it); simulators/twilio/simulator.py adds the server and the blocking calls.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import json
import logging
import threading
import time
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass, field
from datetime import timedelta
from typing import Any
from urllib.parse import parse_qs, parse_qsl, urlencode

import httpx
from twilio.request_validator import RequestValidator

from simulators.clock import Clock, SystemClock
from simulators.twilio.state import (
    ApiResult,
    Callback,
    CallOutcome,
    Credentials,
    Faults,
    MessageOutcome,
    NumberBehaviour,
    Timings,
    TwilioSimState,
    new_sid,
    twilio_error,
)

logger = logging.getLogger(__name__)

MAX_BODY_BYTES = 1_048_576
LOG_LIMIT = 10_000
SECRET_HEADERS = frozenset({"authorization", "cookie"})

ASGIReceive = Callable[[], Awaitable[dict[str, Any]]]
ASGISend = Callable[[dict[str, Any]], Awaitable[None]]

SIGNATURE_HEADER = "X-Twilio-Signature"
FORM_CONTENT_TYPE = "application/x-www-form-urlencoded"


class _DropConnection(Exception):
    """Raised after the response headers went out: uvicorn closes the socket mid-response."""


class _QuietDrops(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not (record.exc_info and isinstance(record.exc_info[1], _DropConnection))


logging.getLogger("uvicorn.error").addFilter(_QuietDrops())


@dataclass
class RecordedRequest:
    """One API request as the simulator saw it (Authorization removed; auth_user says who)."""

    method: str
    path: str
    query: list[tuple[str, str]]
    headers: dict[str, str]
    content_type: str
    form: list[tuple[str, str]]
    raw_body: str
    auth_user: str | None
    status: int = 0

    def form_dict(self) -> dict[str, list[str]]:
        out: dict[str, list[str]] = {}
        for k, v in self.form:
            out.setdefault(k, []).append(v)
        return out


@dataclass
class CallbackRecord:
    """One HTTP request the simulator made to the application (status callback or inbound webhook)."""

    kind: str
    url: str
    method: str
    params: list[tuple[str, str]]
    signature: str
    idempotency_token: str
    status: int | None = None
    error: str | None = None
    copy: int = 0
    at: float = field(default_factory=time.time)


def _media_type(content_type: str) -> str:
    return content_type.split(";", 1)[0].strip().lower()


def _parse_basic(header: str | None) -> tuple[str | None, str | None]:
    if not header or not header.lower().startswith("basic "):
        return None, None
    try:
        decoded = base64.b64decode(header[6:].strip(), validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError):
        return None, None
    user, sep, password = decoded.partition(":")
    return (user, password) if sep else (None, None)


class _FormParams(dict[str, list[str]]):
    """Form parameters with repeated names, read by the SDK's RequestValidator through `getlist`."""

    def getlist(self, name: str) -> list[str]:
        return self[name]


def sign(url: str, params: list[tuple[str, str]], auth_token: str) -> str:
    """The X-Twilio-Signature Twilio sends with a request to `url` carrying these form params, as the
    twilio SDK computes it (https://www.twilio.com/docs/usage/webhooks/webhooks-security)."""
    form = _FormParams()
    for name, value in params:
        form.setdefault(name, []).append(value)
    signature: str = RequestValidator(auth_token).compute_signature(url, form)
    return signature


class TwilioApp:
    """The ASGI app (`await app(scope, receive, send)`), its request and callback logs, and the control
    surface, in Python and over HTTP under `/_sim/...`."""

    def __init__(
        self,
        *,
        clock: Clock | None = None,
        credentials: Credentials | None = None,
        timings: Timings | None = None,
        extra_numbers: tuple[str, ...] = (),
        tick_interval: float = 0.05,
        auto_advance: bool = True,
        inbound_url: str | None = None,
        callback_timeout: float = 5.0,
    ) -> None:
        self.clock: Clock = clock or SystemClock()
        self.credentials = credentials or Credentials.generate()
        self.state = TwilioSimState(
            self.credentials, self.clock, timings=timings, extra_numbers=extra_numbers
        )
        self.state.inbound_url = inbound_url
        self.tick_interval = tick_interval
        self.auto_advance = auto_advance
        self.callback_timeout = callback_timeout
        self._requests: deque[RecordedRequest] = deque(maxlen=LOG_LIMIT)
        self._callbacks: deque[CallbackRecord] = deque(maxlen=LOG_LIMIT)
        self._log_lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._http: httpx.AsyncClient | None = None
        self._deliver_lock: asyncio.Lock | None = None
        self.base_url = ""

    # ------------------------------------------------------------------ connection facts

    @property
    def verify_base_url(self) -> str:
        return self.base_url  # one server answers both hosts (api.twilio.com, verify.twilio.com)

    @property
    def account_sid(self) -> str:
        return self.credentials.account_sid

    @property
    def auth_token(self) -> str:
        return self.credentials.auth_token

    @property
    def api_key_sid(self) -> str:
        return self.credentials.api_key_sid

    @property
    def api_key_secret(self) -> str:
        return self.credentials.api_key_secret

    @property
    def from_number(self) -> str:
        return self.credentials.from_number

    @property
    def messaging_service_sid(self) -> str:
        return self.credentials.messaging_service_sid

    @property
    def verify_service_sid(self) -> str:
        return self.credentials.verify_service_sid

    def info(self) -> dict[str, str]:
        """What a client needs (the JSON line the CLI prints)."""
        return {
            "base_url": self.base_url,
            "verify_base_url": self.verify_base_url,
            "control_url": f"{self.base_url}/_sim",
            "account_sid": self.account_sid,
            "auth_token": self.auth_token,
            "api_key_sid": self.api_key_sid,
            "api_key_secret": self.api_key_secret,
            "from_number": self.from_number,
            "messaging_service_sid": self.messaging_service_sid,
            "verify_service_sid": self.verify_service_sid,
        }

    def connector_env(self) -> dict[str, str]:
        """The MLC_TWILIO__* variables that point a connector process at this simulator."""
        return {
            "MLC_TWILIO__API_BASE_URL": self.base_url,
            "MLC_TWILIO__VERIFY_BASE_URL": self.verify_base_url,
            "MLC_TWILIO__ACCOUNT_SID": self.account_sid,
            "MLC_TWILIO__API_KEY_SID": self.api_key_sid,
            "MLC_TWILIO__API_KEY_SECRET": self.api_key_secret,
            "MLC_TWILIO__AUTH_TOKEN": self.auth_token,
            "MLC_TWILIO__FROM_NUMBER": self.from_number,
            "MLC_TWILIO__VERIFY_SERVICE_SID": self.verify_service_sid,
        }

    # ------------------------------------------------------------------ control surface (Python)

    def requests(self, *, path_contains: str | None = None) -> list[RecordedRequest]:
        with self._log_lock:
            items = list(self._requests)
        return [r for r in items if path_contains is None or path_contains in r.path]

    def callbacks(self, *, kind: str | None = None) -> list[CallbackRecord]:
        with self._log_lock:
            items = list(self._callbacks)
        return [c for c in items if kind is None or c.kind == kind]

    def clear_logs(self) -> None:
        with self._log_lock:
            self._requests.clear()
            self._callbacks.clear()

    def messages(self) -> list[dict[str, Any]]:
        with self.state.lock:
            return [self.state.message_json(m) for m in self.state.messages.values()]

    def calls(self) -> list[dict[str, Any]]:
        with self.state.lock:
            return [self.state.call_json(c) for c in self.state.calls.values()]

    def verifications(self) -> list[dict[str, Any]]:
        """Every verification with its code (what the handset would have received)."""
        with self.state.lock:
            return [
                {
                    "sid": v.sid,
                    "service_sid": v.service_sid,
                    "to": v.to,
                    "channel": v.channel,
                    "code": v.code,
                    "status": v.status,
                    "send_attempts": len(v.send_attempts),
                    "check_attempts": v.check_attempts,
                }
                for v in self.state.verifications.values()
            ]

    def verification_code(self, to: str) -> str | None:
        """The code most recently sent to `to` (None if none)."""
        matches = [v for v in self.verifications() if v["to"] == to]
        return str(matches[-1]["code"]) if matches else None

    def set_number(
        self,
        number: str,
        outcome: MessageOutcome | str = MessageOutcome.DELIVERED,
        *,
        error_code: int | None = None,
        call_outcome: CallOutcome | str = CallOutcome.COMPLETED,
    ) -> None:
        """How sends to `number` end: delivered, undelivered (30003), failed (30008), sent (no DLR),
        reject (API error, 21211 unless error_code says e.g. 21614); calls: completed/busy/no-answer/failed."""
        with self.state.lock:
            self.state.behaviours[number] = NumberBehaviour(
                MessageOutcome(outcome), error_code, CallOutcome(call_outcome)
            )

    def incoming_numbers(self) -> list[dict[str, Any]]:
        """The account's phone numbers as IncomingPhoneNumbers serves them."""
        with self.state.lock:
            return [self.state.incoming_number_json(n) for n in self.state.incoming.values()]

    def set_incoming_number(
        self, number: str, *, sms: bool = True, voice: bool = True, mms: bool = True, fax: bool = False
    ) -> str:
        """Give the account `number` (E.164) with these capabilities, or change them. Returns its PN sid.
        A number without SMS is refused as a From (21606), as Twilio does."""
        return self.state.set_incoming_number(number, sms=sms, voice=voice, mms=mms, fax=fax).sid

    def remove_incoming_number(self, number: str) -> bool:
        """Release `number`: the account no longer owns it. False if it did not."""
        return self.state.remove_incoming_number(number)

    def fail_next(
        self, count: int, *, status: int = 500, code: int | None = None, retry_after: float | None = None
    ) -> None:
        """The next `count` API requests answer `status` without being processed (429 -> code 20429)."""
        with self.state.lock:
            faults = self.state.faults
            faults.error_next = count
            faults.error_status = status
            faults.error_code = code if code is not None else (20429 if status == 429 else 20500)
            faults.error_retry_after = retry_after

    def delay_next(self, count: int, seconds: float) -> None:
        """The next `count` API requests are processed, then answered `seconds` later."""
        with self.state.lock:
            self.state.faults.delay_next = count
            self.state.faults.delay_seconds = seconds

    def drop_after_accept_next(self, count: int) -> None:
        """The next `count` API requests are processed (the message exists), then the connection drops."""
        with self.state.lock:
            self.state.faults.drop_after_accept_next = count

    def clear_faults(self) -> None:
        with self.state.lock:
            self.state.faults = Faults()

    def set_rate_limit(self, messages_per_second: float | None, *, retry_after: float | None = None) -> None:
        """Per-sender budget; over it, Messages create answers 429 / 20429. None switches it off."""
        with self.state.lock:
            self.state.rate_limit_mps = messages_per_second
            self.state.rate_limit_retry_after = retry_after
            self.state._buckets.clear()

    def set_callback_behaviour(self, *, duplicates: int = 0, out_of_order: bool = False) -> None:
        """duplicates: extra copies of every callback; out_of_order: a message's callbacks are held
        until it is final and then sent newest first (Twilio promises neither exactly-once nor order)."""
        with self.state.lock:
            self.state.callback_duplicates = duplicates
            self.state.callbacks_out_of_order = out_of_order

    def set_inbound_url(self, url: str | None) -> None:
        with self.state.lock:
            self.state.inbound_url = url

    def advance_clock(self, seconds: float) -> None:
        advance = getattr(self.clock, "advance", None)
        if advance is None:
            raise TypeError(f"{type(self.clock).__name__} cannot be advanced")
        advance(timedelta(seconds=seconds))

    # ------------------------------------------------------------------ lifecycles and callbacks

    async def _worker(self) -> None:
        while True:
            await asyncio.sleep(self.tick_interval)
            try:
                if self.auto_advance:
                    self.state.advance()
                await self._flush_callbacks()
            except Exception:
                logger.exception("twilio simulator worker step failed")

    async def _settle(self) -> dict[str, int]:
        steps = self.state.advance(force=True)
        delivered = await self._flush_callbacks()
        return {"steps": steps, "callbacks": delivered}

    async def _flush_callbacks(self) -> int:
        assert self._deliver_lock is not None
        delivered = 0
        async with self._deliver_lock:
            while True:
                batch = self.state.take_callbacks()
                if not batch:
                    return delivered
                for callback in batch:
                    with self.state.lock:
                        copies = 1 + self.state.callback_duplicates
                    for copy in range(copies):
                        await self._deliver("status", callback, copy)
                        delivered += 1

    async def _deliver(self, kind: str, callback: Callback, copy: int) -> int | None:
        assert self._http is not None
        url, params = callback.url, callback.params
        if callback.method == "GET":
            url = url + ("&" if "?" in url else "?") + urlencode(params)
            params = []
        signature = sign(url, params, self.credentials.auth_token)
        headers = {
            SIGNATURE_HEADER: signature,
            "I-Twilio-Idempotency-Token": callback.token,
            "User-Agent": "TwilioProxy/1.1",
        }
        if callback.method != "GET":
            headers["Content-Type"] = FORM_CONTENT_TYPE
        record = CallbackRecord(
            kind, url, callback.method, list(params), signature, callback.token, copy=copy
        )
        # Twilio retries a failed connection once by default (connection overrides: rc=1).
        for attempt in range(2):
            try:
                response = await self._http.request(
                    callback.method,
                    url,
                    content=urlencode(params).encode() if callback.method != "GET" else None,
                    headers=headers,
                )
                record.status, record.error = response.status_code, None
                break
            except httpx.HTTPError as exc:
                record.error = f"{type(exc).__name__}: {exc}"
                if attempt == 1:
                    break
        with self._log_lock:
            self._callbacks.append(record)
        return record.status

    async def _inbound(self, from_: str, body: str, to: str | None) -> int | None:
        _message, params = self.state.inbound_message(from_, body, to)
        with self.state.lock:
            url = self.state.inbound_url
        if not url:
            return None
        return await self._deliver(
            "inbound", Callback(url=url, method="POST", params=params, owner_sid=""), 0
        )

    # ------------------------------------------------------------------ ASGI

    async def __call__(self, scope: dict[str, Any], receive: ASGIReceive, send: ASGISend) -> None:
        if scope["type"] == "lifespan":
            await self._lifespan(receive, send)
            return
        await self._asgi(scope, receive, send)

    async def _lifespan(self, receive: ASGIReceive, send: ASGISend) -> None:
        worker: asyncio.Task[None] | None = None
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                self._loop = asyncio.get_running_loop()
                self._deliver_lock = asyncio.Lock()
                self._http = httpx.AsyncClient(timeout=self.callback_timeout, follow_redirects=False)
                worker = asyncio.create_task(self._worker())
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                if worker is not None:
                    worker.cancel()
                    with contextlib.suppress(asyncio.CancelledError):
                        await worker
                if self._http is not None:
                    await self._http.aclose()
                await send({"type": "lifespan.shutdown.complete"})
                return

    async def _asgi(self, scope: dict[str, Any], receive: ASGIReceive, send: ASGISend) -> None:
        if scope["type"] != "http":
            return
        body = b""
        while True:
            event = await receive()
            body += event.get("body", b"")
            if len(body) > MAX_BODY_BYTES:
                await self._respond(send, ApiResult(413, {"message": "request body too large"}))
                return
            if not event.get("more_body"):
                break
        path: str = scope["path"]
        if path.startswith("/_sim/") or path == "/_sim":
            status, payload = await self._control(scope["method"], path, body)
            await self._respond(send, ApiResult(status, payload))
            return
        await self._api(scope, body, send)

    async def _respond(self, send: ASGISend, result: ApiResult, *, drop: bool = False) -> None:
        payload = b"" if result.body is None else json.dumps(result.body).encode()
        headers = [
            (b"content-type", b"application/json; charset=utf-8"),
            (b"content-length", str(len(payload)).encode()),
            (b"twilio-request-id", new_sid("RQ").encode()),
        ]
        headers += [(k.lower().encode(), v.encode()) for k, v in result.headers]
        await send({"type": "http.response.start", "status": result.status, "headers": headers})
        if drop:
            raise _DropConnection("connection dropped after the request was processed (injected fault)")
        await send({"type": "http.response.body", "body": payload})

    async def _api(self, scope: dict[str, Any], body: bytes, send: ASGISend) -> None:
        method: str = scope["method"]
        path: str = scope["path"]
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        content_type = headers.get("content-type", "")
        query = parse_qsl(scope.get("query_string", b"").decode("utf-8", "replace"), keep_blank_values=True)
        form_pairs: list[tuple[str, str]] = []
        if method == "POST" and _media_type(content_type) == FORM_CONTENT_TYPE:
            form_pairs = parse_qsl(body.decode("utf-8", "replace"), keep_blank_values=True)
        user, password = _parse_basic(headers.get("authorization"))
        record = RecordedRequest(
            method=method,
            path=path,
            query=query,
            headers={k: v for k, v in headers.items() if k not in SECRET_HEADERS},
            content_type=content_type,
            form=form_pairs,
            raw_body=body[:4096].decode("utf-8", "replace"),
            auth_user=self.state.check_auth(user, password),
        )
        with self._log_lock:
            self._requests.append(record)
        if record.auth_user is None:
            result = twilio_error(
                401, 20003, "Authenticate", (("WWW-Authenticate", 'Basic realm="Twilio API"'),)
            )
            record.status = result.status
            await self._respond(send, result)
            return
        error, delay, drop = self.state.take_fault()
        if error is not None:
            record.status = error.status
            await self._respond(send, error)
            return
        form: dict[str, list[str]] = {}
        for k, v in form_pairs:
            form.setdefault(k, []).append(v)
        result = self._route(method, path, form, parse_qs(scope.get("query_string", b"").decode()), record)
        record.status = result.status
        if delay:
            await asyncio.sleep(delay)
        await self._respond(send, result, drop=drop)

    def _route(
        self,
        method: str,
        path: str,
        form: dict[str, list[str]],
        query: dict[str, list[str]],
        record: RecordedRequest,
    ) -> ApiResult:
        state = self.state
        not_found = twilio_error(404, 20404, f"The requested resource {path} was not found")
        parts = path.strip("/").split("/")
        if parts[:2] == ["2010-04-01", "Accounts"] and len(parts) >= 3:
            account = parts[2].removesuffix(".json")
            if account != state.creds.account_sid:
                return twilio_error(401, 20003, "Authenticate")
            rest = parts[3:]
            if not rest and parts[2].endswith(".json"):
                return (
                    ApiResult(200, state.account_json(record.auth_user or ""))
                    if method == "GET"
                    else not_found
                )
            if rest == ["Messages.json"]:
                if method == "POST":
                    return state.create_message(form)
                if method == "GET":
                    return state.list_messages(query, path)
            if len(rest) == 2 and rest[0] == "Messages" and rest[1].endswith(".json") and method == "GET":
                return state.fetch_message(rest[1].removesuffix(".json"), path)
            if rest == ["IncomingPhoneNumbers.json"] and method == "GET":
                return state.list_incoming_numbers(query, path)
            if rest == ["Calls.json"] and method == "POST":
                return state.create_call(form)
            if len(rest) == 2 and rest[0] == "Calls" and rest[1].endswith(".json") and method == "GET":
                return state.fetch_call(rest[1].removesuffix(".json"), path)
            return not_found
        if parts[:2] == ["v2", "Services"]:
            rest = parts[2:]
            if not rest and method == "POST":
                return state.create_service(form)
            if len(rest) == 1 and method == "GET":
                return state.fetch_service(rest[0], path)
            if len(rest) == 2 and rest[1] == "Verifications" and method == "POST":
                return state.start_verification(rest[0], form, path)
            if len(rest) == 2 and rest[1] == "VerificationCheck" and method == "POST":
                return state.check_verification(rest[0], form, path)
            if len(rest) == 3 and rest[1] == "Verifications":
                if method == "GET":
                    return state.fetch_verification(rest[0], rest[2], path)
                if method == "POST":
                    return state.update_verification(rest[0], rest[2], form, path)
        return not_found

    # ------------------------------------------------------------------ control surface (HTTP)

    async def _control(self, method: str, path: str, body: bytes) -> tuple[int, dict[str, Any]]:
        try:
            data: dict[str, Any] = json.loads(body) if body.strip() else {}
            if not isinstance(data, dict):
                raise ValueError("expected a JSON object")
        except ValueError as exc:
            return 400, {"error": f"invalid JSON body: {exc}"}
        op = path.removeprefix("/_sim").strip("/")
        try:
            if method == "GET":
                getters: dict[str, Callable[[], Any]] = {
                    "info": self.info,
                    "requests": lambda: [asdict(r) for r in self.requests()],
                    "callbacks": lambda: [asdict(c) for c in self.callbacks()],
                    "messages": self.messages,
                    "calls": self.calls,
                    "verifications": self.verifications,
                    "incoming-numbers": self.incoming_numbers,
                }
                if op in getters:
                    return 200, {"items": getters[op]()} if op != "info" else getters[op]()
            elif method == "POST":
                if op == "settle":
                    return 200, await self._settle()
                if op == "inbound":
                    status = await self._inbound(str(data["from"]), str(data["body"]), data.get("to"))
                    return 200, {"webhook_status": status}
                if op == "faults":
                    if "error_next" in data:
                        self.fail_next(
                            int(data["error_next"]),
                            status=int(data.get("status", 500)),
                            code=data.get("code"),
                            retry_after=data.get("retry_after"),
                        )
                    if "delay_next" in data:
                        self.delay_next(int(data["delay_next"]), float(data.get("delay_seconds", 1.0)))
                    if "drop_after_accept_next" in data:
                        self.drop_after_accept_next(int(data["drop_after_accept_next"]))
                    if data.get("clear"):
                        self.clear_faults()
                    return 200, {"ok": True}
                if op == "rate":
                    self.set_rate_limit(data.get("messages_per_second"), retry_after=data.get("retry_after"))
                    return 200, {"ok": True}
                if op == "numbers":
                    self.set_number(
                        str(data["number"]),
                        data.get("outcome", "delivered"),
                        error_code=data.get("error_code"),
                        call_outcome=data.get("call_outcome", "completed"),
                    )
                    return 200, {"ok": True}
                if op == "incoming-numbers":
                    number = str(data["number"])
                    if data.get("remove"):
                        return 200, {"removed": self.remove_incoming_number(number)}
                    flags = {k: bool(data.get(k, k != "fax")) for k in ("sms", "voice", "mms", "fax")}
                    return 200, {"sid": self.set_incoming_number(number, **flags)}
                if op == "callbacks":
                    self.set_callback_behaviour(
                        duplicates=int(data.get("duplicates", 0)), out_of_order=bool(data.get("out_of_order"))
                    )
                    return 200, {"ok": True}
                if op == "inbound-url":
                    self.set_inbound_url(data.get("url"))
                    return 200, {"ok": True}
                if op == "clock/advance":
                    self.advance_clock(float(data["seconds"]))
                    return 200, {"now": self.clock.now().isoformat()}
                if op == "clear-logs":
                    self.clear_logs()
                    return 200, {"ok": True}
        except (KeyError, TypeError, ValueError) as exc:
            return 400, {"error": f"{op}: {type(exc).__name__}: {exc}"}
        return 404, {"error": f"unknown control operation {method} /_sim/{op}"}
