"""A reminder held for its send window is checked against BC again when the window opens.

The sweep plans a reminder at night; the send window holds it until the morning (dispatcher,
sendwindow.py). If the customer pays in between, BC says so but nothing tells us: sales invoices
have no webhook subscription unless a rule needs updates, and the next sweep only runs tomorrow.
So when a held job becomes due, the dispatcher re-reads its record(s) from BC (one batched read
per company and entity set for the claimed batch) and evaluates the job's rule again, now:

- the rule no longer fires for the record (paid, cancelled, blocked customer) -> skipped, with the
  rule's own reason ("remainingAmount 0 is not > 0");
- the rule fires at another stage or for another due date (the job id differs) -> skipped as
  superseded: the sweep plans what applies now;
- the rule still fires with the same job id -> sent, with the text rendered from the fresh record
  when it differs (a part payment changed the amount; a day has passed);
- a grouped reminder: its members (the rows that point at it) are checked one by one; none left ->
  skipped; some left -> the group text is rendered again over those that still apply;
- BC cannot be read -> held a few minutes more (never sent on stale data, never dropped).

Only rules triggered by the sweep get a release check: their conditions describe the record's current
state. An event rule (a payment received, a limit crossed) states a change that did happen; its
condition compares two versions and cannot be evaluated again on one.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from engine.evaluate import evaluate_detailed
from engine.grouping import group_context
from engine.messages import PlannedMessage
from engine.model import CHANNELS
from engine.render import sms_segments
from engine.ruleset import CompiledRule, RuleSet
from server.bc.entities import entity_set
from server.bc.errors import BCError
from server.bc.models import record_json
from server.runtime.logs import get_logger
from server.services import Services
from server.store import outbox
from server.store.db import read_scope, session_scope
from server.store.release import group_members, note_release, rewrite_text
from server.store.states import MessageStatus
from server.store.tables import OutboxMessage

log = get_logger("ml_connector.release")

RELEASE_EVENT = "sweep"
NO_LONGER_DUE = "no-longer-due"  # error_code of a skipped held reminder
SUPERSEDED = "superseded"
# How long to hold again when BC cannot be read at release.
RETRY_DELAY = timedelta(minutes=5)
RECORD_NUMBER_MAX = 64


@dataclass(frozen=True)
class Verdict:
    """What the release check decided for one held job."""

    job_id: str
    send: bool
    reason: str
    code: str | None = None  # for a skip: NO_LONGER_DUE or SUPERSEDED
    body: str | None = None  # the fresh text, when it differs from the stored one
    segments: int | None = None
    record_number: str | None = None


def needs_release_check(row: OutboxMessage, ruleset: RuleSet) -> bool:
    rule = ruleset.get(row.rule_id)
    return (
        row.status == MessageStatus.HELD.value
        and not row.is_test
        and rule is not None
        and RELEASE_EVENT in rule.events
        and (row.record_id is not None or rule.group is not None)
    )


def _outcome_for(
    rule: CompiledRule, record: Mapping[str, Any], ruleset: RuleSet, now: datetime
) -> tuple[bool, str, tuple[PlannedMessage, ...]]:
    """(fired, reason, messages) of `rule` alone on the fresh record."""
    for outcome in evaluate_detailed(rule.entity, record, ruleset, now, event=RELEASE_EVENT):
        if outcome.rule_id == rule.id:
            return outcome.fired, outcome.reason, outcome.messages
    return False, f"rule {rule.id} is no longer enabled", ()


def _still_due(
    job_id: str, rule: CompiledRule, record: Mapping[str, Any] | None, ruleset: RuleSet, now: datetime
) -> tuple[PlannedMessage | None, str, str]:
    """(the fresh message with this job id, or None with (reason, code))."""
    if record is None:
        return None, "the record is no longer in BC", NO_LONGER_DUE
    fired, reason, messages = _outcome_for(rule, record, ruleset, now)
    if not fired:
        return None, reason, NO_LONGER_DUE
    for message in messages:
        if message.job_id == job_id:
            if message.skipped:
                return None, message.skip_reason or "the fresh message cannot be sent", NO_LONGER_DUE
            return message, reason, ""
    return None, "the document moved to another stage or due date since it was planned", SUPERSEDED


def release_check_single(
    row: OutboxMessage, rule: CompiledRule, record: Mapping[str, Any] | None, ruleset: RuleSet, now: datetime
) -> Verdict:
    fresh, reason, code = _still_due(row.job_id, rule, record, ruleset, now)
    if fresh is None:
        return Verdict(row.job_id, False, f"no longer due at release: {reason}", code=code)
    if fresh.body == row.body:
        return Verdict(row.job_id, True, "still due at release")
    return Verdict(
        row.job_id,
        True,
        "still due at release; text rendered from BC's current record",
        body=fresh.body,
        segments=fresh.segments,
    )


def release_check_group(
    row: OutboxMessage,
    rule: CompiledRule,
    members: Sequence[OutboxMessage],
    records: Mapping[str, Mapping[str, Any]],
    ruleset: RuleSet,
    now: datetime,
) -> Verdict:
    group = rule.group
    template = group.templates.get(row.channel) if group is not None else None
    if group is None or template is None:
        return Verdict(
            row.job_id, False, "no longer due at release: the rule no longer groups", code=SUPERSEDED
        )
    kept: list[PlannedMessage] = []
    dropped: list[str] = []
    for member in members:
        record = records.get(member.record_id or "")
        fresh, reason, _ = _still_due(member.job_id, rule, record, ruleset, now)
        if fresh is None:
            dropped.append(f"{member.record_number or member.record_id}: {reason}")
        else:
            kept.append(fresh)
    if not kept:
        listed = "; ".join(dropped) or "no documents"
        return Verdict(row.job_id, False, f"no longer due at release: {listed}", code=NO_LONGER_DUE)
    try:
        body = template.render(group_context(rule, kept, now, group.numbers)).strip()
    except Exception as exc:  # a template that cannot render the fresh group: never send stale text
        return Verdict(
            row.job_id, False, f"the group text could not be rendered again: {exc}", code=SUPERSEDED
        )
    reason = "still due at release"
    if dropped:
        reason += "; no longer listed: " + "; ".join(dropped)
    if body == row.body:
        return Verdict(row.job_id, True, reason)
    segments = sms_segments(body).segments if CHANNELS[row.channel].counts_segments else 0
    return Verdict(
        row.job_id,
        True,
        reason + "; text rendered from BC's current records",
        body=body,
        segments=segments,
        record_number=f"{len(kept)} documents"[:RECORD_NUMBER_MAX],
    )


class ReleaseCheck:
    """The release check of the held jobs of a claimed batch; the dispatcher sends only what it keeps."""

    def __init__(self, services: Services) -> None:
        self.services = services

    async def check(self, batch: Sequence[OutboxMessage], worker_id: str) -> list[OutboxMessage]:
        """The jobs of `batch` still to send: held jobs that no longer apply are skipped (recorded),
        jobs whose record cannot be read are held again; a changed text is stored before sending."""
        ruleset = self.services.ruleset
        held = [row for row in batch if needs_release_check(row, ruleset)]
        if not held:
            return list(batch)
        now = self.services.clock.now()
        members = self._members([row.job_id for row in held if row.record_id is None])
        wanted: dict[tuple[str, str], set[str]] = defaultdict(set)
        for row in held:
            for member in members.get(row.job_id, [row]):
                if member.record_id:
                    wanted[(row.company_id, row.entity)].add(member.record_id)
        records: dict[tuple[str, str], dict[str, dict[str, Any]]] = {}
        unreadable: set[tuple[str, str]] = set()
        for key, ids in wanted.items():
            try:
                records[key] = await self._read(*key, sorted(ids))
            except BCError as exc:
                log.warning(
                    "BC could not be read for the release check of held reminders",
                    entity=key[1],
                    error=str(exc),
                )
                unreadable.add(key)
        verdicts: dict[str, Verdict] = {}
        deferred: list[str] = []
        for row in held:
            key = (row.company_id, row.entity)
            if key in unreadable:
                deferred.append(row.job_id)
                continue
            rule = ruleset.get(row.rule_id)
            assert rule is not None  # needs_release_check
            found = records.get(key, {})
            if row.record_id is None:
                verdicts[row.job_id] = release_check_group(
                    row, rule, members.get(row.job_id, []), found, ruleset, now
                )
            else:
                verdicts[row.job_id] = release_check_single(row, rule, found.get(row.record_id), ruleset, now)
        kept = self._apply(verdicts, deferred, worker_id, now)
        out: list[OutboxMessage] = []
        for row in batch:
            verdict = verdicts.get(row.job_id)
            if verdict is None and row.job_id not in deferred:
                out.append(row)  # not a held reminder: no release check
            elif verdict is not None and row.job_id in kept:
                if verdict.body is not None:  # the dispatcher sends what the row says
                    row.body, row.segments = verdict.body, verdict.segments or 0
                    row.record_number = verdict.record_number or row.record_number
                out.append(row)
        return out

    def _members(self, group_ids: Sequence[str]) -> dict[str, list[OutboxMessage]]:
        if not group_ids:
            return {}
        with read_scope(self.services.db) as session:
            found = group_members(session, group_ids)
            for rows in found.values():
                for row in rows:
                    session.expunge(row)  # read after the session ends
            return found

    async def _read(self, company_id: str, entity: str, ids: Sequence[str]) -> dict[str, dict[str, Any]]:
        target = entity_set(entity)
        expand = sorted(self.services.ruleset.expansions(entity)) or None
        found: dict[str, dict[str, Any]] = {}
        async for record in self.services.bc.iter_by_ids(target, company_id, ids, expand=expand):
            if record.id:
                found[record.id.lower()] = record_json(record)
        return found

    def _apply(
        self, verdicts: Mapping[str, Verdict], deferred: Sequence[str], worker_id: str, now: datetime
    ) -> set[str]:
        """Record the verdicts in one transaction; the job ids that may be sent."""
        kept: set[str] = set()
        with session_scope(self.services.db) as session:
            for job_id in deferred:
                outbox.hold(
                    session,
                    job_id,
                    until=now + RETRY_DELAY,
                    now=now,
                    reason="BC could not be read for this held reminder's release check; trying again shortly",
                )
            for verdict in verdicts.values():
                if not verdict.send:
                    outbox.mark_skipped(
                        session, verdict.job_id, reason=verdict.reason, now=now, code=verdict.code
                    )
                    continue
                if verdict.body is not None:
                    moved = rewrite_text(
                        session,
                        verdict.job_id,
                        worker_id,
                        body=verdict.body,
                        segments=verdict.segments or 0,
                        record_number=verdict.record_number,
                        now=now,
                        detail=verdict.reason,
                    )
                else:
                    moved = note_release(session, verdict.job_id, worker_id, now=now, detail=verdict.reason)
                if moved:
                    kept.add(verdict.job_id)
        skipped = sum(1 for v in verdicts.values() if not v.send)
        if skipped or deferred:
            log.info(
                "held reminders checked at release", kept=len(kept), skipped=skipped, deferred=len(deferred)
            )
        return kept
