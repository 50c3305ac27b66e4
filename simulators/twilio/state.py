"""What the Twilio simulator knows: accounts, messages, calls, Verify, opt-outs and faults.

Pure state and rules, no HTTP: every API operation takes the parsed form and returns an `ApiResult`
(status, JSON body, headers) shaped like Twilio's OpenAPI (github.com/twilio/twilio-oai:
twilio_api_v2010.json, twilio_verify_v2.json).
Time comes from a Clock so lifecycles and Verify expiry move with ManualClock in tests. A single
re-entrant lock guards everything: the HTTP server thread and the test/control thread both call in.
"""

from __future__ import annotations

import re
import secrets
import threading
import uuid
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime, parsedate_to_datetime
from enum import StrEnum
from typing import Any, Protocol, TypeVar
from urllib.parse import urlencode, urlsplit

from simulators.clock import Clock, monotonic

API_VERSION = "2010-04-01"
E164 = re.compile(r"^\+[1-9]\d{6,14}$")
EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")
ALPHANUMERIC_SENDER = re.compile(r"^(?=.*[A-Za-z])[A-Za-z0-9 ]{1,11}$")

# Opt-out keywords (https://www.twilio.com/docs/messaging/tutorials/advanced-opt-out; START/HELP words
# and "single-word messages only" from Twilio support article 223134027).
STOP_WORDS = frozenset({"STOP", "UNSUBSCRIBE", "END", "QUIT", "STOPALL", "REVOKE", "OPTOUT", "CANCEL"})
START_WORDS = frozenset({"START", "YES", "UNSTOP"})
HELP_WORDS = frozenset({"HELP", "INFO"})

VERIFY_CHANNELS = frozenset({"sms", "call", "email", "whatsapp", "sna", "auto"})
CALL_EVENTS = frozenset({"initiated", "ringing", "answered", "completed"})

# GSM 03.38 basic set (+ the extension table, which costs two septets).
_GSM_BASIC = set(
    "@£$¥èéùìòÇ\nØø\rÅåΔ_ΦΓΛΩΠΨΣΘΞÆæßÉ !\"#¤%&'()*+,-./0123456789:;<=>?¡ABCDEFGHIJKLMNOPQRSTUVWXYZÄÖÑÜ§"
    "¿abcdefghijklmnopqrstuvwxyzäöñüà"
)
_GSM_EXT = set("^{}\\[~]|€\f")


def new_sid(prefix: str) -> str:
    return prefix + secrets.token_hex(16)


def rfc2822(moment: datetime | None) -> str | None:
    return format_datetime(moment.astimezone(UTC)) if moment else None


def iso8601(moment: datetime | None) -> str | None:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ") if moment else None


def segment_count(body: str) -> int:
    """SMS segments: 160/153 GSM-7 septets or 70/67 UCS-2 code units (the `Body` parameter of
    https://www.twilio.com/docs/messaging/api/message-resource)."""
    if all(ch in _GSM_BASIC or ch in _GSM_EXT for ch in body):
        septets = sum(2 if ch in _GSM_EXT else 1 for ch in body)
        return 1 if septets <= 160 else -(-septets // 153)
    units = len(body.encode("utf-16-le")) // 2
    return 1 if units <= 70 else -(-units // 67)


@dataclass(frozen=True)
class ApiResult:
    status: int
    body: dict[str, Any] | None
    headers: tuple[tuple[str, str], ...] = ()


def twilio_error(
    status: int, code: int, message: str, headers: tuple[tuple[str, str], ...] = ()
) -> ApiResult:
    """Twilio's legacy error body: {code, message, more_info, status} (as in the example of
    https://www.twilio.com/docs/errors/60200)."""
    return ApiResult(
        status,
        {
            "code": code,
            "message": message,
            "more_info": f"https://www.twilio.com/docs/errors/{code}",
            "status": status,
        },
        headers,
    )


class MessageOutcome(StrEnum):
    DELIVERED = "delivered"
    UNDELIVERED = "undelivered"  # carrier said no: error_code e.g. 30003
    FAILED = "failed"  # could not be sent: error_code e.g. 30008
    SENT_ONLY = "sent"  # no delivery receipt ever comes; 'sent' stays final
    REJECT = "reject"  # refused at create time with an API error, e.g. 21211 / 21614


class CallOutcome(StrEnum):
    COMPLETED = "completed"
    BUSY = "busy"
    NO_ANSWER = "no-answer"
    FAILED = "failed"


DEFAULT_CODES: dict[MessageOutcome, int] = {
    MessageOutcome.UNDELIVERED: 30003,
    MessageOutcome.FAILED: 30008,
    MessageOutcome.REJECT: 21211,
}
ERROR_TEXT: dict[int, str] = {
    21211: "The 'To' number {to} is not a valid phone number.",
    21408: "Permission to send an SMS has not been enabled for the region indicated by the 'To' number: {to}.",
    21612: "The 'To' phone number: {to}, is not currently reachable using the 'From' phone number via SMS.",
    21614: "'To' number {to} is not a valid mobile number",
    21635: "'To' number {to} cannot be a landline",
    30001: "Queue overflow",
    30003: "Unreachable destination handset",
    30004: "Message blocked",
    30005: "Unknown destination handset",
    30006: "Landline or unreachable carrier",
    30007: "Message filtered",
    30008: "Unknown error",
}


@dataclass(frozen=True)
class NumberBehaviour:
    outcome: MessageOutcome = MessageOutcome.DELIVERED
    error_code: int | None = None
    call_outcome: CallOutcome = CallOutcome.COMPLETED


@dataclass(frozen=True)
class Timings:
    """Seconds of simulated time between lifecycle steps."""

    queued_to_sent: float = 0.3
    sent_to_final: float = 0.7
    call_ring: float = 0.3
    call_answer: float = 0.5
    call_duration: float = 1.0
    verification_ttl: float = 600.0  # 10 minutes (Verify rate-limits-and-timeouts page)


@dataclass
class Faults:
    error_next: int = 0
    error_status: int = 500
    error_code: int = 20500
    error_retry_after: float | None = None
    delay_next: int = 0
    delay_seconds: float = 0.0
    drop_after_accept_next: int = 0


@dataclass
class Callback:
    url: str
    method: str
    params: list[tuple[str, str]]
    owner_sid: str
    token: str = field(default_factory=lambda: str(uuid.uuid4()))


@dataclass
class SimMessage:
    sid: str
    account_sid: str
    to: str
    from_: str | None
    body: str
    messaging_service_sid: str | None
    direction: str
    status: str
    status_callback: str | None
    date_created: datetime
    date_updated: datetime
    date_sent: datetime | None
    num_segments: int
    seq: int
    plan: list[tuple[datetime, str]] = field(default_factory=list)
    final_error: int | None = None
    error_code: int | None = None
    price: str | None = None
    held: list[Callback] = field(default_factory=list)


@dataclass
class SimCall:
    sid: str
    account_sid: str
    to: str
    from_: str
    status: str
    status_callback: str | None
    status_callback_method: str
    events: frozenset[str]
    twiml: str | None
    url: str | None
    date_created: datetime
    date_updated: datetime
    seq: int
    plan: list[tuple[datetime, str]] = field(default_factory=list)
    start_time: datetime | None = None
    end_time: datetime | None = None
    duration: int | None = None
    sequence_number: int = 0
    held: list[Callback] = field(default_factory=list)


@dataclass
class SimService:
    sid: str
    friendly_name: str
    code_length: int
    custom_code_enabled: bool
    date_created: datetime
    date_updated: datetime


@dataclass
class SimIncomingNumber:
    """A number the account owns (IncomingPhoneNumber, PN...) and what it can do."""

    sid: str
    phone_number: str
    sms: bool
    voice: bool
    mms: bool
    fax: bool
    date_created: datetime
    date_updated: datetime
    seq: int


@dataclass
class SimVerification:
    sid: str
    service_sid: str
    to: str
    channel: str
    code: str
    status: str
    date_created: datetime
    date_updated: datetime
    expires_at: datetime
    send_attempts: list[dict[str, str | None]] = field(default_factory=list)
    check_attempts: int = 0


@dataclass(frozen=True)
class Credentials:
    account_sid: str
    auth_token: str
    api_key_sid: str
    api_key_secret: str
    from_number: str
    messaging_service_sid: str
    verify_service_sid: str

    @classmethod
    def generate(cls, from_number: str = "+15005550006") -> Credentials:
        return cls(
            account_sid=new_sid("AC"),
            auth_token=secrets.token_hex(16),
            api_key_sid=new_sid("SK"),
            api_key_secret=secrets.token_urlsafe(24),
            from_number=from_number,
            messaging_service_sid=new_sid("MG"),
            verify_service_sid=new_sid("VA"),
        )


def _first(form: dict[str, list[str]], name: str) -> str | None:
    values = form.get(name)
    return values[0] if values else None


class TwilioSimState:
    """All simulator state. Every public method takes the lock."""

    MAX_CHECK_ATTEMPTS = 5  # 60202
    MAX_SEND_ATTEMPTS = 5  # 60203

    def __init__(
        self,
        credentials: Credentials,
        clock: Clock,
        *,
        timings: Timings | None = None,
        extra_numbers: tuple[str, ...] = (),
    ) -> None:
        self.lock = threading.RLock()
        self.creds = credentials
        self.clock = clock
        self.timings = timings or Timings()
        self.numbers: set[str] = {credentials.from_number, *extra_numbers}
        self.behaviours: dict[str, NumberBehaviour] = {}
        self.messages: dict[str, SimMessage] = {}
        self.calls: dict[str, SimCall] = {}
        self.services: dict[str, SimService] = {}
        self.verifications: dict[str, SimVerification] = {}
        self.opt_outs: set[tuple[str, str]] = set()  # (handset, our sender number)
        self.faults = Faults()
        self.rate_limit_mps: float | None = None
        self.rate_limit_retry_after: float | None = None
        self._buckets: dict[str, tuple[float, float]] = {}  # sender -> (tokens, last monotonic)
        self.outbox: deque[Callback] = deque()
        self.callback_duplicates = 0
        self.callbacks_out_of_order = False
        self.inbound_url: str | None = None
        self.api_base_url = ""
        self.verify_base_url = ""
        self._seq = 0
        now = clock.now()
        self.services[credentials.verify_service_sid] = SimService(
            credentials.verify_service_sid, "ml-connector sandbox", 6, True, now, now
        )
        # The configured senders are numbers of the account, able to text and call.
        self.incoming: dict[str, SimIncomingNumber] = {}
        for number in sorted(n for n in self.numbers if E164.match(n)):  # not alphanumeric sender IDs
            self.set_incoming_number(number)

    # ------------------------------------------------------------------ helpers

    def _next_seq(self) -> int:
        self._seq += 1
        return self._seq

    def check_auth(self, username: str | None, password: str | None) -> str | None:
        """The authenticated username, or None. Accepts AccountSid:AuthToken and ApiKeySid:Secret."""
        if username is None or password is None:
            return None
        pairs = (
            (self.creds.account_sid, self.creds.auth_token),
            (self.creds.api_key_sid, self.creds.api_key_secret),
        )
        ok = False
        for user, secret in pairs:
            ok |= secrets.compare_digest(username.encode(), user.encode()) and secrets.compare_digest(
                password.encode(), secret.encode()
            )
        return username if ok else None

    def take_fault(self) -> tuple[ApiResult | None, float, bool]:
        """(error to answer instead, delay after processing, drop the connection after processing)."""
        with self.lock:
            faults = self.faults
            error: ApiResult | None = None
            if faults.error_next > 0:
                faults.error_next -= 1
                headers: tuple[tuple[str, str], ...] = ()
                if faults.error_retry_after is not None:
                    headers = (("Retry-After", f"{faults.error_retry_after:g}"),)
                message = "Too Many Requests" if faults.error_status == 429 else "Internal Server Error"
                error = twilio_error(faults.error_status, faults.error_code, message, headers)
            delay = 0.0
            if faults.delay_next > 0:
                faults.delay_next -= 1
                delay = faults.delay_seconds
            drop = False
            if faults.drop_after_accept_next > 0 and error is None:
                faults.drop_after_accept_next -= 1
                drop = True
            return error, delay, drop

    def _rate_limited(self, sender: str) -> ApiResult | None:
        if self.rate_limit_mps is None:
            return None
        capacity = max(1.0, self.rate_limit_mps)
        now = monotonic()
        tokens, last = self._buckets.get(sender, (capacity, now))
        tokens = min(capacity, tokens + (now - last) * self.rate_limit_mps)
        if tokens < 1.0:
            self._buckets[sender] = (tokens, now)
            headers: tuple[tuple[str, str], ...] = ()
            if self.rate_limit_retry_after is not None:
                headers = (("Retry-After", f"{self.rate_limit_retry_after:g}"),)
            return twilio_error(429, 20429, "Too Many Requests", headers)
        self._buckets[sender] = (tokens - 1.0, now)
        return None

    def _callback(
        self, owner: SimMessage | SimCall, url: str, method: str, params: list[tuple[str, str]]
    ) -> None:
        callback = Callback(url=url, method=method, params=params, owner_sid=owner.sid)
        if self.callbacks_out_of_order:
            owner.held.append(callback)
        else:
            self.outbox.append(callback)

    def _release_held(self, owner: SimMessage | SimCall) -> None:
        # Out-of-order mode holds an object's callbacks until it is final, then sends them newest first.
        while owner.held:
            self.outbox.append(owner.held.pop())

    # ------------------------------------------------------------------ accounts

    def account_json(self, authenticated_as: str) -> dict[str, Any]:
        created = self.services[self.creds.verify_service_sid].date_created
        base = f"/2010-04-01/Accounts/{self.creds.account_sid}"
        return {
            # The API returns the auth token only to a caller authenticated with it.
            "auth_token": self.creds.auth_token if authenticated_as == self.creds.account_sid else None,
            "date_created": rfc2822(created),
            "date_updated": rfc2822(created),
            "friendly_name": "ml-connector sandbox",
            "owner_account_sid": self.creds.account_sid,
            "sid": self.creds.account_sid,
            "status": "active",
            "subresource_uris": {
                "messages": f"{base}/Messages.json",
                "calls": f"{base}/Calls.json",
                "incoming_phone_numbers": f"{base}/IncomingPhoneNumbers.json",
            },
            "type": "Full",
            "uri": f"{base}.json",
        }

    # ------------------------------------------------------------------ incoming phone numbers

    def set_incoming_number(
        self, number: str, *, sms: bool = True, voice: bool = True, mms: bool = True, fax: bool = False
    ) -> SimIncomingNumber:
        """Add a number to the account (or change its capabilities)."""
        with self.lock:
            if not E164.match(number):
                raise ValueError(f"not an E.164 number: {number!r}")
            now = self.clock.now()
            existing = self.incoming.get(number)
            entry = SimIncomingNumber(
                sid=existing.sid if existing else new_sid("PN"),
                phone_number=number,
                sms=sms,
                voice=voice,
                mms=mms,
                fax=fax,
                date_created=existing.date_created if existing else now,
                date_updated=now,
                seq=existing.seq if existing else self._next_seq(),
            )
            self.incoming[number] = entry
            self.numbers.add(number)
            return entry

    def remove_incoming_number(self, number: str) -> bool:
        """Release a number: it no longer belongs to the account (sends from it get 21606 / 21210)."""
        with self.lock:
            self.numbers.discard(number)
            return self.incoming.pop(number, None) is not None

    def incoming_number_json(self, n: SimIncomingNumber) -> dict[str, Any]:
        # Field names as in the api.v2010.account.incoming_phone_number resource (twilio SDK 9.x and
        # twilio-go models); the OpenAPI subset the simulator is checked against does not carry this schema.
        base = f"/2010-04-01/Accounts/{self.creds.account_sid}/IncomingPhoneNumbers/{n.sid}"
        return {
            "account_sid": self.creds.account_sid,
            "address_requirements": "none",
            "address_sid": None,
            "api_version": API_VERSION,
            "beta": False,
            "bundle_sid": None,
            "capabilities": {"fax": n.fax, "mms": n.mms, "sms": n.sms, "voice": n.voice},
            "date_created": rfc2822(n.date_created),
            "date_updated": rfc2822(n.date_updated),
            "emergency_address_sid": None,
            "emergency_address_status": "unregistered",
            "emergency_status": "Inactive",
            "friendly_name": n.phone_number,
            "identity_sid": None,
            "origin": "twilio",
            "phone_number": n.phone_number,
            "sid": n.sid,
            "sms_application_sid": None,
            "sms_fallback_method": "POST",
            "sms_fallback_url": None,
            "sms_method": "POST",
            "sms_url": self.inbound_url,
            "status": "in-use",
            "status_callback": None,
            "status_callback_method": "POST",
            "subresource_uris": {"assigned_add_ons": f"{base}/AssignedAddOns.json"},
            "trunk_sid": None,
            "uri": f"{base}.json",
            "voice_application_sid": None,
            "voice_caller_id_lookup": False,
            "voice_fallback_method": "POST",
            "voice_fallback_url": None,
            "voice_method": "POST",
            "voice_receive_mode": "voice",
            "voice_url": None,
        }

    def list_incoming_numbers(self, query: dict[str, list[str]], path: str) -> ApiResult:
        """ReadIncomingPhoneNumber: `PhoneNumber` matches partial numbers, `*` standing for any one digit
        (the SDK's parameter description), so a caller wanting one number must compare exactly."""
        with self.lock:
            items = sorted(self.incoming.values(), key=lambda n: (n.date_created, n.seq))
            wanted = _first(query, "PhoneNumber")
            if wanted:
                pattern = re.compile("".join(r"\d" if ch == "*" else re.escape(ch) for ch in wanted))
                items = [n for n in items if pattern.search(n.phone_number)]
            friendly = _first(query, "FriendlyName")
            if friendly:
                items = [n for n in items if n.phone_number == friendly]
            filters = [(k, v) for k in ("PhoneNumber", "FriendlyName") if (v := _first(query, k) or "")]
            return _page(query, path, items, "incoming_phone_numbers", filters, self.incoming_number_json)

    # ------------------------------------------------------------------ messages

    def message_json(self, m: SimMessage) -> dict[str, Any]:
        base = f"/2010-04-01/Accounts/{m.account_sid}/Messages/{m.sid}"
        return {
            "account_sid": m.account_sid,
            "api_version": API_VERSION,
            "body": m.body,
            "date_created": rfc2822(m.date_created),
            "date_sent": rfc2822(m.date_sent),
            "date_updated": rfc2822(m.date_updated),
            "direction": m.direction,
            "error_code": m.error_code,
            "error_message": ERROR_TEXT.get(m.error_code, "Unknown error") if m.error_code else None,
            "from": m.from_,
            "messaging_service_sid": m.messaging_service_sid,
            "num_media": "0",
            "num_segments": str(m.num_segments),
            "price": m.price,
            "price_unit": "USD",
            "sid": m.sid,
            "status": m.status,
            "subresource_uris": {"media": f"{base}/Media.json"},
            "to": m.to,
            "uri": f"{base}.json",
        }

    @staticmethod
    def _valid_callback_url(url: str) -> bool:
        """21609: a valid http(s) URL, hostname without underscores, at most 4000 characters."""
        if len(url) > 4000:
            return False
        parts = urlsplit(url)
        return (
            parts.scheme in ("http", "https") and bool(parts.hostname) and "_" not in (parts.hostname or "")
        )

    def create_message(self, form: dict[str, list[str]]) -> ApiResult:
        with self.lock:
            to = _first(form, "To")
            from_ = _first(form, "From")
            service = _first(form, "MessagingServiceSid")
            body = _first(form, "Body")
            callback = _first(form, "StatusCallback")
            if not to:
                # Also what a JSON body gets: Twilio reads only form fields (21604 page).
                return twilio_error(400, 21604, "A 'To' phone number is required.")
            if not from_ and not service:
                return twilio_error(400, 21603, "A 'From' phone number is required.")
            if body is None and not form.get("MediaUrl") and not _first(form, "ContentSid"):
                return twilio_error(400, 21602, "Message body is required.")
            if body is not None and len(body) > 1600:
                return twilio_error(
                    400, 21617, "The concatenated message body exceeds the 1600 character limit."
                )
            if not (E164.match(to) or (to.startswith("whatsapp:") and E164.match(to[9:]))):
                return twilio_error(400, 21211, f"The 'To' number {to} is not a valid phone number.")
            if service and service != self.creds.messaging_service_sid:
                return twilio_error(
                    404, 20404, f"The requested resource /2010-04-01/Services/{service} was not found"
                )
            sender = from_ or self.creds.from_number
            if from_ and not (E164.match(from_) or ALPHANUMERIC_SENDER.match(from_)):
                return twilio_error(
                    400,
                    21212,
                    f"The 'From' number {from_} is not a valid phone number, shortcode, or alphanumeric sender ID.",
                )
            owned = self.incoming.get(from_ or "")
            if from_ and (from_ not in self.numbers or (owned is not None and not owned.sms)):
                return twilio_error(
                    400,
                    21606,
                    f"The From phone number {from_} is not a valid, SMS-capable inbound phone number or short code "
                    "for your account.",
                )
            if callback and not self._valid_callback_url(callback):
                return twilio_error(400, 21609, f"The StatusCallback URL {callback} is not a valid URL.")
            senders = {sender} if from_ else set(self.numbers)  # a Messaging Service opt-out covers its pool
            if any((to, s) in self.opt_outs for s in senders):
                return twilio_error(400, 21610, "Attempt to send to unsubscribed recipient")
            behaviour = self.behaviours.get(to, NumberBehaviour())
            if behaviour.outcome is MessageOutcome.REJECT:
                code = behaviour.error_code or DEFAULT_CODES[MessageOutcome.REJECT]
                return twilio_error(400, code, ERROR_TEXT.get(code, "Message rejected").format(to=to))
            limited = self._rate_limited(service or sender)
            if limited is not None:
                return limited

            now = self.clock.now()
            # Via a Messaging Service without From the first status is 'accepted'
            # (https://www.twilio.com/docs/messaging/guides/outbound-message-status-in-status-callbacks).
            initial = "accepted" if service and not from_ else "queued"
            message = SimMessage(
                sid=new_sid("SM"),
                account_sid=self.creds.account_sid,
                to=to,
                from_=from_ if from_ else None,
                body=body or "",
                messaging_service_sid=service,
                direction="outbound-api",
                status=initial,
                status_callback=callback,
                date_created=now,
                date_updated=now,
                # The spec's create examples carry date_sent = date_created while still queued.
                date_sent=now,
                num_segments=segment_count(body or ""),
                seq=self._next_seq(),
            )
            message.plan = self._message_plan(now, initial, behaviour)
            if behaviour.outcome in (MessageOutcome.UNDELIVERED, MessageOutcome.FAILED):
                message.final_error = behaviour.error_code or DEFAULT_CODES[behaviour.outcome]
            self.messages[message.sid] = message
            return ApiResult(201, self.message_json(message))

    def _message_plan(
        self, now: datetime, initial: str, behaviour: NumberBehaviour
    ) -> list[tuple[datetime, str]]:
        t = self.timings
        step = timedelta(seconds=t.queued_to_sent)
        plan: list[tuple[datetime, str]] = []
        start = now
        if initial == "accepted":
            plan.append((now, "queued"))  # the service picked a sender
        if behaviour.outcome is MessageOutcome.FAILED:
            plan.append((start + step, "failed"))
            return plan
        plan.append((start + step, "sent"))
        final = {
            MessageOutcome.DELIVERED: "delivered",
            MessageOutcome.UNDELIVERED: "undelivered",
        }.get(behaviour.outcome)
        if final:
            plan.append((start + step + timedelta(seconds=t.sent_to_final), final))
        return plan

    def _apply_message_status(self, m: SimMessage, status: str, at: datetime) -> None:
        m.status = status
        m.date_updated = at
        if status == "sent":
            m.date_sent = at
            m.price = f"-{0.0079 * m.num_segments:.5f}"
        if status in ("failed", "undelivered"):
            m.error_code = m.final_error
        if not m.status_callback:
            return
        params: list[tuple[str, str]] = [
            ("AccountSid", m.account_sid),
            ("ApiVersion", API_VERSION),
            ("From", m.from_ or self.creds.from_number),
            ("MessageSid", m.sid),
            ("MessageStatus", status),
            ("SmsSid", m.sid),
            ("SmsStatus", status),
            ("To", m.to),
        ]
        if m.messaging_service_sid:
            params.append(("MessagingServiceSid", m.messaging_service_sid))
        if m.error_code is not None and status in ("failed", "undelivered"):
            params.append(("ErrorCode", str(m.error_code)))
        if status in ("delivered", "undelivered"):
            params.append(
                ("RawDlrDoneDate", at.astimezone(UTC).strftime("%y%m%d%H%M"))
            )  # YYMMDDhhmm, no zone
        self._callback(m, m.status_callback, "POST", params)
        if status in ("delivered", "undelivered", "failed") or (status == "sent" and not m.plan):
            self._release_held(m)

    def fetch_message(self, sid: str, path: str) -> ApiResult:
        with self.lock:
            m = self.messages.get(sid)
            if m is None:
                return twilio_error(404, 20404, f"The requested resource {path} was not found")
            return ApiResult(200, self.message_json(m))

    def list_messages(self, query: dict[str, list[str]], path: str) -> ApiResult:
        with self.lock:
            items = sorted(self.messages.values(), key=lambda m: (m.date_created, m.seq), reverse=True)
            to, from_ = _first(query, "To"), _first(query, "From")
            if to:
                items = [m for m in items if m.to == to]
            if from_:
                items = [m for m in items if m.from_ == from_]
            for key, op in (("DateSent", "eq"), ("DateSent>", "ge"), ("DateSent<", "le")):
                raw = _first(query, key)
                if raw:
                    day = _parse_day(raw)
                    if day is None:
                        return twilio_error(400, 20001, f"Invalid {key}: {raw}")
                    items = [m for m in items if m.date_sent and _compare_day(m.date_sent, day, op)]
            filters = [
                (k, _first(query, k) or "") for k in ("To", "From", "DateSent", "DateSent<", "DateSent>")
            ]
            filters = [(k, v) for k, v in filters if v]
            return _page(query, path, items, "messages", filters, self.message_json)

    # ------------------------------------------------------------------ calls

    def call_json(self, c: SimCall) -> dict[str, Any]:
        base = f"/2010-04-01/Accounts/{c.account_sid}/Calls/{c.sid}"
        return {
            "account_sid": c.account_sid,
            "answered_by": None,
            "api_version": API_VERSION,
            "caller_name": None,
            "date_created": rfc2822(c.date_created),
            "date_updated": rfc2822(c.date_updated),
            "direction": "outbound-api",
            "duration": str(c.duration) if c.duration is not None else None,
            "end_time": rfc2822(c.end_time),
            "forwarded_from": None,
            "from": c.from_,
            "from_formatted": c.from_,
            "group_sid": None,
            "parent_call_sid": None,
            "phone_number_sid": None,
            "price": None,
            "price_unit": "USD",
            "queue_time": "0",
            "sid": c.sid,
            "start_time": rfc2822(c.start_time),
            "status": c.status,
            "subresource_uris": {"recordings": f"{base}/Recordings.json", "events": f"{base}/Events.json"},
            "to": c.to,
            "to_formatted": c.to,
            "trunk_sid": None,
            "uri": f"{base}.json",
        }

    def create_call(self, form: dict[str, list[str]]) -> ApiResult:
        with self.lock:
            to, from_ = _first(form, "To"), _first(form, "From")
            url, twiml = _first(form, "Url"), _first(form, "Twiml")
            callback = _first(form, "StatusCallback")
            if not to:
                return twilio_error(400, 21201, "No 'To' number is specified")
            if not from_:
                return twilio_error(400, 21213, "No 'From' number is specified")
            if not (url or twiml or _first(form, "ApplicationSid")):
                return twilio_error(400, 21205, "Url parameter is required.")
            if twiml is not None and len(twiml) > 4000:
                return twilio_error(400, 21205, "Twiml exceeds 4000 characters.")
            if not E164.match(to):
                return twilio_error(400, 21217, "Phone number does not appear to be valid")
            if from_ not in self.numbers:
                return twilio_error(
                    400, 21210, f"The source phone number provided, {from_}, is not yet verified."
                )
            events = form.get("StatusCallbackEvent") or []
            if any(e not in CALL_EVENTS for e in events):
                return twilio_error(400, 21626, "Invalid 'StatusCallbackEvent'")
            if callback and not self._valid_callback_url(callback):
                return twilio_error(400, 21609, f"The StatusCallback URL {callback} is not a valid URL.")
            now = self.clock.now()
            call = SimCall(
                sid=new_sid("CA"),
                account_sid=self.creds.account_sid,
                to=to,
                from_=from_,
                status="queued",
                status_callback=callback,
                status_callback_method=(_first(form, "StatusCallbackMethod") or "POST").upper(),
                # No StatusCallbackEvent: only 'completed' is sent (CreateCall description).
                events=frozenset(events or ["completed"]),
                twiml=twiml,
                url=url,
                date_created=now,
                date_updated=now,
                seq=self._next_seq(),
            )
            call.plan = self._call_plan(now, self.behaviours.get(to, NumberBehaviour()).call_outcome)
            self.calls[call.sid] = call
            return ApiResult(201, self.call_json(call))

    def _call_plan(self, now: datetime, outcome: CallOutcome) -> list[tuple[datetime, str]]:
        t = self.timings
        ring = now + timedelta(seconds=t.call_ring)
        plan = [(now, "initiated"), (ring, "ringing")]
        if outcome is CallOutcome.COMPLETED:
            answer = ring + timedelta(seconds=t.call_answer)
            plan += [(answer, "in-progress"), (answer + timedelta(seconds=t.call_duration), "completed")]
        else:
            plan.append((ring + timedelta(seconds=t.call_answer), outcome.value))
        return plan

    def _apply_call_status(self, c: SimCall, step: str, at: datetime) -> None:
        event = {"initiated": "initiated", "ringing": "ringing", "in-progress": "answered"}.get(
            step, "completed"
        )
        if step != "initiated":  # the resource goes queued -> ringing; 'initiated' is only a callback event
            c.status = step
        c.date_updated = at
        if step == "in-progress":
            c.start_time = at
        if event == "completed":
            c.end_time = at
            c.duration = int((at - c.start_time).total_seconds()) if c.start_time else 0
        if not c.status_callback or event not in c.events:
            if event == "completed":
                self._release_held(c)
            return
        c.sequence_number += 1
        params = [
            ("AccountSid", c.account_sid),
            ("ApiVersion", API_VERSION),
            ("CallSid", c.sid),
            # Whether 'initiated' carries CallStatus=initiated or queued: no Twilio page says
            # (https://www.twilio.com/docs/voice/api/call-resource#statuscallbackevent).
            ("CallStatus", step),
            ("CallbackSource", "call-progress-events"),
            ("Called", c.to),
            ("Caller", c.from_),
            ("Direction", "outbound-api"),
            ("From", c.from_),
            ("SequenceNumber", str(c.sequence_number - 1)),
            ("Timestamp", rfc2822(at) or ""),
            ("To", c.to),
        ]
        if event == "completed":
            params += [("CallDuration", str(c.duration or 0)), ("Duration", str(c.duration or 0))]
        self._callback(c, c.status_callback, c.status_callback_method, params)
        if event == "completed":
            self._release_held(c)

    def fetch_call(self, sid: str, path: str) -> ApiResult:
        with self.lock:
            c = self.calls.get(sid)
            if c is None:
                return twilio_error(404, 20404, f"The requested resource {path} was not found")
            return ApiResult(200, self.call_json(c))

    # ------------------------------------------------------------------ lifecycles

    def advance(self, *, force: bool = False) -> int:
        """Apply every lifecycle step that is due (all of them with force=True). Returns steps applied."""
        with self.lock:
            now = self.clock.now()
            applied = 0
            for m in self.messages.values():
                while m.plan and (force or m.plan[0][0] <= now):
                    due, status = m.plan.pop(0)
                    self._apply_message_status(m, status, min(due, now) if force else due)
                    applied += 1
            for c in self.calls.values():
                while c.plan and (force or c.plan[0][0] <= now):
                    due, step = c.plan.pop(0)
                    self._apply_call_status(c, step, min(due, now) if force else due)
                    applied += 1
            return applied

    def take_callbacks(self) -> list[Callback]:
        with self.lock:
            ready = list(self.outbox)
            self.outbox.clear()
            return ready

    # ------------------------------------------------------------------ inbound

    def inbound_message(
        self, from_: str, body: str, to: str | None
    ) -> tuple[SimMessage, list[tuple[str, str]]]:
        """A handset texts one of our numbers. Applies opt-out keywords; returns the webhook params."""
        with self.lock:
            to = to or self.creds.from_number
            now = self.clock.now()
            message = SimMessage(
                sid=new_sid("SM"),
                account_sid=self.creds.account_sid,
                to=to,
                from_=from_,
                body=body,
                messaging_service_sid=self.creds.messaging_service_sid,
                direction="inbound",
                status="received",
                status_callback=None,
                date_created=now,
                date_updated=now,
                date_sent=now,
                num_segments=segment_count(body),
                seq=self._next_seq(),
            )
            self.messages[message.sid] = message
            params = [
                ("AccountSid", message.account_sid),
                ("ApiVersion", API_VERSION),
                ("Body", body),
                ("From", from_),
                ("MessageSid", message.sid),
                ("MessagingServiceSid", self.creds.messaging_service_sid),
                ("NumMedia", "0"),
                ("NumSegments", str(message.num_segments)),
                ("SmsMessageSid", message.sid),
                ("SmsSid", message.sid),
                ("SmsStatus", "received"),
                ("To", to),
            ]
            keyword = body.strip().upper()  # only single-word messages are keywords
            if keyword in STOP_WORDS:
                self.opt_outs.add((from_, to))
                params.append(("OptOutType", "STOP"))  # Advanced Opt-Out on a Messaging Service
            elif keyword in START_WORDS:
                self.opt_outs.discard((from_, to))
                params.append(("OptOutType", "START"))
            elif keyword in HELP_WORDS:
                params.append(("OptOutType", "HELP"))
            return message, params

    # ------------------------------------------------------------------ Verify

    def service_json(self, s: SimService) -> dict[str, Any]:
        url = f"{self.verify_base_url}/v2/Services/{s.sid}"
        return {
            "sid": s.sid,
            "account_sid": self.creds.account_sid,
            "friendly_name": s.friendly_name,
            "code_length": s.code_length,
            "lookup_enabled": False,
            "psd2_enabled": False,
            "skip_sms_to_landlines": False,
            "dtmf_input_required": False,
            "tts_name": None,
            "do_not_share_warning_enabled": False,
            "custom_code_enabled": s.custom_code_enabled,
            "push": {"include_date": False, "apn_credential_sid": None, "fcm_credential_sid": None},
            "totp": {"issuer": None, "time_step": None, "code_length": None, "skew": None},
            "default_template_sid": None,
            "whatsapp": {"msg_service_sid": None, "from": None},
            "passkeys": None,
            "verify_event_subscription_enabled": False,
            "date_created": iso8601(s.date_created),
            "date_updated": iso8601(s.date_updated),
            "url": url,
            "links": {
                "verification_checks": f"{url}/VerificationCheck",
                "verifications": f"{url}/Verifications",
            },
        }

    def create_service(self, form: dict[str, list[str]]) -> ApiResult:
        with self.lock:
            name = _first(form, "FriendlyName")
            if not name or len(name) > 32:
                return twilio_error(400, 60200, "Invalid parameter: FriendlyName")
            length_raw = _first(form, "CodeLength") or "6"
            if not length_raw.isdigit() or not 4 <= int(length_raw) <= 10:
                return twilio_error(400, 60200, "Invalid parameter: CodeLength")
            now = self.clock.now()
            custom = (_first(form, "CustomCodeEnabled") or "false").lower() == "true"
            service = SimService(new_sid("VA"), name, int(length_raw), custom, now, now)
            self.services[service.sid] = service
            return ApiResult(201, self.service_json(service))

    def fetch_service(self, sid: str, path: str) -> ApiResult:
        with self.lock:
            service = self.services.get(sid)
            if service is None:
                return twilio_error(404, 20404, f"The requested resource {path} was not found")
            return ApiResult(200, self.service_json(service))

    def verification_json(self, v: SimVerification, *, check: bool = False) -> dict[str, Any]:
        body: dict[str, Any] = {
            "sid": v.sid,
            "service_sid": v.service_sid,
            "account_sid": self.creds.account_sid,
            "to": v.to,
            "channel": v.channel,
            "status": v.status,
            "valid": v.status == "approved",
            "amount": None,
            "payee": None,
            "date_created": iso8601(v.date_created),
            "date_updated": iso8601(v.date_updated),
        }
        if check:
            body["sna_attempts_error_codes"] = []
        else:
            body.update(
                {
                    "lookup": {},
                    "send_code_attempts": list(v.send_attempts),
                    "sna": None,
                    "url": f"{self.verify_base_url}/v2/Services/{v.service_sid}/Verifications/{v.sid}",
                }
            )
        return body

    def _expire(self, v: SimVerification, now: datetime) -> None:
        if v.status in ("pending", "max_attempts_reached") and now >= v.expires_at:
            v.status = "expired"
            v.date_updated = v.expires_at

    def _open_verification(self, service_sid: str, to: str, now: datetime) -> SimVerification | None:
        for v in self.verifications.values():
            if v.service_sid == service_sid and v.to == to:
                self._expire(v, now)
                if v.status in ("pending", "max_attempts_reached"):
                    return v
        return None

    def start_verification(self, service_sid: str, form: dict[str, list[str]], path: str) -> ApiResult:
        with self.lock:
            service = self.services.get(service_sid)
            if service is None:
                return twilio_error(404, 20404, f"The requested resource {path} was not found")
            to, channel = _first(form, "To"), _first(form, "Channel")
            if not to:
                return twilio_error(400, 60200, "Invalid parameter: To")
            if channel not in VERIFY_CHANNELS:
                return twilio_error(400, 60200, "Invalid parameter: Channel")
            if not (EMAIL.match(to) if channel == "email" else E164.match(to)):
                return twilio_error(400, 60200, "Invalid parameter: To")  # e.g. missing '+' (60200 page)
            custom = _first(form, "CustomCode")
            if custom is not None and (not service.custom_code_enabled or not 4 <= len(custom) <= 10):
                return twilio_error(400, 60200, "Invalid parameter: CustomCode")
            now = self.clock.now()
            channel_used = "sms" if channel == "auto" else channel
            existing = self._open_verification(service_sid, to, now)
            if existing is not None:
                if len(existing.send_attempts) >= self.MAX_SEND_ATTEMPTS:
                    return twilio_error(429, 60203, "Max send attempts reached")
                # Within the validity period a re-send carries the same code (rate-limits page).
                existing.send_attempts.append(
                    {"time": iso8601(now), "channel": channel_used.upper(), "attempt_sid": new_sid("VL")}
                )
                existing.channel = channel_used
                existing.date_updated = now
                return ApiResult(201, self.verification_json(existing))
            code = custom or "".join(secrets.choice("0123456789") for _ in range(service.code_length))
            v = SimVerification(
                sid=new_sid("VE"),
                service_sid=service_sid,
                to=to,
                channel=channel_used,
                code=code,
                status="pending",
                date_created=now,
                date_updated=now,
                expires_at=now + timedelta(seconds=self.timings.verification_ttl),
                send_attempts=[
                    {"time": iso8601(now), "channel": channel_used.upper(), "attempt_sid": new_sid("VL")}
                ],
            )
            self.verifications[v.sid] = v
            return ApiResult(201, self.verification_json(v))

    def check_verification(self, service_sid: str, form: dict[str, list[str]], path: str) -> ApiResult:
        with self.lock:
            if service_sid not in self.services:
                return twilio_error(404, 20404, f"The requested resource {path} was not found")
            code = _first(form, "Code")
            to, vsid = _first(form, "To"), _first(form, "VerificationSid")
            if code is None or not 4 <= len(code) <= 10:
                return twilio_error(400, 60200, "Invalid parameter: Code")
            if not to and not vsid:
                return twilio_error(400, 60200, "Invalid parameter: To")
            now = self.clock.now()
            v: SimVerification | None
            if vsid:
                v = self.verifications.get(vsid)
                if v is not None:
                    self._expire(v, now)
                    if v.service_sid != service_sid or v.status not in ("pending", "max_attempts_reached"):
                        v = None
            else:
                v = self._open_verification(service_sid, to or "", now)
            if v is None:
                # Approved or expired verifications are soft-deleted: 404 / 20404 (20404 page).
                return twilio_error(404, 20404, f"The requested resource {path} was not found")
            if v.check_attempts >= self.MAX_CHECK_ATTEMPTS:
                v.status = "max_attempts_reached"
                v.date_updated = now
                return twilio_error(429, 60202, "Max check attempts reached")
            v.check_attempts += 1
            v.date_updated = now
            if secrets.compare_digest(code.encode(), v.code.encode()):
                v.status = "approved"
            # A wrong code answers 200 with status 'pending' (observed by
            # https://dev.classmethod.jp/articles/error-handling-on-twilio-verify/, 2024).
            return ApiResult(200, self.verification_json(v, check=True))

    def fetch_verification(self, service_sid: str, sid: str, path: str) -> ApiResult:
        with self.lock:
            v = self.verifications.get(sid)
            if v is not None:
                self._expire(v, self.clock.now())
            if v is None or v.service_sid != service_sid or v.status in ("approved", "expired"):
                return twilio_error(404, 20404, f"The requested resource {path} was not found")
            return ApiResult(200, self.verification_json(v))

    def update_verification(
        self, service_sid: str, sid: str, form: dict[str, list[str]], path: str
    ) -> ApiResult:
        with self.lock:
            status = _first(form, "Status")
            if status not in ("canceled", "approved"):
                return twilio_error(400, 60200, "Invalid parameter: Status")
            v = self.verifications.get(sid)
            now = self.clock.now()
            if v is not None:
                self._expire(v, now)
            if (
                v is None
                or v.service_sid != service_sid
                or v.status not in ("pending", "max_attempts_reached")
            ):
                return twilio_error(404, 20404, f"The requested resource {path} was not found")
            v.status = status
            v.date_updated = now
            return ApiResult(200, self.verification_json(v))


class _Listed(Protocol):
    sid: str


_T = TypeVar("_T", bound=_Listed)


def _page(
    query: dict[str, list[str]],
    path: str,
    items: list[_T],
    key: str,
    filters: list[tuple[str, str]],
    render: Callable[[_T], dict[str, Any]],
) -> ApiResult:
    """One page of a 2010-04-01 list in Twilio's envelope (ListMessageResponse in the OpenAPI subset):
    Page/PageSize, and next_page_uri carrying a PageToken (PA + last sid) plus every filter."""
    try:
        page_size = int(_first(query, "PageSize") or 50)
        page = int(_first(query, "Page") or 0)
    except ValueError:
        return twilio_error(400, 20001, "Invalid PageSize or Page")
    if not 1 <= page_size <= 1000 or page < 0:
        return twilio_error(400, 20001, "PageSize must be 1..1000")
    token = _first(query, "PageToken")
    if token and token.startswith("PA"):
        after = token[2:]
        sids = [item.sid for item in items]
        start = sids.index(after) + 1 if after in sids else len(items)
    else:
        start = page * page_size
    chunk = items[start : start + page_size]

    def uri(page_no: int, page_token: str | None = None) -> str:
        params = [*filters, ("PageSize", str(page_size)), ("Page", str(page_no))]
        if page_token:
            params.append(("PageToken", page_token))
        return f"{path}?{urlencode(params)}"

    has_more = start + page_size < len(items)
    body = {
        "end": start + len(chunk) - 1 if chunk else 0,
        "first_page_uri": uri(0),
        "next_page_uri": uri(page + 1, "PA" + chunk[-1].sid) if has_more and chunk else None,
        "page": page,
        "page_size": page_size,
        "previous_page_uri": uri(page - 1) if page > 0 else None,
        "start": start,
        "uri": uri(page, token),
        key: [render(item) for item in chunk],
    }
    return ApiResult(200, body)


def _parse_day(raw: str) -> datetime | None:
    """DateSent filters accept YYYY-MM-DD and other formats (spec examples); compared by UTC day."""
    for fmt in ("%Y-%m-%d", "%Y-%m-%d %H:%M:%S.%f", "%Y-%m-%dT%H:%M:%SZ"):
        try:
            return datetime.strptime(raw, fmt).replace(tzinfo=UTC)
        except ValueError:
            continue
    try:
        return parsedate_to_datetime(raw).astimezone(UTC)
    except (TypeError, ValueError):
        return None


def _compare_day(moment: datetime, day: datetime, op: str) -> bool:
    a, b = moment.astimezone(UTC).date(), day.date()
    return a == b if op == "eq" else a >= b if op == "ge" else a <= b
