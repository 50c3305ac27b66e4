"""Browser sessions for the audit pages: a signed, expiring cookie issued after the API token is typed.

The cookie holds no secret and no identity, only `v1.<expires>.<nonce>.<signature>`; the signature
is HMAC-SHA256 under a key derived from the API token. So rotating MLC_API_TOKEN signs every
browser out, and a server restart keeps people signed in. Expiry is wall-clock time (the browser's
notion), not the connector's business clock that the sandbox moves.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
import time
from collections.abc import Callable

COOKIE_NAME = "mlc_audit_session"
COOKIE_PATH = "/audit"
SESSION_SECONDS = 8 * 3600
_VERSION = "v1"
_KEY_LABEL = b"ml-connector/audit-session/v1"


def _key(api_token: str) -> bytes:
    return hmac.new(api_token.encode("utf-8"), _KEY_LABEL, hashlib.sha256).digest()


def _sign(api_token: str, payload: str) -> str:
    digest = hmac.new(_key(api_token), payload.encode("ascii"), hashlib.sha256).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")


def issue_session(
    api_token: str, *, now: Callable[[], float] = time.time, lifetime: int = SESSION_SECONDS
) -> str:
    """A new cookie value; refuses when no API token is configured (the pages stay closed)."""
    if not api_token:
        raise ValueError("no API token is configured: set MLC_API_TOKEN")
    payload = f"{_VERSION}.{int(now()) + lifetime}.{secrets.token_urlsafe(12)}"
    return f"{payload}.{_sign(api_token, payload)}"


def session_valid(cookie: str | None, api_token: str, *, now: Callable[[], float] = time.time) -> bool:
    if not cookie or not api_token:
        return False
    payload, _, signature = cookie.rpartition(".")
    parts = payload.split(".")
    if len(parts) != 3 or parts[0] != _VERSION or not parts[1].isdigit():
        return False
    if not hmac.compare_digest(
        signature.encode("ascii", "replace"), _sign(api_token, payload).encode("ascii")
    ):
        return False
    return int(parts[1]) > now()
