"""OTP-gated write-back of sensitive fields to Business Central.

A finance user proposes a change (vendor/customer contact and remit-to address fields, or vendor bank
details through a custom API page; the fields and their validators are server/changes/fields.py). The
connector reads the record's current @odata.etag, stores a pending change, and starts a Twilio Verify
verification to the approver. Only a check answered `approved` lets the change be PATCHed to BC, with
`If-Match: <stored etag>`; if the record changed meanwhile BC answers 409 Request_EntityChanged and
the change ends as `conflict`
(https://learn.microsoft.com/en-us/dynamics365/business-central/dev-itpro/developer/devenv-connect-apps-error-codes).

States (tables.CHANGE_STATUSES)::

    new ──verification started──► pending ──code approved──► approved ──claim──► writing ──► written
     │                             │  │  │                      ▲                   │
     └─► failed                    │  │  └─► expired            └── BC busy ◄───────┤
                                   │  └─► code_expired (20404)                      ├─► conflict (409)
                                   └─► rejected (too many wrong codes / 60202)      └─► failed

Every transition is a conditional UPDATE (`... WHERE id = ? AND status IN (...)`): of two racing
confirmations only one moves `approved -> writing`, so a change is written at most once, and never
without an approved check. A confirmation holds a lease on its change (server/store/leases.py)
from the Verify check to the end, so a racing request cannot read Twilio's 20404 for a code that
was just approved and record `code_expired`. Each step is in the audit log (who, when, what); the code never is.
No database transaction is held across a call to BC or Twilio.

No single person passes the gate. The proposer is the identity of the bearer token (never a name in
the body); the approver is a member of a configured role (never a number from the request) who is
not the proposer, and only that member's identity may confirm. The shared service token neither
proposes nor confirms. Proposals are limited per approver and per record within a window, counted
from the changes table under one lock, so the limits hold across instances.
"""

from __future__ import annotations

import asyncio
import json
import math
import re
import uuid
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, TypeVar

import sqlalchemy as sa
from cryptography.fernet import InvalidToken, MultiFernet
from sqlalchemy import Engine

from server.bc.client import BCClient
from server.bc.entities import EntitySet
from server.bc.errors import (
    BCError,
    EntityChangedError,
    NotFoundError,
    PermanentBCError,
)
from server.bc.models import BCRecord
from server.changes.fields import (
    ChangeConfigError,
    ChangeError,
    ChangeForbiddenError,
    ChangeInputError,
    ChangeLimitError,
    ChangeNotFoundError,
    ChangeRequest,
    ChangeStateError,
    UpstreamError,
    ValidatedChange,
    approver_identity,
    entity_set_for,
    mask_phone,
    mask_value,
    validate_request,
)
from server.credentials import CredentialError, cipher_for, load_keys
from server.runtime.clock import Clock
from server.runtime.crashpoints import crash_point
from server.runtime.logs import get_logger
from server.settings import SERVICE_IDENTITY, Settings
from server.store.audit import record_audit
from server.store.changes import (
    OPEN,
    add_change,
    count_wrong_code,
    due_to_expire,
    get_change,
    lock_proposals,
    open_change_for,
    proposal_times,
    reclaim_write,
    transition,
)
from server.store.db import read_scope, session_scope
from server.store.leases import acquire_lease, release_lease
from server.store.tables import PendingChange
from server.twilio.client import TwilioClient
from server.twilio.errors import DeliveryError, InvalidRequestError, VerificationLimitError
from server.twilio.errors import NotFoundError as VerificationNotFoundError

log = get_logger("ml_connector.changes")
T = TypeVar("T")

TERMINAL = frozenset({"written", "conflict", "rejected", "code_expired", "expired", "failed"})
_CODE = re.compile(r"^[0-9]{4,10}$")


def _subject(change_id: int | None) -> str:
    return f"change:{change_id}"


def _retry_after(times: list[datetime], limit: int, window: timedelta, now: datetime) -> int:
    """Seconds until one of `times` (oldest first, all within `window`) leaves it and a slot is free."""
    leaves = times[len(times) - limit] + window
    return max(1, math.ceil((leaves - now).total_seconds()))


def expire_due(engine: Engine, now: datetime, *, limit: int = 500) -> list[int]:
    """Mark open changes past their expiry as `expired` (each audited). Returns their ids."""
    expired: list[int] = []
    with session_scope(engine) as session:
        due = due_to_expire(session, now, limit=limit)
        for change_id in due:
            if change_id is not None and transition(
                session, change_id, OPEN, "expired", now, reason="not confirmed in time"
            ):
                record_audit(
                    session,
                    actor="system",
                    action="change.expired",
                    subject=_subject(change_id),
                    now=now,
                    details={"reason": "not confirmed in time"},
                )
                expired.append(change_id)
    return expired


# -- the gate ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ConfirmOutcome:
    """What a confirmation did. `outcome` is the change's status after it, or `wrong_code`."""

    change: PendingChange
    outcome: str
    message: str


SEALED_KEY = "fernet"


def seal_values(cipher: MultiFernet, values: Mapping[str, Any]) -> dict[str, str]:
    """Proposed values (a new IBAN, a bank account number) are stored encrypted at rest."""
    plain = json.dumps(dict(values), sort_keys=True, separators=(",", ":")).encode("utf-8")
    return {SEALED_KEY: cipher.encrypt(plain).decode("ascii")}


def open_values(cipher: MultiFernet, stored: Mapping[str, Any]) -> dict[str, Any]:
    token = stored.get(SEALED_KEY)
    if not isinstance(token, str) or len(stored) != 1:
        return dict(stored)  # written before values were sealed
    try:
        values: dict[str, Any] = json.loads(cipher.decrypt(token.encode("ascii")))
    except InvalidToken as exc:
        raise ChangeConfigError(
            "none of the configured keys decrypts this change's values (a key was removed before "
            "`credentials rotate-key`, or the wrong key is set)"
        ) from exc
    return values


class ChangeGate:
    """Propose and confirm changes. One per request is fine: it holds only references."""

    def __init__(
        self, *, settings: Settings, clock: Clock, db: Engine, bc: BCClient, twilio: TwilioClient
    ) -> None:
        self.settings = settings
        self.clock = clock
        self.db = db
        self.bc = bc
        self.twilio = twilio
        self._cipher: MultiFernet | None = None

    @property
    def cipher(self) -> MultiFernet:
        """The credential keys also seal proposed values; without a key no change is accepted."""
        if self._cipher is None:
            try:
                self._cipher = cipher_for(load_keys(self.settings))
            except CredentialError as exc:
                raise ChangeConfigError(f"proposed values are stored encrypted: {exc}") from exc
        return self._cipher

    def values_of(self, change: PendingChange) -> dict[str, Any]:
        return open_values(self.cipher, change.changes)

    def approver_of(self, change: PendingChange) -> str | None:
        return approver_identity(self.settings, change.approver_role, change.approver)

    def summary(self, change: PendingChange) -> Mapping[str, Any]:
        return change_summary(change, self.values_of(change), self.approver_of(change))

    @classmethod
    def from_services(cls, services: Any) -> ChangeGate:
        return cls(
            settings=services.settings,
            clock=services.clock,
            db=services.db,
            bc=services.bc,
            twilio=services.twilio,
        )

    async def _db(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        # SQLite writers wait for the lock (BEGIN IMMEDIATE): never block the event loop on it.
        return await asyncio.to_thread(fn, *args, **kwargs)

    def _audit(self, change_id: int | None, action: str, actor: str, **details: Any) -> None:
        with session_scope(self.db) as session:
            record_audit(
                session,
                actor=actor,
                action=action,
                subject=_subject(change_id),
                now=self.clock.now(),
                details=details,
            )

    def _move(
        self, change_id: int, from_: Collection[str], to: str, actor: str, action: str, **values: Any
    ) -> bool:
        """A conditional transition and its audit entry, in one transaction."""
        now = self.clock.now()
        with session_scope(self.db) as session:
            moved = transition(session, change_id, from_, to, now, **values)
            if moved:
                details = {"status": to}
                if values.get("reason"):
                    details["reason"] = values["reason"]
                record_audit(
                    session, actor=actor, action=action, subject=_subject(change_id), now=now, details=details
                )
        if moved:
            log.info(action, change_id=change_id, status=to)
        return moved

    def _reclaim_write(self, change_id: int, actor: str) -> bool:
        """writing -> approved when the write's lease ran out (its process died); audited."""
        now = self.clock.now()
        cutoff = now - timedelta(seconds=self.settings.changes.write_lease_seconds)
        reason = "the previous write was interrupted before its outcome was recorded"
        with session_scope(self.db) as session:
            moved = reclaim_write(session, change_id, cutoff=cutoff, now=now, reason=reason)
            if moved:
                record_audit(
                    session,
                    actor=actor,
                    action="change.write_interrupted",
                    subject=_subject(change_id),
                    now=now,
                    details={"status": "approved", "reason": reason},
                )
        if moved:
            log.warning("change.write_interrupted", change_id=change_id)
        return bool(moved)

    def _load(self, change_id: int) -> PendingChange:
        with read_scope(self.db) as session:
            change = get_change(session, change_id)
            session.expunge_all()  # read_scope rolls back, which would expire the loaded row
        if change is None:
            raise ChangeNotFoundError(f"no change with id {change_id}")
        return change

    # -- propose ------------------------------------------------------------------------------------

    async def propose(self, request: ChangeRequest, proposer: str) -> PendingChange:
        """Propose a change as `proposer` (the bearer token's identity). A refusal is audited."""
        try:
            return await self._propose(request, proposer)
        except (ChangeInputError, ChangeStateError, ChangeForbiddenError, ChangeLimitError) as exc:
            await self._db(self._refused, proposer, request, exc)
            raise

    async def _propose(self, request: ChangeRequest, proposer: str) -> PendingChange:
        if proposer == SERVICE_IDENTITY:
            # Four eyes need two named people: the shared token is nobody in particular.
            raise ChangeForbiddenError(
                "changes are proposed with a personal token (MLC_API_IDENTITIES): the shared service "
                "token names no accountable proposer"
            )
        valid = validate_request(self.settings, request, proposer)
        record = await self._read_record(valid)
        etag = record.odata_etag
        if not etag:
            raise UpstreamError("BC returned the record without @odata.etag; it cannot be written safely")
        current = record.to_json()
        if all(str(current.get(name)) == value for name, value in valid.changes.items()):
            raise ChangeInputError("changes", "the record already holds these values; nothing to change")
        await self._db(expire_due, self.db, self.clock.now())
        change = await self._db(self._insert, valid, etag)
        assert change.id is not None
        try:
            verification = await self.twilio.start_verification(change.approver, channel=valid.channel)
        except DeliveryError as exc:
            reason = f"verification not started: {exc}"
            await self._db(
                self._move, change.id, ("new",), "failed", "system", "change.failed", reason=reason
            )
            if isinstance(exc, InvalidRequestError):
                raise ChangeInputError("approver", f"Twilio Verify refused it: {exc.message}") from exc
            raise UpstreamError(f"Twilio Verify: {exc}") from exc
        try:
            await self._db(
                self._move,
                change.id,
                ("new",),
                "pending",
                "system",
                "change.verification_started",
                verification_sid=verification.sid,
            )
        except sa.exc.IntegrityError:
            # A proposal for the same approver raced this one and owns this verification (and code).
            reason = "another change for this approver owns the verification Twilio returned"
            await self._db(
                self._move, change.id, ("new",), "failed", "system", "change.failed", reason=reason
            )
            raise ChangeStateError(
                f"change {change.id} not started: {reason}; propose it again later"
            ) from None
        return self._load(change.id)

    def _refused(self, proposer: str, request: ChangeRequest, exc: ChangeError) -> None:
        details: dict[str, Any] = {
            "reason": str(exc),
            "field": getattr(exc, "field", None),
            "role": request.approver[:64],
            "entity": request.entity[:64],
            "record_id": request.record_id[:64],
        }
        if isinstance(exc, ChangeLimitError):
            details["limit"] = exc.limit
            details["retry_after"] = exc.retry_after
        with session_scope(self.db) as session:
            record_audit(
                session,
                actor=proposer,
                action="change.refused",
                subject="change:proposal",
                now=self.clock.now(),
                details=details,
            )
        log.info("change.refused", actor=proposer, reason=str(exc))

    async def _read_record(self, valid: ValidatedChange) -> BCRecord:
        try:
            record: BCRecord = await self.bc.get_record(valid.entity_set, valid.company_id, valid.record_id)
        except NotFoundError as exc:
            raise ChangeInputError(
                "record_id",
                f"BC has no {valid.entity} record {valid.record_id} in company {valid.company_id}",
            ) from exc
        except BCError as exc:
            raise UpstreamError(f"Business Central: {exc}") from exc
        return record

    def _insert(self, valid: ValidatedChange, etag: str) -> PendingChange:
        """Choose the approver and store the change, under the proposals lock: the limits are
        counted from the changes table, so they hold across instances sharing the database."""
        now = self.clock.now()
        limits = self.settings.changes
        window = timedelta(minutes=limits.proposal_window_minutes)
        since = now - window
        minutes = f"{limits.proposal_window_minutes:g}"
        with session_scope(self.db) as session:
            lock_proposals(session)
            times = proposal_times(
                session, since=since, record=(valid.company_id, valid.entity, valid.record_id)
            )
            if len(times) >= limits.proposals_per_record:
                wait = _retry_after(times, limits.proposals_per_record, window, now)
                raise ChangeLimitError(
                    "record_id",
                    f"{valid.entity} {valid.record_id} has had {len(times)} proposals in the last {minutes} "
                    f"minutes (MLC_CHANGES__PROPOSALS_PER_RECORD); try again in {wait} s",
                    limit="per_record",
                    retry_after=wait,
                )
            chosen: tuple[str, str] | None = None
            busy: tuple[str, int] | None = None
            held: list[tuple[int, int]] = []  # (count, retry after) of approvers over their limit
            for identity, phone in valid.candidates:
                # Twilio Verify re-sends the SAME verification (same SID, same code) to a number that
                # has one pending (https://www.twilio.com/docs/verify/api/verification), so one code
                # would approve two changes: one open change per approver.
                waiting = open_change_for(session, phone)
                if waiting is not None:
                    busy = busy or (phone, waiting)
                    continue
                sent = proposal_times(session, since=since, approver=phone)
                if len(sent) >= limits.proposals_per_approver:
                    held.append((len(sent), _retry_after(sent, limits.proposals_per_approver, window, now)))
                    continue
                chosen = (identity, phone)
                break
            if chosen is None:
                if busy is not None:
                    raise ChangeStateError(
                        f"approver {mask_phone(busy[0])} already has change {busy[1]} waiting for a code; "
                        "confirm it or let it expire before proposing another"
                    )
                count = min(c for c, _ in held)
                wait = min(w for _, w in held)
                who = (
                    f"role {valid.approver_role!r} has"
                    if len(valid.candidates) == 1
                    else f"every approver of role {valid.approver_role!r} has"
                )
                raise ChangeLimitError(
                    "approver",
                    f"{who} had {count} proposals in the last {minutes} minutes "
                    f"(MLC_CHANGES__PROPOSALS_PER_APPROVER); try again in {wait} s",
                    limit="per_approver",
                    retry_after=wait,
                )
            identity, phone = chosen
            change = PendingChange(
                company_id=valid.company_id,
                entity=valid.entity,
                record_id=valid.record_id,
                changes=seal_values(self.cipher, valid.changes),
                etag=etag,
                approver=phone,
                approver_role=valid.approver_role,
                channel=valid.channel,
                status="new",
                max_attempts=limits.max_attempts,
                requested_by=valid.requested_by,
                created_at=now,
                expires_at=now + timedelta(minutes=limits.expiry_minutes),
                updated_at=now,
            )
            add_change(session, change)
            record_audit(
                session,
                actor=valid.requested_by,
                action="change.proposed",
                subject=_subject(change.id),
                now=now,
                details={
                    "entity": valid.entity,
                    "company_id": valid.company_id,
                    "record_id": valid.record_id,
                    "fields": {name: mask_value(value) for name, value in valid.changes.items()},
                    "approver": mask_phone(phone),
                    "approver_identity": identity,
                    "approver_role": valid.approver_role,
                    "channel": valid.channel,
                },
            )
        log.info(
            "change.proposed",
            change_id=change.id,
            entity=valid.entity,
            fields=sorted(valid.changes),
            approver=mask_phone(phone),
            requested_by=valid.requested_by,
        )
        return change

    # -- confirm ------------------------------------------------------------------------------------

    async def confirm(self, change_id: int, code: str, *, identity: str) -> ConfirmOutcome:
        """Confirm as `identity` (the bearer token's): only the approver the code was sent to may."""
        if not _CODE.fullmatch(code.strip()):
            raise ChangeInputError("code", "expected the 4-10 digit code sent to the approver")
        await self._db(expire_due, self.db, self.clock.now())
        holder = f"confirm:{uuid.uuid4().hex}"
        if not await self._db(self._lease, change_id, holder, True):
            raise ChangeStateError(f"change {change_id} is being confirmed by another request; try again")
        try:
            return await self._confirm(change_id, code, identity)
        finally:
            await self._db(self._lease, change_id, holder, False)

    def _lease(self, change_id: int, holder: str, take: bool) -> bool:
        """One confirmation per change at a time, across processes. Without it, a request whose
        check answers 20404 (because a racing request's check was just approved) could record
        `code_expired` before the approved one records `approved`."""
        with session_scope(self.db) as session:
            if take:
                # The same bound as a 'writing' change: past it the confirmer is taken for dead (a
                # crash mid-write), so a retried confirmation is not locked out for longer.
                ttl = timedelta(seconds=self.settings.changes.write_lease_seconds)
                grant = acquire_lease(session, f"change:{change_id}", holder, now=self.clock.now(), ttl=ttl)
                return grant is not None
            return release_lease(session, f"change:{change_id}", holder)

    def may_confirm(self, change: PendingChange, identity: str) -> str | None:
        """Why `identity` may not confirm `change`, or None when it may: only the member the code went
        to, never the proposer, never the shared service token."""
        approver = approver_identity(self.settings, change.approver_role, change.approver)
        if approver is None:
            return (
                f"no member of role {change.approver_role!r} has this change's number any more "
                "(MLC_CHANGES__APPROVER_ROLES); propose it again"
            )
        if identity == change.requested_by:
            return "the proposer never approves their own change"
        if identity != approver:
            return f"only {approver}, the approver chosen for it, can confirm"
        return None

    async def _confirm(self, change_id: int, code: str, who: str) -> ConfirmOutcome:
        change = self._load(change_id)
        refusal = self.may_confirm(change, who)
        if refusal is not None:
            await self._db(self._audit, change_id, "change.refused", who, reason=refusal)
            log.info("change.refused", change_id=change_id, actor=who, reason=refusal)
            raise ChangeForbiddenError(f"change {change_id}: {refusal}")
        if change.status == "expired":
            return ConfirmOutcome(change, "expired", "the change was not confirmed in time; propose it again")
        if change.status == "approved":
            # A previous write failed for a reason on BC's side: the approval stands, try the write again.
            return await self._write(change, who)
        if change.status == "writing":
            # The process that claimed the write died before recording its outcome. After the write
            # lease the approval stands again and the write is retried with the SAME If-Match etag,
            # so BC applies it at most once: if the first PATCH went through, BC refuses the stale
            # etag (409) and _already_applied finds the approved values there.
            if not await self._db(self._reclaim_write, change_id, who):
                raise ChangeStateError(
                    f"change {change_id} is being written to Business Central; try again in a minute"
                )
            return await self._write(self._load(change_id), who)
        if change.status != "pending" or change.verification_sid is None:
            raise ChangeStateError(
                f"change {change_id} is '{change.status}'; only a pending change can be confirmed"
            )
        try:
            check = await self.twilio.check_verification(
                code.strip(), verification_sid=change.verification_sid
            )
        except VerificationNotFoundError:
            # Approved or expired verifications are soft-deleted: 20404
            # (https://www.twilio.com/docs/api/errors/20404).
            reason = "the code expired or was already used (Twilio 20404)"
            return await self._end(
                change_id, ("pending",), "code_expired", who, reason, reason + "; propose the change again"
            )
        except VerificationLimitError as exc:
            reason = f"too many attempts (Twilio {exc.code})"
            return await self._end(change_id, ("pending",), "rejected", who, reason, reason)
        except DeliveryError as exc:
            await self._db(self._audit, change_id, "change.check_error", who, error=str(exc))
            raise UpstreamError(f"Twilio Verify: {exc}; the change is still pending, try again") from exc
        if check.approved:
            if not await self._db(self._move, change_id, ("pending",), "approved", who, "change.approved"):
                current = self._load(change_id)
                raise ChangeStateError(f"change {change_id} is '{current.status}'; it was decided meanwhile")
            return await self._write(self._load(change_id), who)
        if check.status == "pending":
            outcome = await self._db(self._wrong_code, change_id, who)
            if outcome.outcome == "rejected":
                await self._cancel(change.verification_sid)
            return outcome
        status = {"expired": "code_expired", "max_attempts_reached": "rejected"}.get(check.status, "failed")
        reason = f"Twilio Verify answered '{check.status}'"
        return await self._end(change_id, ("pending",), status, who, reason, reason)

    async def _end(
        self, change_id: int, from_: Collection[str], to: str, who: str, reason: str, message: str
    ) -> ConfirmOutcome:
        """Record an ending; if another request decided the change first, say so instead."""
        if not await self._db(self._move, change_id, from_, to, who, f"change.{to}", reason=reason):
            current = self._load(change_id)
            raise ChangeStateError(f"change {change_id} is '{current.status}'; it was decided meanwhile")
        return ConfirmOutcome(self._load(change_id), to, message)

    async def _cancel(self, verification_sid: str) -> None:
        """Close the verification at Twilio once we stopped accepting codes (best effort)."""
        try:
            await self.twilio.cancel_verification(verification_sid)
        except DeliveryError as exc:
            log.warning("change.cancel_failed", error=str(exc))

    def _wrong_code(self, change_id: int, who: str) -> ConfirmOutcome:
        now = self.clock.now()
        with session_scope(self.db) as session:
            counted = count_wrong_code(session, change_id, now=now)
            change = get_change(session, change_id)
            assert change is not None
            session.refresh(change)
            if not counted:
                raise ChangeStateError(f"change {change_id} is '{change.status}'; it was decided meanwhile")
            record_audit(
                session,
                actor=who,
                action="change.code_wrong",
                subject=_subject(change_id),
                now=now,
                details={"attempts": change.attempts, "max_attempts": change.max_attempts},
            )
            rejected = change.attempts >= change.max_attempts and transition(
                session, change_id, ("pending",), "rejected", now, reason="too many wrong codes"
            )
            if rejected:
                record_audit(
                    session,
                    actor=who,
                    action="change.rejected",
                    subject=_subject(change_id),
                    now=now,
                    details={"status": "rejected", "reason": "too many wrong codes"},
                )
                session.refresh(change)
        log.info("change.code_wrong", change_id=change_id, attempts=change.attempts)
        if rejected:
            return ConfirmOutcome(change, "rejected", "too many wrong codes; propose the change again")
        left = change.max_attempts - change.attempts
        return ConfirmOutcome(change, "wrong_code", f"wrong code; {left} attempt(s) left")

    async def _write(self, change: PendingChange, who: str) -> ConfirmOutcome:
        assert change.id is not None
        change_id = change.id
        # The claim: only one caller moves approved -> writing; everyone else sees it taken.
        if not await self._db(self._move, change_id, ("approved",), "writing", who, "change.writing"):
            current = self._load(change_id)
            raise ChangeStateError(
                f"change {change_id} is '{current.status}'; it is not waiting to be written"
            )
        entity_set = entity_set_for(self.settings, change.entity)
        crash_point("change.approved")
        try:
            written = await self.bc.patch_record(
                entity_set, change.company_id, change.record_id, self.values_of(change), etag=change.etag
            )
        except EntityChangedError:
            if await self._already_applied(entity_set, change):
                # A retried PATCH whose first try went through (BC then refuses the old etag).
                return await self._written(change_id, who, None, "BC already holds the approved values")
            reason = "the record changed in BC after the change was proposed (409 Request_EntityChanged)"
            return await self._end(
                change_id,
                ("writing",),
                "conflict",
                who,
                reason,
                reason + "; propose it again on the new version",
            )
        except PermanentBCError as exc:
            reason = f"BC refused the write: {exc}"
            return await self._end(change_id, ("writing",), "failed", who, reason, reason)
        except BCError as exc:
            # BC busy or unreachable: the approval stands; confirming again retries the write.
            reason = f"BC unavailable: {exc}"
            await self._db(
                self._move, change_id, ("writing",), "approved", who, "change.write_deferred", reason=reason
            )
            raise UpstreamError(reason + "; the approval stands, confirm again to retry the write") from exc
        crash_point("change.patched")
        return await self._written(change_id, who, written.odata_etag, "written to Business Central")

    async def _written(self, change_id: int, who: str, etag: str | None, message: str) -> ConfirmOutcome:
        await self._db(
            self._move,
            change_id,
            ("writing",),
            "written",
            who,
            "change.written",
            result_etag=etag,
            written_at=self.clock.now(),
            reason=None,
        )
        return ConfirmOutcome(self._load(change_id), "written", message)

    async def _already_applied(self, entity_set: EntitySet[Any], change: PendingChange) -> bool:
        try:
            record = await self.bc.get_record(entity_set, change.company_id, change.record_id)
        except BCError:
            return False
        current = record.to_json()
        return all(str(current.get(name)) == str(value) for name, value in self.values_of(change).items())


def change_summary(
    change: PendingChange, values: Mapping[str, Any], approver: str | None = None
) -> Mapping[str, Any]:
    """The change as the API and CLI show it; `values` are its opened values (ChangeGate.values_of),
    `approver` the identity its code went to (ChangeGate.approver_of)."""
    return {
        "id": change.id,
        "status": change.status,
        "entity": change.entity,
        "company_id": change.company_id,
        "record_id": change.record_id,
        "changes": dict(values),
        "approver": change.approver,
        "approver_identity": approver,
        "approver_role": change.approver_role,
        "channel": change.channel,
        "attempts": change.attempts,
        "max_attempts": change.max_attempts,
        "requested_by": change.requested_by,
        "reason": change.reason,
        "created_at": change.created_at,
        "expires_at": change.expires_at,
        "updated_at": change.updated_at,
        "written_at": change.written_at,
    }
