"""Bearer-token protection for the admin and read API (webhooks are protected by signatures instead)."""

from __future__ import annotations

import hmac

from litestar.connection import ASGIConnection
from litestar.exceptions import NotAuthorizedException
from litestar.handlers.base import BaseRouteHandler

from server.settings import Settings


def token_matches(presented: str, expected: str) -> bool:
    """Constant-time comparison; an empty configured token never matches (the API stays closed)."""
    if not expected:
        return False
    return hmac.compare_digest(presented.encode("utf-8"), expected.encode("utf-8"))


def bearer_from_header(value: str | None) -> str:
    if not value:
        return ""
    scheme, _, token = value.partition(" ")
    return token.strip() if scheme.lower() == "bearer" else ""


def make_bearer_guard(settings: Settings):  # type: ignore[no-untyped-def]
    expected = settings.api_token.get_secret_value()

    def bearer_guard(connection: ASGIConnection, _handler: BaseRouteHandler) -> None:  # type: ignore[type-arg]
        presented = bearer_from_header(connection.headers.get("authorization"))
        if not token_matches(presented, expected):
            raise NotAuthorizedException(
                detail="a valid bearer token is required", headers={"WWW-Authenticate": "Bearer"}
            )

    return bearer_guard
