"""Bearer-token protection for the admin and read API (webhooks are protected by signatures instead)."""

from __future__ import annotations

import hmac
from collections.abc import Callable
from typing import Any

from litestar.connection import ASGIConnection
from litestar.exceptions import NotAuthorizedException
from litestar.handlers.base import BaseRouteHandler

Guard = Callable[[ASGIConnection[Any, Any, Any, Any], BaseRouteHandler], None]


def token_matches(presented: str, expected: str) -> bool:
    """Constant-time comparison; an empty configured token never matches (the API stays closed)."""
    if not expected or not presented:
        return False
    return hmac.compare_digest(presented.encode("utf-8"), expected.encode("utf-8"))


def bearer_from_header(value: str | None) -> str:
    if not value:
        return ""
    scheme, _, token = value.partition(" ")
    return token.strip() if scheme.lower() == "bearer" else ""


def make_bearer_guard_for_app() -> Guard:
    """A guard reading the expected token from the app's Services (set by create_app)."""

    def bearer_guard(connection: ASGIConnection[Any, Any, Any, Any], _handler: BaseRouteHandler) -> None:
        services = connection.app.state["services"]
        expected = services.settings.api_token.get_secret_value()
        presented = bearer_from_header(connection.headers.get("authorization"))
        if not token_matches(presented, expected):
            raise NotAuthorizedException(
                detail="a valid bearer token is required", headers={"WWW-Authenticate": "Bearer"}
            )

    return bearer_guard
