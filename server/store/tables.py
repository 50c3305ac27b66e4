"""The store's tables (SQLModel). One class per table; names say what a row is.

Every timestamp is timezone-aware UTC (UTCDateTime). Statuses are short strings checked by a
CHECK constraint against the enums in states.py, so a typo cannot reach the database.
Schema changes go through an alembic migration (server/store/migrations); a test checks that
the migrations produce exactly these models.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlmodel import Field, SQLModel

from server.store.columns import UTCDateTime, json_type
from server.store.states import Channel, MessageStatus

# Deterministic constraint names, so migrations can refer to them on both backends.
SQLModel.metadata.naming_convention = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


def _in(column: str, values: Iterable[str]) -> str:
    items = ", ".join(f"'{v}'" for v in values)
    return f"{column} IN ({items})"


SUBSCRIPTION_STATUSES = ("creating", "active", "renewing", "dropped", "deleted")
INBOX_STATUSES = ("pending", "processing", "done", "failed")
CHANGE_TYPES = ("created", "updated", "deleted", "collection")


class BcSubscription(SQLModel, table=True):
    """A Business Central webhook subscription we own, one per (company, entity) that rules need."""

    __tablename__ = "bc_subscriptions"
    __table_args__ = (
        sa.CheckConstraint(_in("status", SUBSCRIPTION_STATUSES), name="status"),
        sa.Index(None, "company_id", "entity"),
    )

    id: int | None = Field(default=None, primary_key=True)
    # BC's id; null while the create call (and its handshake) is in flight.
    subscription_id: str | None = Field(default=None, sa_type=sa.String(64), unique=True)
    company_id: str = Field(sa_type=sa.String(64))
    entity: str = Field(sa_type=sa.String(64))
    resource: str = Field(sa_type=sa.String(512))
    notification_url: str = Field(sa_type=sa.String(512))
    # "sha256:<hex>" of the shared secret BC echoes in every notification: we only ever compare it,
    # so the secret itself is never stored (server.store.subscriptions.client_state_matches).
    client_state_hash: str = Field(sa_type=sa.String(80))
    etag: str | None = Field(default=None, sa_type=sa.String(255))
    expires_at: datetime | None = Field(default=None, sa_type=UTCDateTime)
    status: str = Field(default="creating", sa_type=sa.String(16))
    last_error: str | None = Field(default=None, sa_type=sa.Text)
    created_at: datetime = Field(sa_type=UTCDateTime)
    updated_at: datetime = Field(sa_type=UTCDateTime)


def _any_of(column: str, values: Iterable[str]) -> str:
    """`column = 'a' OR column = 'b' ...`: what `_in` says, in a form SQLite checks without a table.

    SQLite codes `x IN (<3 or more constants>)` as a temporary index built each time the statement
    runs, so a CHECK in that form builds one for every row inserted (an executemany runs the
    statement once per row): for the inbox's two such checks, about half the database time of a
    100-item webhook batch (bench: ingest). Comparisons chained with OR cost no more than no CHECK.
    """
    return " OR ".join(f"{column} = '{v}'" for v in values)


class InboxNotification(SQLModel, table=True):
    """One BC webhook notification item, stored before the webhook answers (durable inbox)."""

    __tablename__ = "notification_inbox"
    __table_args__ = (
        # The table takes every webhook item, 100s per POST: its checks are _any_of, not _in.
        sa.CheckConstraint(_any_of("status", INBOX_STATUSES), name="status"),
        sa.CheckConstraint(_any_of("change_type", CHANGE_TYPES), name="change_type"),
        sa.Index(None, "status", "id"),
    )

    id: int | None = Field(default=None, primary_key=True)
    received_at: datetime = Field(sa_type=UTCDateTime)
    subscription_id: str = Field(sa_type=sa.String(64))
    company_id: str = Field(sa_type=sa.String(64))
    entity: str = Field(sa_type=sa.String(64))
    resource: str = Field(sa_type=sa.Text)
    change_type: str = Field(sa_type=sa.String(16))
    record_id: str | None = Field(default=None, sa_type=sa.String(64))
    last_modified: datetime | None = Field(default=None, sa_type=UTCDateTime)
    # sha256(subscription|resource|changeType|lastModifiedDateTime): a BC redelivery is not stored twice.
    dedupe_key: str = Field(sa_type=sa.String(64), unique=True)
    status: str = Field(default="pending", sa_type=sa.String(16))
    attempts: int = Field(default=0)
    claimed_by: str | None = Field(default=None, sa_type=sa.String(128))
    claim_expires: datetime | None = Field(default=None, sa_type=UTCDateTime)
    last_error: str | None = Field(default=None, sa_type=sa.Text)
    processed_at: datetime | None = Field(default=None, sa_type=UTCDateTime)


class PollWatermark(SQLModel, table=True):
    """How far polling got for (company, entity, kind), plus the records seen inside the overlap window."""

    __tablename__ = "poll_watermarks"

    company_id: str = Field(primary_key=True, sa_type=sa.String(64))
    entity: str = Field(primary_key=True, sa_type=sa.String(64))
    kind: str = Field(primary_key=True, sa_type=sa.String(32))
    last_modified: datetime | None = Field(default=None, sa_type=UTCDateTime)
    # {record id: lastModifiedDateTime ISO} for records modified within the overlap window before
    # last_modified: a re-read of the overlap skips exactly these versions.
    seen: dict[str, str] = Field(default_factory=dict, sa_type=json_type())
    updated_at: datetime = Field(sa_type=UTCDateTime)


class RecordSnapshot(SQLModel, table=True):
    """The last version of a BC record we evaluated (crossing rules compare against it)."""

    __tablename__ = "record_snapshots"

    company_id: str = Field(primary_key=True, sa_type=sa.String(64))
    entity: str = Field(primary_key=True, sa_type=sa.String(64))
    record_id: str = Field(primary_key=True, sa_type=sa.String(64))
    data: dict[str, Any] = Field(default_factory=dict, sa_type=json_type())
    etag: str | None = Field(default=None, sa_type=sa.String(255))
    last_modified: datetime | None = Field(default=None, sa_type=UTCDateTime)
    seen_at: datetime = Field(sa_type=UTCDateTime)


class OutboxMessage(SQLModel, table=True):
    """A message the rules decided to send: the only place a send is born. See states.py for its life."""

    __tablename__ = "outbox"
    __table_args__ = (
        sa.CheckConstraint(_in("status", [s.value for s in MessageStatus]), name="status"),
        sa.CheckConstraint(_in("channel", [c.value for c in Channel]), name="channel"),
        sa.Index(None, "status", "next_attempt_at"),
        sa.Index(None, "entity", "record_id"),
    )

    id: int | None = Field(default=None, primary_key=True)
    job_id: str = Field(sa_type=sa.String(128), unique=True)
    rule_id: str = Field(sa_type=sa.String(128), index=True)
    entity: str = Field(sa_type=sa.String(64))
    company_id: str = Field(sa_type=sa.String(64))
    record_id: str | None = Field(default=None, sa_type=sa.String(64))
    record_number: str | None = Field(default=None, sa_type=sa.String(64))
    recipient: str | None = Field(default=None, sa_type=sa.String(32), index=True)
    channel: str = Field(sa_type=sa.String(8))
    body: str = Field(sa_type=sa.Text)
    segments: int = Field(default=1)
    dedupe_key: str = Field(sa_type=sa.String(512))
    reason: str | None = Field(default=None, sa_type=sa.Text)
    # The rule's send window, carried so the dispatcher can hold without reloading rules.
    timezone: str = Field(default="UTC", sa_type=sa.String(64))
    quiet_hours: str | None = Field(default=None, sa_type=sa.String(16))  # "HH:MM-HH:MM" local
    status: str = Field(default=MessageStatus.PLANNED.value, sa_type=sa.String(16))
    # Twilio's raw word for the current status (ours folds e.g. 'accepted' into 'queued').
    twilio_status: str | None = Field(default=None, sa_type=sa.String(32))
    twilio_sid: str | None = Field(default=None, sa_type=sa.String(64), unique=True)
    attempts: int = Field(default=0)
    next_attempt_at: datetime = Field(sa_type=UTCDateTime)
    error_code: str | None = Field(default=None, sa_type=sa.String(32))
    error_message: str | None = Field(default=None, sa_type=sa.Text)
    hold_until: datetime | None = Field(default=None, sa_type=UTCDateTime)
    claimed_by: str | None = Field(default=None, sa_type=sa.String(128))
    claim_expires: datetime | None = Field(default=None, sa_type=UTCDateTime)
    is_test: bool = Field(default=False)
    # On an invoice's row that went out inside a grouped reminder: the grouped message's job id.
    group_job_id: str | None = Field(default=None, sa_type=sa.String(128), index=True)
    created_at: datetime = Field(sa_type=UTCDateTime, index=True)
    updated_at: datetime = Field(sa_type=UTCDateTime)


class MessageEvent(SQLModel, table=True):
    """One step in a message's status history (ours or Twilio's)."""

    __tablename__ = "message_events"
    __table_args__ = (sa.Index(None, "job_id", "id"),)

    id: int | None = Field(default=None, primary_key=True)
    job_id: str = Field(
        sa_type=sa.String(128), foreign_key="outbox.job_id", sa_column_kwargs={"nullable": False}
    )
    status: str = Field(sa_type=sa.String(32))  # ours, or Twilio's word when it maps to nothing
    twilio_status: str | None = Field(default=None, sa_type=sa.String(32))
    source: str = Field(sa_type=sa.String(16))
    error_code: str | None = Field(default=None, sa_type=sa.String(32))
    detail: str | None = Field(default=None, sa_type=sa.Text)
    params: dict[str, Any] | None = Field(default=None, sa_type=json_type(none_as_null=True))
    # "sid:status" for callbacks: a replayed callback is recorded once (callbacks may repeat).
    dedupe_key: str | None = Field(default=None, sa_type=sa.String(128), unique=True)
    changed: bool = Field(default=False)  # did this event move the message's status?
    at: datetime = Field(sa_type=UTCDateTime)


class OptOut(SQLModel, table=True):
    """A recipient who said STOP (or whose send failed with 21610), per sender or '*' for all."""

    __tablename__ = "opt_outs"
    __table_args__ = (sa.UniqueConstraint("phone", "sender"),)

    id: int | None = Field(default=None, primary_key=True)
    phone: str = Field(sa_type=sa.String(32))
    sender: str = Field(default="*", sa_type=sa.String(64))
    active: bool = Field(default=True)
    source: str = Field(sa_type=sa.String(32))
    # None for a row a START created (an opt-in with no opt-out before it keeps the time to beat).
    opted_out_at: datetime | None = Field(default=None, sa_type=UTCDateTime)
    opted_in_at: datetime | None = Field(default=None, sa_type=UTCDateTime)
    updated_at: datetime = Field(sa_type=UTCDateTime)
    # When the message (or event) that set the current state happened: a change applies only when
    # its own time is not older (server/store/optouts.py). state_sid: that inbound message, if any.
    state_at: datetime = Field(sa_type=UTCDateTime)
    state_sid: str | None = Field(default=None, sa_type=sa.String(64))


class InboundMessage(SQLModel, table=True):
    """An inbound text Twilio delivered to our webhook, once per MessageSid (a replay finds it here)."""

    __tablename__ = "inbound_messages"

    sid: str = Field(primary_key=True, sa_type=sa.String(64))
    phone: str = Field(sa_type=sa.String(32))  # From: the handset
    action: str | None = Field(default=None, sa_type=sa.String(16))  # opt-out | opt-in | help | None
    # The time the opt-out registry orders it by: Twilio's date_created when read, else received_at.
    message_at: datetime = Field(sa_type=UTCDateTime)
    twilio_created_at: datetime | None = Field(default=None, sa_type=UTCDateTime)
    received_at: datetime = Field(sa_type=UTCDateTime)
    applied: bool = Field(default=False)  # did it change the opt-out registry?


class Lease(SQLModel, table=True):
    """A named, expiring lock held by one instance (schedules, the subscription manager)."""

    __tablename__ = "leases"

    name: str = Field(primary_key=True, sa_type=sa.String(128))
    holder: str = Field(sa_type=sa.String(128))
    expires_at: datetime = Field(sa_type=UTCDateTime)
    acquired_at: datetime = Field(sa_type=UTCDateTime)
    # Grows each time the lease changes hands: a fencing token for work done under it.
    generation: int = Field(default=1)


class AuditEntry(SQLModel, table=True):
    """Who did what to which thing (OTP changes, credentials, admin actions)."""

    __tablename__ = "audit_log"

    id: int | None = Field(default=None, primary_key=True)
    at: datetime = Field(sa_type=UTCDateTime, index=True)
    actor: str = Field(sa_type=sa.String(128))
    action: str = Field(sa_type=sa.String(64))
    subject: str = Field(sa_type=sa.String(255))
    details: dict[str, Any] = Field(default_factory=dict, sa_type=json_type())


CREDENTIAL_NAMES = ("bc", "twilio")
# Life of an OTP-gated change (server/changes.py). Terminal: written, conflict, rejected,
# code_expired, expired, failed. approved -> writing -> written are conditional UPDATEs.
CHANGE_STATUSES = (
    "new",
    "pending",
    "approved",
    "writing",
    "written",
    "conflict",
    "rejected",
    "code_expired",
    "expired",
    "failed",
)


class StoredCredential(SQLModel, table=True):
    """One credential set (BC or Twilio), a single Fernet token: nothing readable without a key."""

    __tablename__ = "credentials"
    __table_args__ = (sa.CheckConstraint(_in("name", CREDENTIAL_NAMES), name="name"),)

    name: str = Field(primary_key=True, sa_type=sa.String(16))
    ciphertext: str = Field(sa_type=sa.Text)
    updated_at: datetime = Field(sa_type=UTCDateTime)
    updated_by: str = Field(sa_type=sa.String(128))


class PendingChange(SQLModel, table=True):
    """A sensitive change to a BC record, written only after the approver's Verify code checks out."""

    __tablename__ = "pending_changes"
    __table_args__ = (
        sa.CheckConstraint(_in("status", CHANGE_STATUSES), name="status"),
        sa.CheckConstraint("channel IN ('sms', 'call')", name="channel"),
        sa.Index(None, "status", "expires_at"),
        sa.Index(None, "entity", "record_id"),
    )

    id: int | None = Field(default=None, primary_key=True)
    company_id: str = Field(sa_type=sa.String(64))
    entity: str = Field(sa_type=sa.String(64))
    record_id: str = Field(sa_type=sa.String(64))
    changes: dict[str, Any] = Field(default_factory=dict, sa_type=json_type())
    # The record's @odata.etag when the change was proposed: the PATCH sends it as If-Match.
    etag: str = Field(sa_type=sa.String(255))
    approver: str = Field(sa_type=sa.String(32))
    approver_role: str | None = Field(default=None, sa_type=sa.String(64))
    channel: str = Field(sa_type=sa.String(8))
    verification_sid: str | None = Field(default=None, sa_type=sa.String(64), unique=True)
    status: str = Field(default="new", sa_type=sa.String(16))
    attempts: int = Field(default=0)
    max_attempts: int = Field(default=5)
    requested_by: str = Field(sa_type=sa.String(128))
    reason: str | None = Field(default=None, sa_type=sa.Text)
    result_etag: str | None = Field(default=None, sa_type=sa.String(255))
    created_at: datetime = Field(sa_type=UTCDateTime)
    expires_at: datetime = Field(sa_type=UTCDateTime)
    updated_at: datetime = Field(sa_type=UTCDateTime)
    written_at: datetime | None = Field(default=None, sa_type=UTCDateTime)


PAUSE_SCOPES = ("customer", "invoice")


class ReminderPause(SQLModel, table=True):
    """No reminders for a customer or one invoice until a date (a promise to pay, a dispute)."""

    __tablename__ = "reminder_pauses"
    __table_args__ = (
        sa.CheckConstraint(_in("scope", PAUSE_SCOPES), name="scope"),
        sa.Index(None, "scope", "subject"),
    )

    id: int | None = Field(default=None, primary_key=True)
    scope: str = Field(sa_type=sa.String(16))
    # The customer's or invoice's number (C0042, PS-INV104187) or its BC id (guid), as given.
    subject: str = Field(sa_type=sa.String(64))
    company_id: str | None = Field(default=None, sa_type=sa.String(64))  # None: every company
    until: datetime = Field(sa_type=UTCDateTime, index=True)  # reminders resume at this moment
    reason: str = Field(default="", sa_type=sa.Text)
    created_by: str = Field(sa_type=sa.String(128))
    created_at: datetime = Field(sa_type=UTCDateTime)
    lifted_at: datetime | None = Field(default=None, sa_type=UTCDateTime)
    lifted_by: str | None = Field(default=None, sa_type=sa.String(128))


class SweepHeldMessage(SQLModel, table=True):
    """A message a running sweep holds back until its last page: grouping and caps need the whole sweep.

    Written in the transaction that stores the page that planned it, read back one recipient at a
    time (`part`, `seq`) when the pages are done, deleted when that sweep ends; rows a crashed sweep
    left behind are deleted when the next sweep starts (server.store.sweep_staging).
    """

    __tablename__ = "sweep_held_messages"
    __table_args__ = (sa.Index(None, "run_id", "phase", "part", "seq"),)

    run_id: str = Field(primary_key=True, sa_type=sa.String(32))  # one sweep of one company and entity
    seq: int = Field(primary_key=True, sa_column_kwargs={"autoincrement": False})  # order planned in the run
    company_id: str = Field(sa_type=sa.String(64))
    entity: str = Field(sa_type=sa.String(64))
    # Messages read back and stored together: 0 = per recipient (grouping, caps), then 1 = alone.
    phase: int = Field(sa_type=sa.SmallInteger)
    part: str = Field(sa_type=sa.String(128))
    message: dict[str, Any] = Field(default_factory=dict, sa_type=json_type())


class RateLimitCount(SQLModel, table=True):
    """Requests or refused credentials of one key in one fixed window, or a lockout (server.store.ratelimits).

    `key` is a client address or the hash of a presented token (never the token). Counts are
    upserted atomically, so every instance on one database adds to the same row.
    """

    __tablename__ = "rate_limits"

    scope: str = Field(primary_key=True, sa_type=sa.String(16))  # api-token, login-ip, lock-ip, ...
    key: str = Field(primary_key=True, sa_type=sa.String(64))
    window_start: datetime = Field(primary_key=True, sa_type=UTCDateTime)
    count: int = Field(default=0)
    # The window's end (a lockout: when it is lifted); rows past it are pruned.
    expires_at: datetime = Field(sa_type=UTCDateTime, index=True)


ALL_TABLES: tuple[type[SQLModel], ...] = (
    BcSubscription,
    InboxNotification,
    PollWatermark,
    RecordSnapshot,
    OutboxMessage,
    MessageEvent,
    OptOut,
    InboundMessage,
    Lease,
    AuditEntry,
    StoredCredential,
    PendingChange,
    ReminderPause,
    SweepHeldMessage,
    RateLimitCount,
)
