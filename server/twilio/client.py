"""Async Twilio REST client: Messages, Calls, Verify, Account and its phone numbers, one method per
remote operation.

Why httpx and not the SDK's own HTTP client: the service is asyncio throughout and uses httpx for BC
too (one HTTP stack, one set of timeouts and TLS settings); the SDK's async path pulls in aiohttp,
never retries a 429, hides Retry-After (its exception carries no headers) and cannot tell "never
sent" from "sent, no answer" — the distinction the dispatcher needs to avoid texting a customer twice.
The SDK is still used where it serves: signature computation (signatures.py) and TwiML (twiml.py).

Wire rules (https://www.twilio.com/docs/usage/requests-to-twilio): HTTP Basic with the API Key SID + secret (the Account SID stays in
the path), bodies form-encoded (a JSON body is not read by Twilio), list values as repeated keys.

Retries live in `_request` only:
- connect failure (request never left us): retried, any method;
- 429 / 20429: retried with exponential backoff and full jitter, honouring Retry-After (a 429'd
  request "was not processed and is safe to retry", 20429 page); a Retry-After longer than the
  policy allows is handed to the caller as RateLimitedError(retry_after=...) instead of slept;
- 500 / 503: retried (Twilio did not take the request);
- read timeout, dropped connection, 502/504 after a create was sent: OutcomeUnknownError, never
  retried here (GETs are idempotent and are retried);
- everything else raises at once with its classification (errors.py).
"""

from __future__ import annotations

import asyncio
import random
import re
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import date
from typing import Any
from urllib.parse import quote, urljoin

import httpx
from pydantic import BaseModel, ConfigDict, SecretStr

from server.runtime.clock import Clock, SystemClock, monotonic
from server.runtime.crashpoints import crash_point
from server.runtime.retry import TWILIO_RETRY, RetryPolicy, parse_retry_after
from server.twilio.errors import (
    DeliveryError,
    InvalidRequestError,
    NotSentError,
    OutcomeUnknownError,
    RetryableError,
    error_from_response,
)
from server.twilio.models import (
    AccountInfo,
    CallRecord,
    IncomingNumber,
    MessageRecord,
    SendResult,
    VerificationResult,
    VerifyService,
)

USER_AGENT = "ml-connector (httpx)"
E164 = re.compile(r"^\+[1-9]\d{1,14}$")
CALL_EVENTS = frozenset({"initiated", "ringing", "answered", "completed"})
VERIFY_CHANNELS = frozenset({"sms", "call", "email", "whatsapp", "sna", "auto"})

Sleep = Callable[[float], Awaitable[None]]
FormData = dict[str, str | list[str]]


@dataclass(frozen=True)
class MessagePage:
    """One page of a Messages list: its records, newest first, and whether it is the list's end."""

    messages: tuple[MessageRecord, ...]
    last: bool


class TwilioClientConfig(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    account_sid: str
    api_key_sid: str = ""
    api_key_secret: SecretStr = SecretStr("")
    auth_token: SecretStr = SecretStr("")
    api_base_url: str = "https://api.twilio.com"
    verify_base_url: str = "https://verify.twilio.com"
    verify_service_sid: str = ""
    connect_timeout: float = 5.0
    read_timeout: float = 15.0
    write_timeout: float = 15.0
    # A Retry-After longer than retry.max_retry_after is returned to the caller instead of slept.
    retry: RetryPolicy = TWILIO_RETRY

    @classmethod
    def from_settings(cls, settings: Any, **overrides: Any) -> TwilioClientConfig:
        """Build from server.settings.TwilioSettings (duck-typed to keep this module import-light)."""
        values: dict[str, Any] = {
            "account_sid": settings.account_sid,
            "api_key_sid": settings.api_key_sid,
            "api_key_secret": settings.api_key_secret,
            "auth_token": settings.auth_token,
            "api_base_url": settings.api_base_url,
            "verify_base_url": settings.verify_base_url,
            "verify_service_sid": settings.verify_service_sid,
            # The timeouts and retries the settings validate the leases against
            # (server/settings.py, lease_problems): the client runs with exactly these.
            "connect_timeout": settings.connect_timeout_seconds,
            "write_timeout": settings.write_timeout_seconds,
            "read_timeout": settings.read_timeout_seconds,
            "retry": RetryPolicy(
                max_attempts=settings.max_attempts,
                base_delay=settings.retry_base_delay_seconds,
                max_delay=settings.retry_max_delay_seconds,
                max_retry_after=settings.retry_after_limit_seconds,
            ),
        }
        values.update(overrides)
        return cls(**values)

    def basic_auth(self) -> httpx.BasicAuth:
        """API key when configured (revocable: https://www.twilio.com/docs/iam/api-keys), else the account's auth token."""
        if self.api_key_sid:
            return httpx.BasicAuth(self.api_key_sid, self.api_key_secret.get_secret_value())
        if self.auth_token.get_secret_value():
            return httpx.BasicAuth(self.account_sid, self.auth_token.get_secret_value())
        raise ValueError("Twilio credentials missing: set api_key_sid + api_key_secret (or auth_token)")


class TwilioClient:
    """Typed operations over Twilio's REST APIs. Use as `async with TwilioClient(config) as twilio:`."""

    def __init__(
        self,
        config: TwilioClientConfig,
        *,
        http: httpx.AsyncClient | None = None,
        sleep: Sleep = asyncio.sleep,
        rng: random.Random | None = None,
        clock: Clock | None = None,
    ) -> None:
        self.config = config
        self._auth = config.basic_auth()
        self._owns_http = http is None
        self._http = http or httpx.AsyncClient(
            timeout=httpx.Timeout(
                connect=config.connect_timeout,
                read=config.read_timeout,
                write=config.write_timeout,
                pool=config.connect_timeout,
            ),
            headers={"User-Agent": USER_AGENT, "Accept": "application/json"},
            # Room to keep every connection of a full dispatcher (send_concurrency <= 64) alive:
            # past max_keepalive_connections (httpx: 20) idle connections are closed, and the next
            # burst would open them again, with a TLS handshake each at the real Twilio.
            # keepalive_expiry under the usual 5 s idle timeout of servers (uvicorn's among them):
            # a connection the server has just closed, reused for a create, fails as a ReadError
            # after the request went out, an outcome we cannot know ('unknown', reconciled).
            limits=httpx.Limits(max_connections=100, max_keepalive_connections=64, keepalive_expiry=4.0),
        )
        self._sleep = sleep
        self._rng = rng or random.SystemRandom()
        self._clock = clock or SystemClock()
        self._api = config.api_base_url.rstrip("/")
        self._verify = config.verify_base_url.rstrip("/")
        self._account_path = f"/2010-04-01/Accounts/{quote(config.account_sid, safe='')}"
        # Parsed once: httpx parses a URL string on every request (a create call runs per message).
        self._messages_url = httpx.URL(f"{self._api}{self._account_path}/Messages.json")

    async def __aenter__(self) -> TwilioClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        if self._owns_http:
            await self._http.aclose()

    # ---------------------------------------------------------------- Messages

    async def send_sms(
        self,
        to: str,
        body: str,
        *,
        from_: str | None = None,
        messaging_service_sid: str | None = None,
        status_callback: str | None = None,
        validity_period: int | None = None,
        deadline: float | None = None,
    ) -> SendResult:
        """Create a Message. Raises a DeliveryError subclass; OutcomeUnknownError means reconcile, not
        resend. No attempt (retries included) begins at or after `deadline` (monotonic seconds):
        NotSentError then."""
        if not (from_ or messaging_service_sid):
            raise ValueError("send_sms needs from_ or messaging_service_sid")
        form: FormData = {"To": to, "Body": body}
        if from_:
            form["From"] = from_
        if messaging_service_sid:
            form["MessagingServiceSid"] = messaging_service_sid
        if status_callback:
            form["StatusCallback"] = status_callback
        if validity_period is not None:
            form["ValidityPeriod"] = str(validity_period)
        data = await self._request(
            "send_sms", "POST", self._messages_url, form=form, idempotent=False, deadline=deadline
        )
        result = SendResult.model_validate(data)
        crash_point("dispatch.accepted")  # Twilio holds the message; nobody has recorded its SID
        return result

    async def fetch_message(self, sid: str) -> MessageRecord:
        url = f"{self._api}{self._account_path}/Messages/{quote(sid, safe='')}.json"
        return MessageRecord.model_validate(await self._request("fetch_message", "GET", url))

    async def list_messages(
        self,
        *,
        to: str | None = None,
        from_: str | None = None,
        date_sent_after: date | None = None,
        page_size: int = 50,
    ) -> AsyncIterator[MessageRecord]:
        """Messages newest first, following next_page_uri. `date_sent_after` is inclusive (DateSent>=,
        whole UTC days: Twilio filters by date only, and a message still queued has no date_sent)."""
        async for page in self.list_message_pages(
            to=to, from_=from_, date_sent_after=date_sent_after, page_size=page_size
        ):
            for record in page.messages:
                yield record

    async def list_message_pages(
        self,
        *,
        to: str | None = None,
        from_: str | None = None,
        date_sent_after: date | None = None,
        page_size: int = 50,
    ) -> AsyncGenerator[MessagePage, None]:
        """list_messages a page at a time, so that a caller knows where the list ends (the last page
        has no next_page_uri): reconciliation reads a recipient's list back to a submit time."""
        if not 1 <= page_size <= 1000:
            raise ValueError("page_size must be 1..1000 (ListMessage PageSize)")
        params: dict[str, str] = {"PageSize": str(page_size)}
        if to:
            params["To"] = to
        if from_:
            params["From"] = from_
        if date_sent_after is not None:
            params["DateSent>"] = date_sent_after.isoformat()
        url: str | None = f"{self._api}{self._account_path}/Messages.json"
        query: dict[str, str] | None = params
        while url:
            page = await self._request("list_messages", "GET", url, params=query)
            next_uri = page.get("next_page_uri")
            records = tuple(MessageRecord.model_validate(item) for item in page.get("messages") or [])
            yield MessagePage(messages=records, last=not next_uri)
            # next_page_uri is relative and already carries every query parameter.
            url = urljoin(self._api + "/", next_uri) if next_uri else None
            query = None

    # ---------------------------------------------------------------- Calls

    async def place_call(
        self,
        to: str,
        *,
        from_: str,
        twiml: str | None = None,
        url: str | None = None,
        status_callback: str | None = None,
        status_callback_events: Sequence[str] = (),
        ring_timeout: int | None = None,
        deadline: float | None = None,
    ) -> CallRecord:
        """Create a Call with inline TwiML or a TwiML URL (if both were sent Twilio ignores Twiml, so
        exactly one is required here). `deadline` as for send_sms."""
        if (twiml is None) == (url is None):
            raise ValueError("place_call needs exactly one of twiml or url")
        unknown = set(status_callback_events) - CALL_EVENTS
        if unknown:
            raise ValueError(f"unknown StatusCallbackEvent {sorted(unknown)}; allowed {sorted(CALL_EVENTS)}")
        form: FormData = {"To": to, "From": from_}
        if twiml is not None:
            form["Twiml"] = twiml
        if url is not None:
            form["Url"] = url
        if status_callback:
            form["StatusCallback"] = status_callback
        if status_callback_events:
            form["StatusCallbackEvent"] = list(status_callback_events)
        if ring_timeout is not None:
            form["Timeout"] = str(ring_timeout)  # seconds to ring, default 60, max 600
        data = await self._request(
            "place_call",
            "POST",
            f"{self._api}{self._account_path}/Calls.json",
            form=form,
            idempotent=False,
            deadline=deadline,
        )
        return CallRecord.model_validate(data)

    async def fetch_call(self, sid: str) -> CallRecord:
        url = f"{self._api}{self._account_path}/Calls/{quote(sid, safe='')}.json"
        return CallRecord.model_validate(await self._request("fetch_call", "GET", url))

    # ---------------------------------------------------------------- Verify

    def _service(self, service_sid: str | None) -> str:
        sid = service_sid or self.config.verify_service_sid
        if not sid:
            raise ValueError("no Verify service: pass service_sid or configure verify_service_sid")
        return f"{self._verify}/v2/Services/{quote(sid, safe='')}"

    async def create_verify_service(
        self, friendly_name: str, *, code_length: int | None = None
    ) -> VerifyService:
        form: FormData = {"FriendlyName": friendly_name}
        if code_length is not None:
            form["CodeLength"] = str(code_length)
        data = await self._request(
            "create_verify_service", "POST", f"{self._verify}/v2/Services", form=form, idempotent=False
        )
        return VerifyService.model_validate(data)

    async def start_verification(
        self, to: str, *, channel: str = "sms", service_sid: str | None = None, locale: str | None = None
    ) -> VerificationResult:
        """Send a one-time code. Within its validity a repeat start re-sends the same code (Twilio)."""
        if channel not in VERIFY_CHANNELS:
            raise ValueError(f"unknown Verify channel {channel!r}; allowed {sorted(VERIFY_CHANNELS)}")
        form: FormData = {"To": to, "Channel": channel}
        if locale:
            form["Locale"] = locale
        # A re-send within the validity period sends the same code, so a retried start is harmless;
        # still, an unanswered start is reported as unknown so the caller decides.
        data = await self._request(
            "start_verification",
            "POST",
            f"{self._service(service_sid)}/Verifications",
            form=form,
            idempotent=False,
        )
        return VerificationResult.model_validate(data)

    async def check_verification(
        self,
        code: str,
        *,
        to: str | None = None,
        verification_sid: str | None = None,
        service_sid: str | None = None,
    ) -> VerificationResult:
        """Check a code. status 'approved' = right code; 'pending' = wrong code (HTTP 200).
        NotFoundError (20404) = approved/expired/canceled already; VerificationLimitError (60202) = too
        many wrong codes."""
        if (to is None) == (verification_sid is None):
            raise ValueError("check_verification needs exactly one of to or verification_sid")
        form: FormData = {"Code": code}
        if to is not None:
            form["To"] = to
        if verification_sid is not None:
            form["VerificationSid"] = verification_sid
        data = await self._request(
            "check_verification",
            "POST",
            f"{self._service(service_sid)}/VerificationCheck",
            form=form,
            idempotent=False,
        )
        return VerificationResult.model_validate(data)

    async def fetch_verification(self, sid: str, *, service_sid: str | None = None) -> VerificationResult:
        url = f"{self._service(service_sid)}/Verifications/{quote(sid, safe='')}"
        return VerificationResult.model_validate(await self._request("fetch_verification", "GET", url))

    async def cancel_verification(self, sid: str, *, service_sid: str | None = None) -> VerificationResult:
        url = f"{self._service(service_sid)}/Verifications/{quote(sid, safe='')}"
        data = await self._request(
            "cancel_verification", "POST", url, form={"Status": "canceled"}, idempotent=True
        )
        return VerificationResult.model_validate(data)

    # ---------------------------------------------------------------- Account

    async def fetch_account(self) -> AccountInfo:
        """Cheap authenticated GET: proves the base URL, the credentials and the account SID."""
        url = f"{self._api}{self._account_path}.json"
        return AccountInfo.model_validate(await self._request("fetch_account", "GET", url))

    async def find_incoming_number(self, phone_number: str, *, page_size: int = 50) -> IncomingNumber | None:
        """The account's IncomingPhoneNumber for this E.164 number, or None when the account does not own it.

        Twilio's `PhoneNumber` filter matches partial numbers ('*' = any digit), so every page is read
        and the number compared exactly. Errors are classified like every other call (errors.py): bad
        credentials or a key not allowed to read numbers -> ConfigurationError, unreachable -> RetryableError.
        """
        if not E164.match(phone_number):
            raise ValueError(
                f"find_incoming_number needs an E.164 number (+ and digits), got {phone_number!r}"
            )
        if not 1 <= page_size <= 1000:
            raise ValueError("page_size must be 1..1000")
        url: str | None = f"{self._api}{self._account_path}/IncomingPhoneNumbers.json"
        query: dict[str, str] | None = {"PhoneNumber": phone_number, "PageSize": str(page_size)}
        while url:
            page = await self._request("find_incoming_number", "GET", url, params=query)
            for item in page.get("incoming_phone_numbers") or []:
                number = IncomingNumber.model_validate(item)
                if number.phone_number == phone_number:
                    return number
            next_uri = page.get("next_page_uri")
            url = urljoin(self._api + "/", next_uri) if next_uri else None  # carries the filter
            query = None
        return None

    # ---------------------------------------------------------------- the one retry place

    def _backoff(self, attempt: int, retry_after: float | None) -> float | None:
        """Full jitter: uniform(0, min(max_delay, base * 2^(attempt-1))); at least Retry-After.
        None = Retry-After is longer than we are willing to wait in-line."""
        policy = self.config.retry
        delay = policy.backoff(attempt, self._rng, retry_after)
        if retry_after is not None and retry_after > policy.max_retry_after:
            return None
        return delay

    async def _request(
        self,
        operation: str,
        method: str,
        url: str | httpx.URL,
        *,
        form: FormData | None = None,
        params: dict[str, str] | None = None,
        idempotent: bool | None = None,
        deadline: float | None = None,
    ) -> dict[str, Any]:
        if idempotent is None:
            idempotent = method == "GET"
        attempt = 0
        while True:
            attempt += 1
            error: DeliveryError
            if deadline is not None and monotonic() >= deadline:
                # Every earlier attempt was refused unprocessed (429, 5xx, no connection): nothing exists.
                raise NotSentError(
                    f"the send's time ran out before attempt {attempt}; nothing was accepted",
                    operation=operation,
                )
            try:
                response = await self._http.request(method, url, data=form, params=params, auth=self._auth)
            except (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout) as exc:
                # Never reached Twilio: safe to try again whatever the method.
                error = RetryableError(f"could not connect: {exc!r}", operation=operation)
            except (httpx.TimeoutException, httpx.NetworkError, httpx.RemoteProtocolError) as exc:
                if not idempotent:
                    raise OutcomeUnknownError(
                        f"request sent but no complete answer ({type(exc).__name__}); reconcile before resending",
                        operation=operation,
                    ) from exc
                error = RetryableError(f"no answer: {exc!r}", operation=operation)
            else:
                if 200 <= response.status_code < 300:
                    return self._json(response, operation, idempotent)
                body: Any = None
                try:
                    body = response.json()
                except ValueError:
                    body = None
                if not idempotent and response.status_code in (502, 504):
                    # A gateway timed out in front of Twilio: the origin may have taken the request.
                    raise OutcomeUnknownError(
                        f"HTTP {response.status_code} from a gateway; the request may have been processed",
                        status=response.status_code,
                        operation=operation,
                    )
                retry_after = parse_retry_after(response.headers.get("Retry-After"), self._clock.now())
                error = error_from_response(
                    response.status_code, body, operation=operation, retry_after=retry_after
                )
                if not isinstance(error, RetryableError):
                    raise error
            if attempt >= self.config.retry.max_attempts:
                raise error
            retry_after_value = error.retry_after if isinstance(error, RetryableError) else None
            delay = self._backoff(attempt, retry_after_value)
            if delay is None:
                raise error
            if deadline is not None and monotonic() + delay >= deadline:
                raise error  # the retry could not begin in time: the caller retries the job later
            await self._sleep(delay)

    @staticmethod
    def _json(response: httpx.Response, operation: str, idempotent: bool) -> dict[str, Any]:
        try:
            data = response.json()
        except ValueError as exc:
            message = f"HTTP {response.status_code} with a body that is not JSON"
            if idempotent:
                raise InvalidRequestError(message, status=response.status_code, operation=operation) from exc
            raise OutcomeUnknownError(message, status=response.status_code, operation=operation) from exc
        if not isinstance(data, dict):
            raise InvalidRequestError(
                "expected a JSON object", status=response.status_code, operation=operation
            )
        return data
