"""The audit pages: server-rendered HTML over the same queries as the read API.

    GET  /audit             messages newest first; filters status, rule, entity and a text search
    GET  /audit/{job_id}    one message: its rule, the BC record, the status timeline
    GET  /audit/login       sign-in form (POST: the API token -> a signed session cookie)
    POST /audit/logout

Protection matches the API: the bearer token in an Authorization header, or, for browsers, the
session cookie that the login form sets (HttpOnly, SameSite=Strict, signed; server/web/session.py).
Phone numbers are masked on every page (the bearer API returns them in full to integrations).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Any
from urllib.parse import urlencode, urlsplit
from zoneinfo import ZoneInfo

from litestar import Request, Response, Router, get, post
from litestar.connection import ASGIConnection
from litestar.datastructures import Cookie
from litestar.di import NamedDependency
from litestar.enums import MediaType, RequestEncodingType
from litestar.exceptions import NotAuthorizedException
from litestar.handlers.base import BaseRouteHandler
from litestar.params import Body, FromPath, FromQuery
from litestar.response import Redirect
from litestar.static_files import create_static_files_router

from server.runtime.logs import get_logger
from server.services import Services
from server.store.db import read_scope
from server.store.messages import MessageFilter, count_by_status, get_message, list_messages
from server.store.states import MessageStatus
from server.web.audit import STATIC_DIR
from server.web.audit.present import build_environment, local_time, short_time, status_look
from server.web.audit.session import COOKIE_NAME, COOKIE_PATH, SESSION_SECONDS, issue_session, session_valid
from server.web.auth import bearer_from_header, token_matches
from server.web.messages_api import event_out, message_out
from server.web.params import Cursor

log = get_logger("ml_connector.audit")

PAGE_SIZE = 50
STATUS_ORDER: tuple[str, ...] = tuple(s.value for s in MessageStatus)
SECURITY_HEADERS = {
    # Pages only need our own stylesheet and script; nothing may frame them.
    "Content-Security-Policy": (
        "default-src 'none'; style-src 'self'; script-src 'self'; img-src 'self'; "
        "form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}

_templates = build_environment()


def _services(connection: ASGIConnection[Any, Any, Any, Any]) -> Services:
    services: Services = connection.app.state["services"]
    return services


def _api_token(services: Services) -> str:
    return services.settings.api_token.get_secret_value()


def is_signed_in(connection: ASGIConnection[Any, Any, Any, Any]) -> bool:
    token = _api_token(_services(connection))
    if token_matches(bearer_from_header(connection.headers.get("authorization")), token):
        return True
    return session_valid(connection.cookies.get(COOKIE_NAME), token)


def audit_guard(connection: ASGIConnection[Any, Any, Any, Any], _handler: BaseRouteHandler) -> None:
    if not is_signed_in(connection):
        raise NotAuthorizedException(detail="sign in or send the bearer token")


def _safe_next(target: str | None) -> str:
    """Only our own audit pages are valid places to return to after signing in (no open redirect)."""
    if not target:
        return "/audit"
    parts = urlsplit(target)
    if parts.scheme or parts.netloc or "\\" in target or not parts.path.startswith("/audit"):
        return "/audit"
    if parts.path.startswith(("/audit/login", "/audit/logout", "/audit/static")):
        return "/audit"
    return target


def _page(template: str, status_code: int = 200, **context: Any) -> Response[str]:
    html = _templates.get_template(template).render(**context)
    return Response(html, media_type=MediaType.HTML, status_code=status_code, headers=SECURITY_HEADERS)


def _base_context(services: Services, signed_in: bool = True) -> dict[str, Any]:
    return {"mode": services.settings.mode, "signed_in": signed_in}


def redirect_to_login(request: Request[Any, Any, Any], exc: NotAuthorizedException) -> Response[Any]:
    """Browsers go to the sign-in form; API clients (they sent Authorization) get a plain 401."""
    if request.headers.get("authorization") or request.method != "GET":
        return Response(
            {"status_code": 401, "detail": exc.detail},
            status_code=401,
            headers={"WWW-Authenticate": "Bearer"},
        )
    target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
    return Redirect(path="/audit/login?" + urlencode({"next": _safe_next(target)}), status_code=303)


def _clean(values: list[str] | None) -> list[str]:
    return [v for v in (values or []) if v]


@dataclass(frozen=True)
class _Filters:
    statuses: list[str]
    rule: str
    entity: str
    q: str

    def query(self, **extra: Any) -> str:
        params: list[tuple[str, Any]] = [("status", s) for s in self.statuses]
        params += [(k, v) for k, v in (("rule", self.rule), ("entity", self.entity), ("q", self.q)) if v]
        params += [(k, v) for k, v in extra.items() if v is not None]
        return urlencode(params)

    @property
    def active(self) -> bool:
        return bool(self.statuses or self.rule or self.entity or self.q)


@get("/", guards=[audit_guard], sync_to_thread=True, include_in_schema=False)
def audit_list(
    services: NamedDependency[Services],
    status: FromQuery[list[str] | None] = None,
    rule: FromQuery[str | None] = None,
    entity: FromQuery[str | None] = None,
    q: FromQuery[str | None] = None,
    cursor: Cursor = None,
) -> Response[str]:
    zone = ZoneInfo(services.settings.business_timezone)
    statuses = _clean(status)
    unknown = sorted(set(statuses) - set(STATUS_ORDER))
    statuses = [s for s in statuses if s in STATUS_ORDER]
    filters = _Filters(statuses=statuses, rule=rule or "", entity=entity or "", q=(q or "").strip()[:100])
    with read_scope(services.db) as session:
        page = list_messages(
            session,
            MessageFilter(
                statuses=statuses or None,
                rule_id=filters.rule or None,
                entity=filters.entity or None,
                search=filters.q or None,
            ),
            limit=PAGE_SIZE,
            after=cursor,
        )
        counts = count_by_status(session)
        # Plain values while the session is open (rows expire when it ends).
        rows = [
            {
                "m": message_out(services, m),
                "look": status_look(m.status),
                "created": short_time(m.created_at, zone),
                "created_full": local_time(m.created_at, zone),
            }
            for m in page.items
        ]
    rules = sorted(r.id for r in services.ruleset)
    entities = sorted({r.entity for r in services.ruleset})
    return _page(
        "list.html",
        **_base_context(services),
        rows=rows,
        filters=filters,
        unknown_statuses=unknown,
        counts=[(s, counts[s], status_look(s)) for s in STATUS_ORDER if counts.get(s)],
        total=sum(counts.values()),
        statuses=[(s, status_look(s)) for s in STATUS_ORDER],
        rules=rules,
        entities=entities,
        next_query=filters.query(cursor=page.next_cursor) if page.next_cursor else None,
        first_page=cursor is None,
        first_query=filters.query(),
        timezone=services.settings.business_timezone,
    )


@get("/{job_id:str}", guards=[audit_guard], sync_to_thread=True, include_in_schema=False)
def audit_detail(services: NamedDependency[Services], job_id: FromPath[str]) -> Response[str]:
    zone = ZoneInfo(services.settings.business_timezone)
    with read_scope(services.db) as session:
        detail = get_message(session, job_id)
        if detail is None:
            return _page("not_found.html", status_code=404, **_base_context(services), job_id=job_id)
        message = message_out(services, detail.message)
        events = [event_out(e) for e in detail.events]
    log.info("audit message viewed", job_id=job_id, rule_id=message["rule_id"])
    rule = services.ruleset.get(message["rule_id"])
    timeline = [{**e, "look": status_look(e["status"]), "when": local_time(e["at"], zone)} for e in events]
    return _page(
        "detail.html",
        **_base_context(services),
        m=message,
        look=status_look(message["status"]),
        rule=rule,
        rule_file=rule.source.rsplit("/", 1)[-1] if rule is not None else None,
        created=local_time(message["created_at"], zone),
        updated=local_time(message["updated_at"], zone),
        hold_until=local_time(message["hold_until"], zone) if message["hold_until"] else None,
        timeline=timeline,
        timezone=services.settings.business_timezone,
    )


@get("/login", sync_to_thread=False, include_in_schema=False)
def login_form(
    request: Request[Any, Any, Any], services: NamedDependency[Services], next: FromQuery[str | None] = None
) -> Response[Any]:
    target = _safe_next(next)
    if is_signed_in(request):
        return Redirect(path=target, status_code=303)
    return _page(
        "login.html",
        **_base_context(services, signed_in=False),
        next=target,
        error=None,
        configured=bool(_api_token(services)),
    )


def login_page(services: Services, *, error: str, next: str = "/audit") -> str:
    """The sign-in form with an error (server/web/ratelimit.py answers a refused attempt with it)."""
    return _templates.get_template("login.html").render(
        **_base_context(services, signed_in=False),
        next=_safe_next(next),
        error=error,
        configured=bool(_api_token(services)),
    )


@dataclass
class LoginForm:
    token: str = ""
    next: str = "/audit"


@post("/login", sync_to_thread=False, include_in_schema=False)
def login_submit(
    request: Request[Any, Any, Any],
    services: NamedDependency[Services],
    data: Annotated[LoginForm, Body(media_type=RequestEncodingType.URL_ENCODED)],
) -> Response[Any]:
    target = _safe_next(data.next)
    expected = _api_token(services)
    if not token_matches(data.token.strip(), expected):
        log.warning("audit sign-in refused", client=request.client.host if request.client else None)
        return _page(
            "login.html",
            status_code=401,
            **_base_context(services, signed_in=False),
            next=target,
            error="That token is not valid." if expected else "No API token is configured (MLC_API_TOKEN).",
            configured=bool(expected),
        )
    cookie = Cookie(
        key=COOKIE_NAME,
        value=issue_session(expected),
        max_age=SESSION_SECONDS,
        path=COOKIE_PATH,
        httponly=True,
        samesite="strict",
        secure=services.settings.public_base_url.startswith("https://"),
    )
    log.info("audit sign-in")
    return Redirect(path=target, status_code=303, cookies=[cookie])


@post("/logout", sync_to_thread=False, include_in_schema=False)
def logout() -> Response[Any]:
    gone = Cookie(key=COOKIE_NAME, value="", max_age=0, path=COOKIE_PATH, httponly=True, samesite="strict")
    return Redirect(path="/audit/login", status_code=303, cookies=[gone])


audit_router = Router(
    path="/audit",
    route_handlers=[audit_list, audit_detail, login_form, login_submit, logout],
    exception_handlers={NotAuthorizedException: redirect_to_login},
)

static_router = create_static_files_router(
    path="/audit/static", directories=[STATIC_DIR / "."], include_in_schema=False, name="audit-static"
)

ROUTES = [audit_router, static_router]
