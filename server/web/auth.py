"""Bearer-token protection for the admin and read API (webhooks are protected by signatures instead).

A presented token resolves to an identity: the shared service token (MLC_API_TOKEN) is "service";
a personal token is the identity whose SHA-256 it matches in MLC_API_IDENTITIES (only hashes are
configured, so the settings hold nothing secret). Handlers read the identity (`identity_of`),
never a name from the request body.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Callable
from typing import Any

from litestar.connection import ASGIConnection
from litestar.exceptions import NotAuthorizedException
from litestar.handlers.base import BaseRouteHandler

from server.settings import SERVICE_IDENTITY, Settings

Guard = Callable[[ASGIConnection[Any, Any, Any, Any], BaseRouteHandler], None]


def token_matches(presented: str, expected: str) -> bool:
    """Constant-time comparison; an empty configured token never matches (the API stays closed)."""
    if not expected or not presented:
        return False
    return hmac.compare_digest(presented.encode("utf-8"), expected.encode("utf-8"))


def token_digest(token: str) -> str:
    """What MLC_API_IDENTITIES holds for a token: its SHA-256, hex."""
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def identity_for(presented: str, settings: Settings) -> str | None:
    """The identity a presented token belongs to, or None. Every configured hash is compared, each in
    constant time, so the answer's timing does not tell which (or whether one) came close."""
    if not presented:
        return None
    found = SERVICE_IDENTITY if token_matches(presented, settings.api_token.get_secret_value()) else None
    digest = token_digest(presented).encode("ascii")
    for identity, expected in settings.api_identities.items():
        if hmac.compare_digest(digest, expected.encode("ascii")) and found is None:
            found = identity
    return found


def identity_of(connection: ASGIConnection[Any, Any, Any, Any]) -> str:
    """The identity the bearer guard resolved for this request."""
    identity = connection.scope.get("state", {}).get(IDENTITY_KEY)
    if not isinstance(identity, str):
        raise NotAuthorizedException(detail="a valid bearer token is required")
    return identity


IDENTITY_KEY = "mlc_identity"


def bearer_from_header(value: str | None) -> str:
    if not value:
        return ""
    scheme, _, token = value.partition(" ")
    return token.strip() if scheme.lower() == "bearer" else ""


def make_bearer_guard_for_app() -> Guard:
    """A guard reading the expected token from the app's Services (set by create_app)."""

    def bearer_guard(connection: ASGIConnection[Any, Any, Any, Any], _handler: BaseRouteHandler) -> None:
        services = connection.app.state["services"]
        presented = bearer_from_header(connection.headers.get("authorization"))
        identity = identity_for(presented, services.settings)
        if identity is None:
            raise NotAuthorizedException(
                detail="a valid bearer token is required", headers={"WWW-Authenticate": "Bearer"}
            )
        connection.scope.setdefault("state", {})[IDENTITY_KEY] = identity

    return bearer_guard
