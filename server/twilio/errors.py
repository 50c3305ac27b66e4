"""Delivery errors: every failure of a Twilio call becomes one of a small set of exception types.

The tree (what the caller should do is in the name)::

    DeliveryError                      base; .code (Twilio code), .status (HTTP), .more_info
    ├── RetryableError                 nothing happened at Twilio; the same request may be sent again later
    │   └── RateLimitedError           429 / 20429 (and Verify 60212); .retry_after when Twilio said
    ├── OutcomeUnknownError            the request left us but no answer came back: do NOT resend blindly,
    │                                  reconcile (status callback carrying our job id, or list_messages)
    ├── PermanentRecipientError        this recipient cannot get this message (21211, 21614, 21612, ...)
    │   └── OptedOutError              21610: the handset sent STOP; record the opt-out, never auto-retry
    ├── ConfigurationError             our credentials / sender / account are wrong (20003, 21606, ...)
    ├── InvalidRequestError            we built a bad request (21604, 21602, 60200, ...): a bug, not retried
    ├── NotFoundError                  20404 (Verify: the verification was approved or expired)
    └── VerificationLimitError         60202 / 60203: too many checks / sends; wait for the code to expire

Classification follows Twilio's error pages (https://www.twilio.com/docs/api/errors, one page per code);
codes not in the table fall back on the HTTP status (401/403 configuration, 404 not found, 429 rate
limited, 5xx retryable, other 4xx invalid request).
"""

from __future__ import annotations

from enum import StrEnum
from typing import Any


class DeliveryError(Exception):
    """A Twilio operation failed. `code` is Twilio's error code when the body carried one."""

    def __init__(
        self,
        message: str,
        *,
        code: int | None = None,
        status: int | None = None,
        more_info: str | None = None,
        operation: str = "",
    ) -> None:
        super().__init__(message)
        self.message = message
        self.code = code
        self.status = status
        self.more_info = more_info
        self.operation = operation

    def __str__(self) -> str:
        parts = [self.operation] if self.operation else []
        if self.status is not None:
            parts.append(f"HTTP {self.status}")
        if self.code is not None:
            parts.append(f"code {self.code}")
        prefix = " ".join(parts)
        return f"{prefix}: {self.message}" if prefix else self.message


class RetryableError(DeliveryError):
    """Twilio did not process the request (5xx, connect failure, queue full): safe to send again later."""

    def __init__(self, message: str, *, retry_after: float | None = None, **kwargs: Any) -> None:
        super().__init__(message, **kwargs)
        self.retry_after = retry_after


class RateLimitedError(RetryableError):
    """429: 'a 429'd request was not processed and is safe to retry after backing off' (20429 page)."""


class NotSentError(DeliveryError):
    """The caller's deadline came before an attempt could be made: nothing was accepted (every
    earlier attempt, if any, was refused in a way that means 'not processed'), nothing more will be."""


class OutcomeUnknownError(DeliveryError):
    """The request was sent but no complete answer arrived (read timeout, dropped connection).

    The message may or may not exist at Twilio. Resending could text the customer twice, so the
    caller must reconcile first: wait for the StatusCallback carrying the job id, or look the message
    up with `TwilioClient.list_messages(to=..., date_sent_after=...)`.
    """


class PermanentRecipientError(DeliveryError):
    """This recipient cannot receive this message (invalid, landline, unreachable pair...)."""


class OptedOutError(PermanentRecipientError):
    """21610: the recipient replied STOP to this sender; sends fail until they reply START."""


class ConfigurationError(DeliveryError):
    """Our side is misconfigured (credentials, sender number, trial account): alert, do not retry."""


class InvalidRequestError(DeliveryError):
    """Twilio rejected the request as malformed: a bug on our side; retrying cannot help."""


class NotFoundError(DeliveryError):
    """20404. On Verify: the verification was approved, expired or canceled (soft-deleted)."""


class VerificationLimitError(DeliveryError):
    """60202 / 60203: too many checks or sends for this verification; it must expire first."""


class ErrorKind(StrEnum):
    RETRYABLE = "retryable"
    RATE_LIMITED = "rate_limited"
    RECIPIENT = "recipient"
    OPTED_OUT = "opted_out"
    CONFIGURATION = "configuration"
    INVALID_REQUEST = "invalid_request"
    NOT_FOUND = "not_found"
    VERIFICATION_LIMIT = "verification_limit"


# One table: Twilio code -> what it means for us. Sources per code in data/twilio/error_codes.json.
ERROR_KINDS: dict[int, ErrorKind] = {
    20003: ErrorKind.CONFIGURATION,  # Authenticate (bad SID/secret, deleted key, suspended account)
    20404: ErrorKind.NOT_FOUND,
    20429: ErrorKind.RATE_LIMITED,
    21210: ErrorKind.CONFIGURATION,  # Calls: From not verified
    21211: ErrorKind.RECIPIENT,  # invalid To
    21212: ErrorKind.CONFIGURATION,  # invalid From
    21214: ErrorKind.RECIPIENT,  # Calls: To cannot be reached
    21217: ErrorKind.RECIPIENT,  # Calls: number does not appear valid
    21408: ErrorKind.RECIPIENT,  # geo permission off for the destination country
    21601: ErrorKind.CONFIGURATION,  # From not an SMS-capable number of this account
    21602: ErrorKind.INVALID_REQUEST,  # Body required
    21603: ErrorKind.INVALID_REQUEST,  # From required
    21604: ErrorKind.INVALID_REQUEST,  # To required (also: body sent as JSON)
    21606: ErrorKind.CONFIGURATION,  # From not message-capable for this destination/account
    21608: ErrorKind.CONFIGURATION,  # trial account, unverified To
    21609: ErrorKind.INVALID_REQUEST,  # invalid StatusCallback
    21610: ErrorKind.OPTED_OUT,
    21611: ErrorKind.RETRYABLE,  # sender queue holds > 10 h: slow down, try later
    21612: ErrorKind.RECIPIENT,  # To/From pair not deliverable
    21614: ErrorKind.RECIPIENT,  # not a mobile number
    21617: ErrorKind.INVALID_REQUEST,  # body > 1600 chars
    21626: ErrorKind.INVALID_REQUEST,  # invalid StatusCallbackEvent
    21635: ErrorKind.RECIPIENT,  # landline
    21659: ErrorKind.CONFIGURATION,  # unconfirmed; treated like 21606 (https://www.twilio.com/docs/api/errors/21659)
    60200: ErrorKind.INVALID_REQUEST,  # Verify invalid parameter
    60202: ErrorKind.VERIFICATION_LIMIT,  # max check attempts
    60203: ErrorKind.VERIFICATION_LIMIT,  # max send attempts
    60212: ErrorKind.RATE_LIMITED,  # too many concurrent verifications for the number: back off
}

# Codes that arrive as a Message's error_code / a callback's ErrorCode, never as an HTTP error.
CALLBACK_ERROR_KINDS: dict[int, ErrorKind] = {
    30001: ErrorKind.RETRYABLE,  # queue overflow: retry later at a lower rate
    30002: ErrorKind.CONFIGURATION,  # account suspended
    30003: ErrorKind.RETRYABLE,  # unreachable handset: limited retry
    30004: ErrorKind.RECIPIENT,  # blocked
    30005: ErrorKind.RECIPIENT,  # unknown handset
    30006: ErrorKind.RECIPIENT,  # landline or unreachable carrier
    30007: ErrorKind.RECIPIENT,  # carrier filtered: review content, do not auto-retry
    30008: ErrorKind.RETRYABLE,  # unknown error: limited retry
    30034: ErrorKind.CONFIGURATION,  # unregistered A2P 10DLC number
    10004: ErrorKind.RETRYABLE,  # call concurrency limit
}

_KIND_TO_TYPE: dict[ErrorKind, type[DeliveryError]] = {
    ErrorKind.RETRYABLE: RetryableError,
    ErrorKind.RATE_LIMITED: RateLimitedError,
    ErrorKind.RECIPIENT: PermanentRecipientError,
    ErrorKind.OPTED_OUT: OptedOutError,
    ErrorKind.CONFIGURATION: ConfigurationError,
    ErrorKind.INVALID_REQUEST: InvalidRequestError,
    ErrorKind.NOT_FOUND: NotFoundError,
    ErrorKind.VERIFICATION_LIMIT: VerificationLimitError,
}


def kind_for(status: int, code: int | None) -> ErrorKind:
    """What an HTTP error response means for us: by Twilio code first, else by HTTP status."""
    if code is not None and code in ERROR_KINDS:
        return ERROR_KINDS[code]
    if status == 429:
        return ErrorKind.RATE_LIMITED
    if status >= 500:
        return ErrorKind.RETRYABLE
    if status in (401, 403):
        return ErrorKind.CONFIGURATION
    if status == 404:
        return ErrorKind.NOT_FOUND
    return ErrorKind.INVALID_REQUEST


def callback_error_kind(code: int | None) -> ErrorKind | None:
    """How to treat a failed/undelivered message's error code (None when there is no code).

    Unknown 3xxxx codes are treated as recipient problems: never resend blindly what a carrier refused.
    """
    if code is None:
        return None
    return CALLBACK_ERROR_KINDS.get(code) or ERROR_KINDS.get(code) or ErrorKind.RECIPIENT


def error_from_response(
    status: int,
    body: Any,
    *,
    operation: str,
    retry_after: float | None = None,
) -> DeliveryError:
    """Build the exception for an error response. `body` is the parsed JSON (or None).

    Twilio's legacy error body is {code, message, more_info, status}; newer APIs use RFC 9457
    (type, title, status, code, detail): both carry `code`.
    """
    code: int | None = None
    message = f"HTTP {status}"
    more_info: str | None = None
    if isinstance(body, dict):
        raw_code = body.get("code")
        if isinstance(raw_code, int):
            code = raw_code
        elif isinstance(raw_code, str) and raw_code.isdigit():
            code = int(raw_code)
        text = body.get("message") or body.get("detail") or body.get("title")
        if isinstance(text, str) and text:
            message = text
        info = body.get("more_info") or body.get("type")
        more_info = info if isinstance(info, str) else None
    kind = kind_for(status, code)
    cls = _KIND_TO_TYPE[kind]
    if issubclass(cls, RetryableError):
        return cls(
            message,
            code=code,
            status=status,
            more_info=more_info,
            operation=operation,
            retry_after=retry_after,
        )
    return cls(message, code=code, status=status, more_info=more_info, operation=operation)
