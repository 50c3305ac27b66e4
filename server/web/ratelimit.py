"""Rate limits and lockout on the bearer API and the audit sign-in (an ASGI middleware).

    /api/*, /metrics, /audit pages sent a bearer      per token; per address when no token is sent
    POST /audit/login                                 per address and per token typed

Counts live in the store (server/store/ratelimits.py) in fixed windows, so every instance on one
database shares them. A request over a limit is answered 429 with Retry-After, the seconds to the
window's end (RFC 9110 section 10.2.3, https://www.rfc-editor.org/rfc/rfc9110#name-retry-after;
429 is RFC 6585 section 4). Refused credentials (answers 401 to a request that presented a token)
count separately, per address and per token: `lockout_failures` of them within a window lock the
address (or token) out for `lockout_seconds`, answered 429 even for the right token, and the start
of each lockout is one audit event naming the address or a prefix of the token's hash.

Tokens are only ever hashed (SHA-256) before they are counted, stored or logged. The webhooks and
the probes are never limited: BC deletes every subscription on a URL that answers a 4xx other than
408/429, Twilio's callbacks are checked by their signature, and a probe answered 429 would take a
healthy instance out of service. The client is the socket peer; X-Forwarded-For is read only when
the peer is one of `trusted_proxies`.

When the store cannot be reached the request is let through (and logged): the limits are a brake
on guessing, the token check itself needs no database, and /metrics must still answer then.
"""

from __future__ import annotations

import hashlib
import ipaddress
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum
from typing import TypeVar
from urllib.parse import parse_qs

import anyio.to_thread
import sqlalchemy as sa
from litestar.enums import ScopeType
from litestar.types import ASGIApp, Message, Receive, ReceiveMessage, Scope, Send

from server.metrics import count_rate_limited
from server.runtime.logs import get_logger
from server.services import Services
from server.settings import RateLimitSettings
from server.store.audit import record_audit
from server.store.db import session_scope
from server.store.ratelimits import active_lockout, count_hit, prune_expired, start_lockout

log = get_logger("ml_connector.ratelimit")
T = TypeVar("T")

LOCKOUT_ACTION = "rate-limit-lockout"
# The sign-in form is a token and a return path: a body larger than this is not read for a token
# (the handler still refuses it), so a large body cannot make the limiter buffer it.
FORM_READ_LIMIT = 8192
PRUNE_EVERY = timedelta(minutes=1)

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


class Surface(StrEnum):
    API = "api"
    LOGIN = "login"


@dataclass(frozen=True)
class Client:
    ip: str
    token_key: str | None  # the token's hash; None when no token was presented


@dataclass(frozen=True)
class Refusal:
    reason: str  # ip | token | lockout (the metric's label)
    retry_after: int


def surface_of(scope: Scope) -> Surface | None:
    """Which limits apply; None for everything else (webhooks, probes, static files, the schema)."""
    path: str = scope.get("path", "")
    if path == "/audit/login":
        return Surface.LOGIN if scope.get("method") == "POST" else None
    if path.startswith("/api/") or path == "/metrics":
        return Surface.API
    if (path == "/audit" or path.startswith("/audit/")) and not path.startswith("/audit/static"):
        # Browsers come with the session cookie the sign-in set; scripts with the bearer token.
        return Surface.API if header(scope, b"authorization") else None
    return None


def header(scope: Scope, name: bytes) -> str:
    values = [value.decode("latin-1") for key, value in scope.get("headers", ()) if key == name]
    return ",".join(values)


def token_key(token: str) -> str | None:
    """What a presented token is counted and stored as: a SHA-256 prefix (128 bits), never the token."""
    if not token:
        return None
    return hashlib.sha256(token.encode("utf-8", "surrogatepass")).hexdigest()[:32]


def bearer_token(scope: Scope) -> str:
    scheme, _, token = header(scope, b"authorization").partition(" ")
    return token.strip() if scheme.lower() == "bearer" else ""


def parse_networks(values: Sequence[str]) -> tuple[Network, ...]:
    return tuple(ipaddress.ip_network(value, strict=False) for value in values)


def _address(value: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        return ipaddress.ip_address(value.strip())
    except ValueError:
        return None


def client_ip(scope: Scope, trusted: tuple[Network, ...]) -> str:
    """The socket peer; behind trusted proxies, the nearest X-Forwarded-For hop that is not one of them.

    Read from the right: each proxy appends the address it saw, so entries left of the first
    untrusted hop were written by the client and prove nothing.
    """
    peer = (scope.get("client") or ("unknown",))[0] or "unknown"
    peer_address = _address(peer)
    if peer_address is None:
        return peer[:64]
    if not trusted or not any(peer_address in net for net in trusted):
        return str(peer_address)
    hops = [hop for hop in header(scope, b"x-forwarded-for").split(",") if hop.strip()]
    for hop in reversed(hops):
        address = _address(hop)
        if address is None:
            break
        if not any(address in net for net in trusted):
            return str(address)
    return str(peer_address)


def mask(scope_name: str, key: str) -> str:
    """How the audit and the logs name a locked-out key: the address, or a short prefix of a token's hash."""
    return f"ip:{key}" if scope_name.endswith("ip") else f"token:sha256:{key[:8]}"


def _seconds_until(end: datetime, now: datetime) -> int:
    return max(1, math.ceil((end - now).total_seconds()))


class RateLimiter:
    """The store side of the limits, one call per request (run in a worker thread)."""

    def __init__(self, services: Services, limits: RateLimitSettings) -> None:
        self.services = services
        self.limits = limits
        self._next_prune: datetime | None = None

    def admit(self, surface: Surface, client: Client) -> Refusal | None:
        """Count this request; a Refusal when a lockout is active or a limit is passed."""
        limits = self.limits
        now = self.services.clock.now()
        with session_scope(self.services.db) as session:
            locks = [("lock-ip", client.ip)]
            if client.token_key:
                locks.append(("lock-token", client.token_key))
            ends = active_lockout(session, locks, now=now)
            if ends is not None:
                return Refusal("lockout", _seconds_until(ends, now))
            counted: list[tuple[str, str, str, int, int]] = []  # reason, scope, key, limit, window
            if surface is Surface.LOGIN:
                counted.append(
                    ("ip", "login-ip", client.ip, limits.login_attempts, limits.login_window_seconds)
                )
                if client.token_key:
                    counted.append(
                        (
                            "token",
                            "login-token",
                            client.token_key,
                            limits.login_attempts,
                            limits.login_window_seconds,
                        )
                    )
            elif client.token_key:
                counted.append(
                    ("token", "api-token", client.token_key, limits.api_per_token, limits.api_window_seconds)
                )
            else:
                counted.append(("ip", "api-ip", client.ip, limits.api_per_ip, limits.api_window_seconds))
            refusal: Refusal | None = None
            for reason, scope_name, key, limit, window in counted:
                hit = count_hit(session, scope_name, key, now=now, window_seconds=window)
                if hit.count > limit:
                    wait = _seconds_until(hit.window.end, now)
                    if refusal is None or wait > refusal.retry_after:
                        refusal = Refusal(reason, wait)
            if self._next_prune is None or now >= self._next_prune:
                prune_expired(session, now=now)
                self._next_prune = now + PRUNE_EVERY
        return refusal

    def record_failure(self, surface: Surface, client: Client) -> list[str]:
        """Count a refused credential; returns the keys (masked) whose lockout this failure started."""
        limits = self.limits
        now = self.services.clock.now()
        assert client.token_key is not None
        started: list[str] = []
        with session_scope(self.services.db) as session:
            for fail_scope, lock_scope, key in (
                ("fail-ip", "lock-ip", client.ip),
                ("fail-token", "lock-token", client.token_key),
            ):
                hit = count_hit(
                    session, fail_scope, key, now=now, window_seconds=limits.lockout_window_seconds
                )
                if hit.count < limits.lockout_failures:
                    continue
                until = now + timedelta(seconds=limits.lockout_seconds)
                if not start_lockout(
                    session, lock_scope, key, window=hit.window, failures=hit.count, until=until, now=now
                ):
                    continue
                subject = mask(lock_scope, key)
                record_audit(
                    session,
                    actor="rate-limit",
                    action=LOCKOUT_ACTION,
                    subject=subject,
                    now=now,
                    details={
                        "surface": surface.value,
                        "failures": hit.count,
                        "window_seconds": limits.lockout_window_seconds,
                        "seconds": limits.lockout_seconds,
                        "until": until.isoformat(),
                    },
                )
                started.append(subject)
        return started


async def _buffer_body(receive: Receive, limit: int) -> tuple[list[ReceiveMessage], bytes | None]:
    """Read the request body up to `limit` bytes; the messages read, and the body (None when larger)."""
    messages: list[ReceiveMessage] = []
    body = b""
    while True:
        message = await receive()
        messages.append(message)
        if message["type"] != "http.request":
            return messages, None
        body += message.get("body", b"")
        if len(body) > limit:
            return messages, None
        if not message.get("more_body", False):
            return messages, body


def _replay(messages: list[ReceiveMessage], receive: Receive) -> Receive:
    async def replayed() -> ReceiveMessage:
        if messages:
            return messages.pop(0)
        return await receive()

    return replayed


def form_token(body: bytes | None, content_type: str) -> str:
    if body is None or not content_type.lower().startswith("application/x-www-form-urlencoded"):
        return ""
    values = parse_qs(body.decode("utf-8", "replace"), keep_blank_values=True).get("token", [""])
    return values[0].strip()


def _retry_text(seconds: int) -> str:
    minutes = math.ceil(seconds / 60)
    return f"{minutes} minute" + ("" if minutes == 1 else "s")


async def send_refusal(send: Send, services: Services, surface: Surface, refusal: Refusal) -> None:
    """The 429: the sign-in form again for the sign-in page, JSON like Litestar's errors elsewhere."""
    import json

    headers: list[tuple[bytes, bytes]] = [(b"retry-after", str(refusal.retry_after).encode("ascii"))]
    if surface is Surface.LOGIN:
        from server.web.audit.pages import SECURITY_HEADERS, login_page

        what = "failed sign-ins" if refusal.reason == "lockout" else "sign-in attempts"
        body = login_page(
            services, error=f"Too many {what}. Try again in {_retry_text(refusal.retry_after)}."
        )
        content = body.encode("utf-8")
        headers.append((b"content-type", b"text/html; charset=utf-8"))
        headers += [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in SECURITY_HEADERS.items()]
    else:
        what = "too many failed sign-ins" if refusal.reason == "lockout" else "too many requests"
        detail = f"{what}: try again in {refusal.retry_after} s"
        content = json.dumps({"status_code": 429, "detail": detail}).encode("utf-8")
        headers.append((b"content-type", b"application/json"))
    headers.append((b"content-length", str(len(content)).encode("ascii")))
    await send({"type": "http.response.start", "status": 429, "headers": headers})
    await send({"type": "http.response.body", "body": content, "more_body": False})


def rate_limit_middleware(services: Services) -> Callable[[ASGIApp], ASGIApp]:
    """The middleware for create_app's list, bound to the service's settings and store."""
    limits = services.settings.rate_limits
    trusted = parse_networks(limits.trusted_proxies)
    limiter = RateLimiter(services, limits)

    def wrap(app: ASGIApp) -> ASGIApp:
        async def middleware(scope: Scope, receive: Receive, send: Send) -> None:
            surface = surface_of(scope) if scope["type"] == ScopeType.HTTP and limits.enabled else None
            if surface is None:
                await app(scope, receive, send)
                return
            if surface is Surface.LOGIN:
                messages, body = await _buffer_body(receive, FORM_READ_LIMIT)
                receive = _replay(messages, receive)
                token = form_token(body, header(scope, b"content-type"))
            else:
                token = bearer_token(scope)
            client = Client(ip=client_ip(scope, trusted), token_key=token_key(token))
            refusal = await _guarded(lambda: limiter.admit(surface, client))
            if refusal is not None:
                count_rate_limited(services, surface.value, refusal.reason)
                log.warning(
                    "rate limited",
                    surface=surface.value,
                    reason=refusal.reason,
                    client=client.ip,
                    retry_after=refusal.retry_after,
                )
                await send_refusal(send, services, surface, refusal)
                return
            if client.token_key is None:
                await app(scope, receive, send)
                return

            async def send_counting_failures(message: Message) -> None:
                # Counted before the 401 leaves, so the next guess already sees this one.
                if message["type"] == "http.response.start" and message["status"] == 401:
                    started = await _guarded(lambda: limiter.record_failure(surface, client))
                    for subject in started or []:
                        count_rate_limited(services, surface.value, "lockout-started")
                        log.warning("locked out", subject=subject, surface=surface.value)
                await send(message)

            await app(scope, receive, send_counting_failures)

        return middleware

    return wrap


async def _guarded(work: Callable[[], T]) -> T | None:
    """`work` in a worker thread (it waits on the database); None when the store failed (let through)."""
    try:
        return await anyio.to_thread.run_sync(work)
    except sa.exc.SQLAlchemyError as exc:
        log.warning("rate limits: store unavailable, request let through", error=type(exc).__name__)
        return None
