"""The fetch worker: drains the notification inbox into evaluated records and planned messages.

Per claimed batch (one company and entity set):
- created/updated ids are coalesced and fetched together (`id eq A or id eq B ...` split by URL
  length), with `$expand` of what the rules read (e.g. the customer behind an invoice);
- a record missing from that answer was deleted before we fetched it: handled as deleted;
- `deleted` items are not fetched: rules on `deleted` see the last stored snapshot;
- a `collection` item's resource is GET as given (opaque) and its pages followed; records then
  re-read by id with `$expand` when the rules need related records;
- a `customerPaymentJournals` item means "a line of this journal changed": the journal's lines
  changed since its watermark are read and run through the customerPayments rules; the outbox row
  names the line ("<journal code>/<documentNumber>/<lineNumber>").
Each chunk is evaluated and stored in ONE transaction (outbox rows + snapshots + inbox items done),
so a duplicate notification or a re-run plans nothing twice. BC errors release the batch for a later
attempt (counted; capped -> 'failed' with the error); nothing is lost.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from datetime import timedelta
from typing import Any

from sqlmodel import Session

from server.bc.entities import CUSTOMER_PAYMENT_JOURNALS, CUSTOMER_PAYMENTS, entity_set, journal_payments
from server.bc.errors import NotFoundError
from server.bc.models import CustomerPayment
from server.metrics import count_records_fetched
from server.planning.evaluation import (
    RecordChange,
    change_from_record,
    evaluate_and_store,
    journal_line_label,
)
from server.runtime.crashpoints import crash_point
from server.runtime.logs import get_logger
from server.services import Services
from server.store.db import read_scope, session_scope
from server.store.inbox import InboxBatch, claim_inbox_batch, mark_inbox_done, release_inbox
from server.store.tables import InboxNotification
from server.store.watermarks import advance_watermark, get_watermark

log = get_logger("ml_connector.fetcher")

JOURNALS = "customerPaymentJournals"
LINE_EVENTS = ("poll", "updated")  # a journal line read on notice is a targeted poll of that journal
LINE_FIRST_EVENTS = ("poll", "created")
WATERMARK_OVERLAP = timedelta(minutes=2)  # BC's 50 ms margin and clock skew can repeat rows
FIRST_CHUNK = 50  # records stored before the rest of a batch is read: the first sends start early


def journal_watermark_entity(journal_id: str) -> str:
    """Watermark key of one journal's lines (fits the 64-character entity column)."""
    return f"customerPayments@{journal_id.lower()}"


class Fetcher:
    def __init__(
        self,
        services: Services,
        *,
        batch_size: int = 500,
        claim_seconds: float | None = None,
        max_attempts: int = 10,
        chunk_size: int = 200,
    ) -> None:
        self.services = services
        self.batch_size = batch_size
        # Must outlast one batch's BC reads; a batch claimed by an instance that died waits this long.
        self.claim_seconds = claim_seconds if claim_seconds is not None else services.settings.claim_seconds
        self.max_attempts = max_attempts
        self.chunk_size = chunk_size

    async def run_once(self) -> int:
        """Claim one inbox batch and process it; returns the inbox items completed."""
        batches = await asyncio.to_thread(self._claim)
        done = 0
        for batch in batches:
            try:
                await self.process(batch)
            except Exception as exc:  # BC or data trouble: keep the items, try again later
                log.warning(
                    "inbox batch released",
                    entity=batch.entity,
                    company=batch.company_id,
                    items=len(batch.items),
                    error=str(exc),
                    error_type=type(exc).__name__,
                )
                await asyncio.to_thread(self._release, batch.ids, f"{type(exc).__name__}: {exc}"[:2000])
                continue
            done += len(batch.items)
        return done

    # -- one batch ---------------------------------------------------------------------------------

    async def process(self, batch: InboxBatch) -> None:
        if batch.entity == JOURNALS:
            await self.process_journals(batch)
            return
        ruleset = self.services.ruleset
        if not ruleset.rules_for(batch.entity):
            await asyncio.to_thread(
                self._finish, batch.ids
            )  # no rule reads this entity (any more): nothing to evaluate
            return
        deleted = set(batch.deleted_ids)
        created = {i.record_id.lower() for i in batch.items if i.change_type == "created" and i.record_id}
        fetch_ids = [i for i in batch.record_ids if i not in deleted]
        changes: list[RecordChange] = [
            RecordChange(record_id=i.lower(), record=None, events=("deleted",), deleted=True)
            for i in batch.deleted_ids
        ]
        entity = entity_set(batch.entity)
        expand = sorted(ruleset.expansions(batch.entity))
        found: set[str] = set()
        if fetch_ids:
            # Stored as they come, a small chunk first then chunk_size at a time: the first messages
            # reach the outbox (and the dispatcher) while the rest are still being read, rather than
            # all at the end of a large batch. Each chunk is stored as one transaction (outbox rows
            # with their snapshots); the inbox items are marked done with the last one, so a crash
            # in between re-reads the batch and the stored snapshots keep it from planning twice.
            flush_at = min(FIRST_CHUNK, self.chunk_size)
            async for record in self.services.bc.iter_by_ids(
                entity, batch.company_id, fetch_ids, expand=expand or None
            ):
                if not record.id:
                    continue
                found.add(record.id.lower())
                event = "created" if record.id.lower() in created else "updated"
                changes.append(change_from_record(record, (event,)))
                if len(changes) >= flush_at:
                    crash_point("fetch.records_fetched")
                    await self._store(batch.company_id, batch.entity, changes, finish_ids=())
                    changes, flush_at = [], self.chunk_size
        for missing in fetch_ids:
            if missing.lower() not in found:
                # Deleted between the change and our fetch: BC will also send `deleted` (or has).
                changes.append(
                    RecordChange(record_id=missing.lower(), record=None, events=("deleted",), deleted=True)
                )
        for item in batch.collections:
            await self._collection(batch, item, expand)
        crash_point("fetch.records_fetched")
        await self._store(batch.company_id, batch.entity, changes, finish_ids=batch.ids)

    async def _collection(self, batch: InboxBatch, item: InboxNotification, expand: list[str]) -> None:
        """More than 1,000 changes: GET the URL BC gave (opaque), page by page, bounded memory."""
        bc = self.services.bc
        entity = entity_set(batch.entity)
        pending: list[Any] = []

        async def flush() -> None:
            records = pending
            if expand:
                ids = [r.id for r in pending if r.id]
                records = [r async for r in bc.iter_by_ids(entity, batch.company_id, ids, expand=expand)]
            changes = [change_from_record(r, ("updated",)) for r in records if r.id]
            crash_point("fetch.records_fetched")
            await self._store(batch.company_id, batch.entity, changes, finish_ids=())
            pending.clear()

        async for record in bc.iter_url(item.resource, entity.model):
            pending.append(record)
            if len(pending) >= self.chunk_size:
                await flush()
        if pending:
            await flush()

    async def process_journals(self, batch: InboxBatch) -> None:
        """A journal changed: read its changed payment lines and run the customerPayments rules."""
        bc = self.services.bc
        journal_ids = [i.lower() for i in batch.record_ids]
        for item in batch.collections:
            async for journal in bc.iter_url(item.resource, CUSTOMER_PAYMENT_JOURNALS.model):
                if journal.id and journal.id.lower() not in journal_ids:
                    journal_ids.append(journal.id.lower())
        if self.services.ruleset.rules_for(CUSTOMER_PAYMENTS.path):
            for journal_id in journal_ids:
                await self.read_journal_lines(batch.company_id, journal_id)
        await asyncio.to_thread(self._finish, batch.ids)

    async def read_journal_lines(self, company_id: str, journal_id: str) -> int:
        """Evaluate the lines of one journal changed since its watermark; returns lines evaluated."""
        services = self.services
        bc = services.bc
        try:
            journal = await bc.get_record(CUSTOMER_PAYMENT_JOURNALS, company_id, journal_id)
        except NotFoundError:
            return 0  # the journal is gone (deleted); its lines with it
        key = journal_watermark_entity(journal_id)
        with read_scope(services.db) as session:
            mark = get_watermark(session, company_id, key, "lines")
        lines = journal_payments(journal_id)
        expand = sorted(services.ruleset.expansions(CUSTOMER_PAYMENTS.path)) or None
        since = mark.last_modified
        stream = (
            bc.iter_changed_since(lines, company_id, since, overlap=WATERMARK_OVERLAP, expand=expand)
            if since is not None
            else bc.iter_records(lines, company_id, expand=expand)
        )
        seen: list[tuple[str, Any]] = []
        chunk: list[CustomerPayment] = []
        evaluated = 0
        async for line in stream:
            if not line.id or line.lastModifiedDateTime is None:
                continue
            if not mark.is_new(line.id.lower(), line.lastModifiedDateTime):
                continue  # this exact version was handled inside the overlap window
            chunk.append(line)
            if len(chunk) >= self.chunk_size:
                evaluated += await self._store_lines(company_id, journal.code, chunk, seen)
                chunk = []
        if chunk:
            evaluated += await self._store_lines(company_id, journal.code, chunk, seen)

        # The watermark moves only after the whole read: the lines may come in any order.
        def advance() -> None:
            with session_scope(services.db) as session:
                advance_watermark(
                    session,
                    company_id,
                    key,
                    "lines",
                    seen,
                    overlap=WATERMARK_OVERLAP,
                    now=services.clock.now(),
                )

        await asyncio.to_thread(advance)
        return evaluated

    async def _store_lines(
        self, company_id: str, journal_code: str | None, lines: Sequence[CustomerPayment], seen: list[Any]
    ) -> int:
        changes = []
        for line in lines:
            change = change_from_record(
                line,
                LINE_EVENTS,
                first_seen_events=LINE_FIRST_EVENTS,
                record_number=journal_line_label(journal_code, line.to_json()),
            )
            changes.append(change)
            assert line.id is not None and line.lastModifiedDateTime is not None
            seen.append((line.id.lower(), line.lastModifiedDateTime))
        await self._store(company_id, CUSTOMER_PAYMENTS.path, changes, finish_ids=())
        return len(changes)

    # -- storing -----------------------------------------------------------------------------------

    async def _store(
        self, company_id: str, entity: str, changes: Sequence[RecordChange], *, finish_ids: Sequence[int]
    ) -> None:
        # In a thread: a busy database (SQLite's write lock) must not stall the event loop (and with
        # it the webhooks and /ready) for its busy timeout.
        inserted = await asyncio.to_thread(self._store_now, company_id, entity, changes, finish_ids)
        if inserted:
            crash_point("outbox.committed")  # outbox rows, snapshots and inbox state are durable
            self.services.wake("dispatcher")

    def _store_now(
        self, company_id: str, entity: str, changes: Sequence[RecordChange], finish_ids: Sequence[int]
    ) -> int:
        services = self.services
        now = services.clock.now()
        count_records_fetched(services, entity, sum(1 for change in changes if not change.deleted))

        def finish(session: Session) -> None:
            mark_inbox_done(session, finish_ids, now=now)

        result = evaluate_and_store(
            services.db,
            services.ruleset,
            company_id=company_id,
            entity=entity,
            changes=changes,
            now=now,
            finish=finish if finish_ids else None,
            reminders=services.settings.reminders,
            test_mode=services.settings.testing,
        )
        log.debug(
            "evaluated",
            entity=entity,
            company=company_id,
            records=result.records,
            planned=result.planned,
            inserted=result.inserted,
        )
        return result.inserted

    def _claim(self) -> list[InboxBatch]:
        services = self.services
        with session_scope(services.db) as session:
            return claim_inbox_batch(
                session,
                services.instance_id,
                now=services.clock.now(),
                limit=self.batch_size,
                lease_seconds=self.claim_seconds,
            )

    def _release(self, ids: Sequence[int], error: str) -> None:
        services = self.services
        with session_scope(services.db) as session:
            release_inbox(session, ids, error=error, now=services.clock.now(), max_attempts=self.max_attempts)

    def _finish(self, ids: Sequence[int]) -> None:
        with session_scope(self.services.db) as session:
            mark_inbox_done(session, ids, now=self.services.clock.now())
