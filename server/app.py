"""Litestar app factory: only wiring. Handlers are a few lines and call into the modules that work.

Route modules each export `ROUTES` (a list of handlers/controllers). Handlers receive the shared
`Services` by dependency injection (`services: NamedDependency[Services]`). The lifespan starts the worker loops
(server/workers.py) unless `start_workers=False`, which tests use to drive `run_once()` themselves.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from typing import Any

from litestar import Litestar
from litestar.di import Provide
from litestar.exceptions import HTTPException
from litestar.openapi import OpenAPIConfig
from litestar.types import ControllerRouterHandler, Scope

from server.runtime.logs import get_logger
from server.services import Services

log = get_logger("ml_connector.app")


def default_routes() -> list[ControllerRouterHandler]:
    """Every HTTP surface, in one explicit list (imported here, so a reader and mypy see the wiring)."""
    from server.web import (
        bc_webhook,
        changes_api,
        health,
        messages_api,
        metrics,
        pauses_api,
        twilio_webhooks,
    )
    from server.web.audit import pages

    return [
        *bc_webhook.ROUTES,
        *twilio_webhooks.ROUTES,
        *messages_api.ROUTES,
        *pauses_api.ROUTES,
        *changes_api.ROUTES,
        *health.ROUTES,
        *pages.ROUTES,
        *metrics.ROUTES,
    ]


def create_app(
    services: Services,
    *,
    route_handlers: Sequence[ControllerRouterHandler] | None = None,
    start_workers: bool = True,
    debug: bool = False,
) -> Litestar:
    @asynccontextmanager
    async def lifespan(_app: Litestar) -> AsyncIterator[None]:
        from server.metrics import observe_loop_lag
        from server.runtime.looplag import LoopLagMonitor

        lag = LoopLagMonitor(lambda seconds: observe_loop_lag(services, seconds))
        lag.start()
        try:
            if start_workers:
                from server.workers import start_workers as start
                from server.workers import stop_workers as stop

                await start(services)
                try:
                    yield
                finally:
                    await stop(services)
            else:
                yield
        finally:
            await lag.stop()

    def provide_services() -> Services:
        return services

    async def log_unhandled(exc: Exception, scope: Scope) -> None:
        # Litestar turns an unhandled exception into a bare 500; without this nobody could see why.
        if isinstance(exc, HTTPException) and exc.status_code < 500:
            return
        log.error(
            "request failed",
            path=scope.get("path"),
            method=scope.get("method"),
            error=f"{type(exc).__name__}: {exc}",
            exc_info=exc,
        )

    from server.web.middleware import request_context_middleware
    from server.web.params import bounded_json_body
    from server.web.ratelimit import rate_limit_middleware

    _ = services.metrics  # per-service registry; the BC client counts into it from now on
    handlers = list(route_handlers) if route_handlers is not None else default_routes()
    app_state: dict[str, Any] = {"services": services}
    return Litestar(
        route_handlers=handlers,
        dependencies={"services": Provide(provide_services, sync_to_thread=False)},
        lifespan=[lifespan],
        # Outermost first: every answer, a 429 too, gets its request id and access-log line.
        middleware=[request_context_middleware, rate_limit_middleware(services)],
        after_exception=[log_unhandled],
        openapi_config=OpenAPIConfig(title="ml-connector", version="0.1.0"),
        request_max_body_size=services.settings.max_body_bytes,
        before_request=bounded_json_body,  # JSON nested deeper than MAX_JSON_DEPTH: 400
        state=app_state,  # type: ignore[arg-type]
        debug=debug,
    )
