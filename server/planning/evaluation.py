"""Records -> rules -> outbox, in one transaction: the single path every BC reader takes.

The fetcher (webhooks), the poller and the sweep all hand `RecordChange`s to `evaluate_and_store`.
In ONE transaction it reads the previous snapshots, evaluates the rules (pure engine), inserts the
planned messages (the job id is unique: a re-evaluation inserts nothing), stores the new snapshots
(or forgets deleted records) and runs the caller's `finish` step (mark inbox items done, advance a
watermark). So a crash can neither lose a crossing nor repeat it: the snapshot that hides a
crossing is committed together with the message it planned.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Engine
from sqlmodel import Session

from engine.evaluate import evaluate
from engine.messages import PlannedMessage
from engine.ruleset import RuleSet
from server.bc.models import BCRecord, record_json
from server.planning.reminders import store_reminders
from server.settings import ReminderSettings, TestModeSettings
from server.store.db import session_scope
from server.store.snapshots import SnapshotIn, delete_snapshots, get_snapshots, put_snapshots

RECORD_NUMBER_MAX = 64  # outbox.record_number column width


@dataclass(frozen=True)
class RecordChange:
    """One record to run through the rules.

    `events`: the trigger events to evaluate (e.g. ("updated",), or ("poll", "created") for a
    payment journal line). `deleted`: the record is gone; `record` is then its last snapshot (or
    just its id) and the snapshot is forgotten afterwards. `record_number` overrides what the
    outbox row names (a journal line is "<journal>/<document>/<line>", not its document number).
    """

    record_id: str
    record: Mapping[str, Any] | None
    events: tuple[str, ...]
    deleted: bool = False
    record_number: str | None = None
    etag: str | None = None
    last_modified: datetime | None = None
    # Events to evaluate instead when we hold no earlier version (a journal line first seen is "created").
    first_seen_events: tuple[str, ...] | None = None


@dataclass(frozen=True)
class StoreResult:
    records: int  # records evaluated
    planned: int  # messages the rules planned (before de-duplication)
    inserted: int  # new outbox rows (a replay inserts none)
    held: tuple[PlannedMessage, ...] = ()  # messages `hold` kept back (e.g. for grouping), not stored


def change_from_record(
    record: BCRecord,
    events: tuple[str, ...],
    *,
    record_number: str | None = None,
    first_seen_events: tuple[str, ...] | None = None,
) -> RecordChange:
    if not record.id:
        raise ValueError(f"{type(record).__name__} without an id cannot be evaluated")
    return RecordChange(
        record_id=record.id.lower(),
        record=record_json(record),
        events=events,
        record_number=record_number,
        first_seen_events=first_seen_events,
        etag=record.odata_etag,
        last_modified=record.lastModifiedDateTime,
    )


def plan(
    ruleset: RuleSet,
    entity: str,
    change: RecordChange,
    previous: Mapping[str, Any] | None,
    now: datetime,
) -> list[PlannedMessage]:
    """What the rules plan for one change (pure; used inside evaluate_and_store)."""
    if change.deleted:
        # No fetch for a deleted record: rules on `deleted` see the last version we stored.
        record: Mapping[str, Any] = previous or change.record or {"id": change.record_id}
        before: Mapping[str, Any] | None = None
    else:
        record = change.record or {}
        before = previous
    events = change.events
    if previous is None and change.first_seen_events is not None:
        events = change.first_seen_events
    planned: list[PlannedMessage] = []
    for event in events:
        planned.extend(evaluate(entity, record, ruleset, now, before, event=event))
    if change.record_number is not None:
        number = change.record_number[:RECORD_NUMBER_MAX]
        planned = [dataclasses.replace(m, record_number=number) for m in planned]
    return planned


def evaluate_and_store(
    db: Engine,
    ruleset: RuleSet,
    *,
    company_id: str,
    entity: str,
    changes: Sequence[RecordChange],
    now: datetime,
    finish: Callable[[Session], None] | None = None,
    store_snapshots: bool = True,
    hold: Callable[[PlannedMessage], bool] | None = None,
    stage_held: Callable[[Session, Sequence[PlannedMessage]], None] | None = None,
    reminders: ReminderSettings | None = None,
    test_mode: TestModeSettings | None = None,
) -> StoreResult:
    """Evaluate `changes` against their previous snapshots and store everything in one transaction.

    `store_snapshots=False` (the sweep) reads the previous versions but leaves them as they are: a
    daily read must not become the "previous" that hides a crossing the webhook is about to report.
    `hold` keeps messages out of the outbox; `stage_held` receives them in the same transaction
    (the sweep writes them to its staging table), otherwise they are returned in `held`.
    `reminders` and `test_mode` are the service's settings groups (`settings.reminders`,
    `settings.testing`); left out, their defaults apply.
    """
    with session_scope(db) as session:
        previous = get_snapshots(session, company_id, entity, (c.record_id for c in changes))
        messages: list[PlannedMessage] = []
        keep: list[SnapshotIn] = []
        gone: list[str] = []
        for change in changes:
            prior = previous.get(change.record_id)
            messages.extend(plan(ruleset, entity, change, prior.data if prior else None, now))
            if change.deleted:
                gone.append(change.record_id)
            elif change.record is not None:
                keep.append(
                    SnapshotIn(
                        record_id=change.record_id,
                        data=dict(change.record),
                        etag=change.etag,
                        last_modified=change.last_modified,
                    )
                )
        held: list[PlannedMessage] = []
        if hold is not None:
            held = [m for m in messages if hold(m)]
            messages = [m for m in messages if not hold(m)]
            if stage_held is not None:
                stage_held(session, held)
        # Pauses, caps, payment grace, the BC switch and test mode (server/planning/reminders.py)
        # before the outbox.
        inserted = store_reminders(
            session,
            messages,
            ruleset,
            company_id=company_id,
            now=now,
            settings=reminders,
            test_mode=test_mode,
        ).inserted
        if keep and store_snapshots:
            put_snapshots(session, company_id, entity, keep, now=now)
        if gone and store_snapshots:
            delete_snapshots(session, company_id, entity, gone)
        if finish is not None:
            finish(session)
    return StoreResult(
        records=len(changes),
        planned=len(messages) + len(held),
        inserted=len(inserted),
        held=() if stage_held is not None else tuple(held),
    )


def insert_grouped(
    db: Engine,
    ruleset: RuleSet,
    *,
    company_id: str,
    messages: Sequence[PlannedMessage],
    now: datetime,
    reminders: ReminderSettings | None = None,
    test_mode: TestModeSettings | None = None,
) -> int:
    """Store a sweep's messages for rules with `group:`: one message per recipient and stage.

    `messages` holds ALL the sweep's held messages for each recipient it names (the sweep hands
    them over a few recipients at a time): groups and per-recipient caps are per recipient.

    Members already in the outbox are removed BEFORE grouping (engine.grouping): an invoice reminded
    at this stage on an earlier sweep must not be listed again because another one joined it.
    Returns the new outbox rows (grouped messages and their member rows).
    """
    if not messages:
        return 0
    with session_scope(db) as session:
        # store_reminders drops members already in the outbox, then holds back, groups and caps.
        report = store_reminders(
            session,
            messages,
            ruleset,
            company_id=company_id,
            now=now,
            settings=reminders,
            test_mode=test_mode,
        )
        return len(report.inserted)


def groups_on_sweep(ruleset: RuleSet) -> Callable[[PlannedMessage], bool]:
    """`hold` for the sweep: messages of rules that group per recipient wait for the whole sweep."""

    def held(message: PlannedMessage) -> bool:
        rule = ruleset.get(message.rule_id)
        # Ladder rules wait too: per-recipient caps count the whole sweep, not one page.
        return rule is not None and (rule.group is not None or rule.is_reminder) and not message.skipped

    return held


def journal_line_label(journal_code: str | None, line: Mapping[str, Any]) -> str:
    """How the audit names a payment journal line: "<journal>/<documentNumber>/<lineNumber>"."""
    code = journal_code or line.get("journalDisplayName") or "?"
    return f"{code}/{line.get('documentNumber') or ''}/{line.get('lineNumber') or ''}"
