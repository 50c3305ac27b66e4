"""Business Central errors: one tree, split into retryable and permanent.

    BCError
    ├── RetryableBCError          worth retrying later (the retry policy does, up to its limit)
    │   ├── ThrottledError        429 (rate or queue limit), Retry-After honoured
    │   ├── ServiceUnavailableError  5xx and 408 (BC sends Retry-After on 502/503)
    │   └── TransportError        timeout, connection refused/reset
    └── PermanentBCError          retrying the same request cannot help
        ├── AuthenticationError   token endpoint refused us, or 401 after one fresh token
        ├── AuthorizationError    403
        ├── NotFoundError         404
        ├── EntityChangedError    Request_EntityChanged (409, or 412): re-read and re-apply
        ├── MissingETagError      BadRequest_InvalidToken: PATCH/DELETE without If-Match
        ├── UnsafeNextLinkError   a nextLink pointing at another host (never send our token there)
        └── BadRequestError       any other 4xx (bad filter, unknown field, refused subscription)

Each error keeps BC's OData `error.code`, its message, the CorrelationId BC puts in the message
(quote it to Microsoft support) and the HTTP status. URLs in errors never carry credentials.
"""

from __future__ import annotations

import re
from typing import Any

from server.runtime.retry import parse_retry_after

_CORRELATION = re.compile(r"CorrelationId:\s*([0-9a-fA-F-]{36})")


class BCError(Exception):
    def __init__(
        self,
        message: str,
        *,
        status: int | None = None,
        code: str = "",
        method: str = "",
        url: str = "",
        retry_after: float | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.status = status
        self.code = code
        self.method = method
        self.url = url
        self.retry_after = retry_after
        match = _CORRELATION.search(message)
        self.correlation_id: str | None = match.group(1) if match else None

    def __str__(self) -> str:
        where = f"{self.method} {self.url}".strip()
        status = f"{self.status} " if self.status is not None else ""
        code = f"{self.code}: " if self.code else ""
        return f"{status}{code}{self.message}" + (f" ({where})" if where else "")


class RetryableBCError(BCError):
    """Transient: throttling, BC busy or down, network trouble."""


class ThrottledError(RetryableBCError):
    pass


class ServiceUnavailableError(RetryableBCError):
    pass


class TransportError(RetryableBCError):
    pass


class PermanentBCError(BCError):
    """The request itself is wrong or refused; the same request will fail again."""


class AuthenticationError(PermanentBCError):
    pass


class AuthorizationError(PermanentBCError):
    pass


class NotFoundError(PermanentBCError):
    pass


class EntityChangedError(PermanentBCError):
    """The record changed since its @odata.etag was read: fetch it again and decide again."""


class MissingETagError(PermanentBCError):
    pass


class UnsafeNextLinkError(PermanentBCError):
    pass


class BadRequestError(PermanentBCError):
    pass


def error_from_response(
    status: int, body: Any, *, method: str, url: str, retry_after_header: str | None
) -> BCError:
    """Map an HTTP error answer (and BC's `{"error":{"code","message"}}` body) to the tree above."""
    code = ""
    message = ""
    if isinstance(body, dict):
        err = body.get("error")
        if isinstance(err, dict):
            code = str(err.get("code") or "")
            message = str(err.get("message") or "")
    if not message:
        message = f"HTTP {status} without an OData error body"
    retry_after = parse_retry_after(retry_after_header)
    kwargs: dict[str, Any] = {
        "status": status,
        "code": code,
        "method": method,
        "url": url,
        "retry_after": retry_after,
    }
    # Key on the code, not the status: the docs list 409, some builds may answer 412
    # (https://learn.microsoft.com/en-us/dynamics365/business-central/dev-itpro/developer/devenv-connect-apps-error-codes).
    if code == "Request_EntityChanged" or status == 412:
        return EntityChangedError(message, **kwargs)
    if code == "BadRequest_InvalidToken":
        return MissingETagError(message, **kwargs)
    if status == 429:
        return ThrottledError(message, **kwargs)
    if status == 408 or status >= 500:
        return ServiceUnavailableError(message, **kwargs)
    if status == 401:
        return AuthenticationError(message, **kwargs)
    if status == 403:
        return AuthorizationError(message, **kwargs)
    if status == 404:
        return NotFoundError(message, **kwargs)
    return BadRequestError(message, **kwargs)
