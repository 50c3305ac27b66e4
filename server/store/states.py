"""The life of an outbox message, as data: statuses, their order, and how Twilio's words map to them.

State machine (who moves a message, and when):

    planned ──claim──► (still planned, claimed_by set) ──mark_submitting──► submitting ──HTTP──►
        │                     │                                              │
        │                     ├─ hold (quiet hours) ──► held ──(due)──► claimable again
        │                     ├─ mark_skipped ───────► skipped      (terminal, never sent)
        │                     └─ mark_opted_out ─────► opted_out    (terminal, never sent)
        │
    submitting ─ 2xx ──────────► queued ─► sending ─► sent ─► delivered   (callbacks; monotonic)
               ─ 429 ──────────► planned (requeue with next_attempt_at: Twilio did not process it)
               ─ permanent 4xx ► failed (terminal)      ─ 21610 ► opted_out (terminal)
               ─ timeout/5xx ──► unknown  (the request may have reached Twilio: reconcile, never resend blind)
               ─ worker crash ─► unknown  (claim expired while submitting; found by the next claim_due)
    unknown ─ reconcile finds the message ─► queued/sent/... ; proves it absent ─► planned (requeue)
            ─ reconcile cannot decide (list too long, ambiguous, refused) ─► needs_review
    needs_review ─ an operator: `messages resolve JOB --sent SID` ─► queued/sent/... (that SID)
                 ─ an operator: `messages resolve JOB --not-sent` ─► planned (sent once more)
                 ─ a status callback naming the job (?job=) ─► queued/sent/... (Twilio had it)
    queued/sending/sent ─ callback ─► undelivered / failed (terminal)

`submitting` is our own "HTTP call in flight" state and is committed BEFORE the call, so a crash
can never lose the fact that a send may have happened. Twilio's own `sending` ("being handed to
the carrier", after `queued`) is a different thing and keeps its Twilio name and place in the
order queued < sending < sent < delivered
(https://www.twilio.com/docs/messaging/api/message-resource#message-status-values).

Ordering rule for status updates: a message only moves to a status of higher rank, and never out
of a terminal status. So a late `sent` never overwrites `delivered`, and a replayed callback is a
no-op (duplicates and out-of-order delivery must be harmless:
https://www.twilio.com/docs/messaging/guides/track-outbound-message-status).
"""

from __future__ import annotations

from enum import StrEnum


class MessageStatus(StrEnum):
    PLANNED = "planned"
    HELD = "held"
    SUBMITTING = "submitting"
    UNKNOWN = "unknown"
    NEEDS_REVIEW = "needs_review"  # reconciliation could not prove sent or not sent: a person decides
    QUEUED = "queued"
    SENDING = "sending"
    SENT = "sent"
    DELIVERED = "delivered"
    UNDELIVERED = "undelivered"
    FAILED = "failed"
    SKIPPED = "skipped"
    OPTED_OUT = "opted_out"


class Channel(StrEnum):
    SMS = "sms"
    VOICE = "voice"


class EventSource(StrEnum):
    ENGINE = "engine"  # the row was born (planned or skipped)
    DISPATCHER = "dispatcher"
    CALLBACK = "callback"
    RECONCILE = "reconcile"
    OPERATOR = "operator"  # a person resolved it (`ml-connector messages resolve`)


S = MessageStatus

TERMINAL: frozenset[MessageStatus] = frozenset({S.DELIVERED, S.UNDELIVERED, S.FAILED, S.SKIPPED, S.OPTED_OUT})

# Statuses the dispatcher may claim for sending.
CLAIMABLE: frozenset[MessageStatus] = frozenset({S.PLANNED, S.HELD})

# Statuses in which Twilio may or may not hold the message.
IN_DOUBT: frozenset[MessageStatus] = frozenset({S.SUBMITTING, S.UNKNOWN, S.NEEDS_REVIEW})

RANK: dict[MessageStatus, int] = {
    S.PLANNED: 0,
    S.HELD: 0,
    S.SUBMITTING: 1,
    S.UNKNOWN: 1,
    S.NEEDS_REVIEW: 1,
    S.QUEUED: 2,
    S.SENDING: 3,
    S.SENT: 4,
    S.DELIVERED: 5,
    S.UNDELIVERED: 5,
    S.FAILED: 5,
    S.SKIPPED: 5,
    S.OPTED_OUT: 5,
}

# Twilio Message statuses (message_enum_status) -> ours. Inbound-only statuses are absent on purpose.
SMS_STATUS_MAP: dict[str, MessageStatus] = {
    "accepted": S.QUEUED,  # a Messaging Service is choosing a sender
    "scheduled": S.QUEUED,
    "queued": S.QUEUED,
    "sending": S.SENDING,
    "sent": S.SENT,
    "delivered": S.DELIVERED,
    "read": S.DELIVERED,  # WhatsApp/RCS read receipt implies delivery
    "undelivered": S.UNDELIVERED,
    "failed": S.FAILED,
    "canceled": S.FAILED,
}

# Twilio Call statuses -> ours: a completed call is the voice equivalent of "delivered".
VOICE_STATUS_MAP: dict[str, MessageStatus] = {
    "queued": S.QUEUED,
    "initiated": S.SENDING,
    "ringing": S.SENDING,
    "in-progress": S.SENT,
    "completed": S.DELIVERED,
    "busy": S.UNDELIVERED,
    "no-answer": S.UNDELIVERED,
    "failed": S.FAILED,
    "canceled": S.FAILED,
}


def map_twilio_status(channel: str, twilio_status: str) -> MessageStatus | None:
    """Our status for a Twilio status word, or None when the word means nothing for this channel."""
    table = VOICE_STATUS_MAP if channel == Channel.VOICE else SMS_STATUS_MAP
    return table.get(twilio_status.strip().lower())


def is_advance(current: MessageStatus, new: MessageStatus) -> bool:
    """True when moving from `current` to `new` follows the ordering rule (strictly forward, not out of terminal)."""
    if current in TERMINAL:
        return False
    return RANK[new] > RANK[current]
