"""The poller: entity sets BC sends no webhooks for, read by a stored lastModifiedDateTime watermark.

Rules with the `poll` event name what to poll: in practice `purchaseOrders` (not webhook-enabled in
v2.0) and `customerPayments` (journal lines; the journal webhook reads them sooner, this is the
fallback). Each pass asks for `lastModifiedDateTime gt watermark - overlap` (bc-api.md: clocks and
BC's 50 ms margin can repeat rows), skips the exact versions already handled inside the overlap
(the watermark keeps them), evaluates the rest with event `poll` against the previous snapshot,
and moves the watermark only after the whole read, because BC returns the rows in any order.
The first pass of a (company, entity) reads everything. One instance polls at a time (a lease);
the loop runs every `poll_interval_seconds`.
"""

from __future__ import annotations

import asyncio
from datetime import datetime, timedelta
from typing import Any

from server.bc.entities import CUSTOMER_PAYMENT_JOURNALS, CUSTOMER_PAYMENTS, entity_set
from server.bc.models import BCRecord
from server.planning.evaluation import (
    RecordChange,
    change_from_record,
    evaluate_and_store,
    journal_line_label,
)
from server.planning.subscriptions import company_ids
from server.runtime.logs import get_logger
from server.services import Services
from server.store.db import read_scope, session_scope
from server.store.leases import acquire_lease
from server.store.watermarks import advance_watermark, get_watermark

log = get_logger("ml_connector.poller")

LEASE_NAME = "bc-poller"
WATERMARK_KIND = "poll"
OVERLAP = timedelta(minutes=2)


class Poller:
    def __init__(self, services: Services, *, overlap: timedelta = OVERLAP, chunk_size: int = 200) -> None:
        self.services = services
        self.overlap = overlap
        self.chunk_size = chunk_size

    def entities(self) -> list[str]:
        return sorted(self.services.ruleset.entities({"poll"}))

    async def run_once(self) -> int:
        """One poll of every (company, entity) with poll rules; returns the records evaluated."""
        services = self.services
        entities = self.entities()
        if not entities:
            return 0
        ttl = timedelta(seconds=max(60.0, 3 * services.settings.poll_interval_seconds))
        with session_scope(services.db) as session:
            if (
                acquire_lease(session, LEASE_NAME, services.instance_id, now=services.clock.now(), ttl=ttl)
                is None
            ):
                return 0  # another instance polls
        total = 0
        for company_id in await company_ids(services):
            for entity in entities:
                total += await self.poll(company_id, entity)
        return total

    async def poll(self, company_id: str, entity: str) -> int:
        services = self.services
        bc = services.bc
        with read_scope(services.db) as session:
            mark = get_watermark(session, company_id, entity, WATERMARK_KIND)
        target = entity_set(entity)
        expand = sorted(services.ruleset.expansions(entity)) or None
        journals = await self._journal_codes(company_id) if entity == CUSTOMER_PAYMENTS.path else {}
        stream = (
            bc.iter_changed_since(target, company_id, mark.last_modified, overlap=self.overlap, expand=expand)
            if mark.last_modified is not None
            else bc.iter_records(target, company_id, expand=expand)
        )
        seen: list[tuple[str, datetime]] = []
        chunk: list[RecordChange] = []
        evaluated = 0
        async for record in stream:
            if not record.id or record.lastModifiedDateTime is None:
                continue
            if not mark.is_new(record.id.lower(), record.lastModifiedDateTime):
                continue  # this exact version was handled in an earlier, overlapping poll
            chunk.append(self._change(record, journals))
            seen.append((record.id.lower(), record.lastModifiedDateTime))
            if len(chunk) >= self.chunk_size:
                # In a thread: the database must not stall the event loop that answers webhooks.
                evaluated += await asyncio.to_thread(self._store, company_id, entity, chunk)
                chunk = []
        if chunk:
            evaluated += await asyncio.to_thread(self._store, company_id, entity, chunk)
        with session_scope(services.db) as session:
            advance_watermark(
                session,
                company_id,
                entity,
                WATERMARK_KIND,
                seen,
                overlap=self.overlap,
                now=services.clock.now(),
            )
        if evaluated:
            log.info("polled", entity=entity, company=company_id, records=evaluated)
        return evaluated

    @staticmethod
    def _change(record: BCRecord, journals: dict[str, str | None]) -> RecordChange:
        if isinstance(record, CUSTOMER_PAYMENTS.model):
            # The audit names the journal line the receipt confirms.
            code = journals.get((record.journalId or "").lower())
            return change_from_record(
                record, ("poll",), record_number=journal_line_label(code, record.to_json())
            )
        return change_from_record(record, ("poll",))

    async def _journal_codes(self, company_id: str) -> dict[str, str | None]:
        codes: dict[str, str | None] = {}
        async for journal in self.services.bc.iter_records(CUSTOMER_PAYMENT_JOURNALS, company_id):
            if journal.id:
                codes[journal.id.lower()] = journal.code
        return codes

    def _store(self, company_id: str, entity: str, changes: list[Any]) -> int:
        services = self.services
        result = evaluate_and_store(
            services.db,
            services.ruleset,
            company_id=company_id,
            entity=entity,
            changes=changes,
            now=services.clock.now(),
            reminders=services.settings.reminders,
            test_mode=services.settings.testing,
        )
        if result.inserted:
            services.wake("dispatcher")
        return result.records
