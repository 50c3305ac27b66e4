"""What a Twilio error code on a message means, in words a finance team can act on.

Titles are Twilio's (../shared/reference/data/twilio/error_codes.json, which cites each official
page); the meanings are shortened from the same file. Only codes that can end up on an outbox
message (an API refusal when sending, or a failed/undelivered status callback) are listed; the
audit pages show "Twilio error <code>" and a link to Twilio's page for anything else.
The app never reads ../shared at run time: tests/server/web/audit checks this table against that file.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class ErrorMeaning:
    code: int
    title: str
    meaning: str

    @property
    def docs_url(self) -> str:
        return f"https://www.twilio.com/docs/errors/{self.code}"


_TABLE: tuple[tuple[int, str, str], ...] = (
    (10004, "Call concurrency limit exceeded", "Too many calls at once for this account; retried later."),
    (
        20003,
        "Permission Denied",
        "Twilio refused our credentials (wrong or deleted API key, suspended account).",
    ),
    (
        20429,
        "Too many requests",
        "Twilio asked us to slow down; the request was not processed and is retried.",
    ),
    (21210, "'From' phone number not verified", "The caller ID is not a Twilio number of this account."),
    (21211, "Invalid 'To' Phone Number", "The recipient's number is not a valid phone number."),
    (21212, "Invalid 'From' Number", "The configured sender is not a valid number or sender ID."),
    (21214, "'To' phone number cannot be reached", "The call could not reach the number."),
    (21217, "Phone number does not appear to be valid", "The number called does not look valid."),
    (
        21408,
        "Permission to send an SMS has not been enabled for the region indicated by the 'To' number",
        "Sending to this country is switched off in the Twilio account's geo permissions.",
    ),
    (
        21601,
        "Phone number is not a valid SMS-capable inbound phone number",
        "The sender number does not belong to this Twilio account.",
    ),
    (21602, "Message body is required", "The message had no text."),
    (21604, "'To' phone number is required to send a Message", "The request named no recipient."),
    (
        21606,
        "The 'From' phone number provided is not a valid message-capable Twilio phone number for this destination/account",
        "The sender cannot text this destination (not SMS-capable, another country, or still porting).",
    ),
    (
        21608,
        "The 'to' phone number provided is not yet verified for this account",
        "A trial account can only text numbers verified in Twilio.",
    ),
    (21609, "Invalid 'StatusCallback'", "The status callback URL was not accepted."),
    (
        21610,
        "Attempt to send to unsubscribed recipient",
        "The recipient replied STOP; Twilio blocks texts until they reply START.",
    ),
    (
        21611,
        "Source number has exceeded max number of queued messages",
        "More than 10 hours of messages are queued on the sender; sent again later.",
    ),
    (
        21612,
        "Message cannot be sent with the current combination of 'To' and/or 'From' parameters",
        "This sender cannot reach this recipient's country or network.",
    ),
    (21614, "'To' number is not a valid mobile number", "The number is probably a landline or mistyped."),
    (21617, "Message body exceeds the 1600 character limit", "The message text is too long to send."),
    (21635, "'To' number cannot be a landline", "The number is a landline, which cannot receive texts."),
    (
        30001,
        "Queue overflow",
        "Too many messages were queued for the sender; the message expired in the queue.",
    ),
    (30002, "Account suspended", "The Twilio account is suspended."),
    (
        30003,
        "Unreachable destination handset",
        "The phone is off, out of signal or cannot receive texts right now.",
    ),
    (30004, "Message blocked", "The recipient or their carrier blocked the message."),
    (30005, "Unknown destination handset", "The number probably does not exist or was deactivated."),
    (30006, "Landline or unreachable carrier", "The number is a landline or its carrier cannot be reached."),
    (
        30007,
        "Message filtered (carrier violation / spam filter)",
        "The carrier filtered the message as unwanted; review the wording and sender registration.",
    ),
    (30008, "Unknown error", "Delivery failed for a reason the carrier did not give."),
    (
        30034,
        "US A2P 10DLC - Message from an Unregistered Number",
        "US carriers refuse texts from a sender not registered for A2P 10DLC.",
    ),
)

ERROR_MEANINGS: dict[int, ErrorMeaning] = {
    code: ErrorMeaning(code, title, meaning) for code, title, meaning in _TABLE
}


def meaning_of(code: str | int | None) -> ErrorMeaning | None:
    """The entry for a stored error code ("30003" or 30003); None when absent or not a Twilio number."""
    if code is None:
        return None
    text = str(code).strip()
    if not text.isdigit():
        return None
    return ERROR_MEANINGS.get(int(text))
