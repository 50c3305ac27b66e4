"""Typed views of the Twilio resources the connector reads (validated once, at the client edge).

Twilio adds response fields without notice, so unknown fields are ignored here (unlike rule files,
where a stray key is an error). Messages/Calls dates are RFC 2822 strings, Verify dates ISO 8601
(https://www.twilio.com/docs/messaging/api/message-resource,
https://www.twilio.com/docs/verify/api/verification); both become timezone-aware datetimes.
"""

from __future__ import annotations

from datetime import datetime
from email.utils import parsedate_to_datetime
from typing import Annotated, Any

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field

# Terminal outbound statuses: a later callback never moves a message out of these
# (https://www.twilio.com/docs/messaging/guides/track-outbound-message-status).
TERMINAL_MESSAGE_STATUSES = frozenset({"delivered", "undelivered", "failed", "read", "canceled"})
TERMINAL_CALL_STATUSES = frozenset({"completed", "busy", "failed", "no-answer", "canceled"})


def parse_twilio_datetime(value: Any) -> datetime | None:
    """RFC 2822 ('Thu, 24 Aug 2023 05:01:45 +0000') or ISO 8601 ('2015-07-30T20:00:00Z')."""
    if value is None or value == "":
        return None
    if isinstance(value, datetime):
        return value
    if not isinstance(value, str):
        raise ValueError(f"expected a date string, got {type(value).__name__}")
    if value[:1].isdigit():
        return datetime.fromisoformat(value.replace("Z", "+00:00"))
    return parsedate_to_datetime(value)


TwilioDatetime = Annotated[datetime | None, BeforeValidator(parse_twilio_datetime)]


class _Resource(BaseModel):
    model_config = ConfigDict(frozen=True, extra="ignore", populate_by_name=True)


class MessageRecord(_Resource):
    """A Message resource (api.v2010.account.message)."""

    sid: str
    account_sid: str
    status: str
    to: str | None = None
    from_: str | None = Field(default=None, alias="from")
    body: str | None = None
    messaging_service_sid: str | None = None
    direction: str | None = None
    num_segments: int | None = None
    num_media: int | None = None
    error_code: int | None = None
    error_message: str | None = None
    price: str | None = None
    price_unit: str | None = None
    date_created: TwilioDatetime = None
    date_sent: TwilioDatetime = None
    date_updated: TwilioDatetime = None

    @property
    def is_terminal(self) -> bool:
        return self.status in TERMINAL_MESSAGE_STATUSES


class SendResult(MessageRecord):
    """What Twilio answered to a send: the new Message (status queued, or accepted via a Messaging Service)."""


class CallRecord(_Resource):
    """A Call resource (api.v2010.account.call)."""

    sid: str
    account_sid: str
    status: str
    to: str | None = None
    from_: str | None = Field(default=None, alias="from")
    direction: str | None = None
    duration: int | None = None
    answered_by: str | None = None
    queue_time: str | None = None
    price: str | None = None
    date_created: TwilioDatetime = None
    start_time: TwilioDatetime = None
    end_time: TwilioDatetime = None


class VerificationResult(_Resource):
    """A Verification or VerificationCheck. `status`: pending, approved, canceled, max_attempts_reached,
    deleted, failed, expired. A check answering `pending` means the code was wrong."""

    sid: str
    service_sid: str
    status: str
    to: str | None = None
    channel: str | None = None
    valid: bool | None = None
    date_created: TwilioDatetime = None
    date_updated: TwilioDatetime = None

    @property
    def approved(self) -> bool:
        return self.status == "approved"


class VerifyService(_Resource):
    sid: str
    friendly_name: str | None = None
    code_length: int | None = None


class AccountInfo(_Resource):
    """The Account resource: enough for a 'can I reach Twilio with these credentials' check."""

    sid: str
    friendly_name: str | None = None
    status: str | None = None
    type: str | None = None


def _lower_keys(value: Any) -> Any:
    # Twilio's number resources are not consistent about case (AvailablePhoneNumbers has answered
    # "SMS"/"MMS"); reading the keys case-insensitively costs nothing. None means "not stated".
    if value is None:
        return {}
    if isinstance(value, dict):
        return {str(k).lower(): v for k, v in value.items()}
    return value


class NumberCapabilities(_Resource):
    """What a number can do (`capabilities` of an IncomingPhoneNumber); a missing flag means no."""

    sms: bool = False
    voice: bool = False
    mms: bool = False
    fax: bool = False


class IncomingNumber(_Resource):
    """An IncomingPhoneNumber (PN...): a phone number the account owns."""

    sid: str
    phone_number: str
    account_sid: str | None = None
    friendly_name: str | None = None
    status: str | None = None
    capabilities: Annotated[NumberCapabilities, BeforeValidator(_lower_keys)] = Field(
        default_factory=NumberCapabilities
    )
