"""The daily sweep: time-based rules (overdue, due soon) over open documents, streamed page by page.

Time passes without any BC change, so no webhook announces "7 days overdue": once a day, at
`sweep.time` in `business_timezone`, every entity set with `sweep` rules is read (sales invoices
with `status eq 'Open' and remainingAmount gt 0`: posted and not yet paid, by the status values of
https://learn.microsoft.com/en-us/dynamics365/business-central/dev-itpro/api-reference/v2.0/resources/dynamics_salesinvoice),
expanded as the rules need, following `@odata.nextLink`, and each page is evaluated and
committed before the next is read (bounded memory). A lease keeps it to one instance and a stored
"last sweep" per company to once a day; a crash mid-sweep just sweeps again (job ids are stable,
so nothing is planned twice). The sweep reads previous snapshots but never writes them: see
evaluation.evaluate_and_store.

Messages of grouping and ladder rules wait for the last page (one customer's invoices may sit on
different pages; caps count the whole sweep). They wait in the database, not in memory
(server.store.sweep_staging): each page's are staged with the page, then read back and stored a
few recipients at a time, so memory stays flat however many invoices are open.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Sequence
from dataclasses import replace
from datetime import datetime, time, timedelta
from typing import Any, TypeVar
from zoneinfo import ZoneInfo

from sqlalchemy import Engine
from sqlmodel import Session

from engine.messages import PlannedMessage
from engine.ruleset import RuleSet
from server.bc.entities import entity_set
from server.planning.evaluation import change_from_record, evaluate_and_store, groups_on_sweep, insert_grouped
from server.planning.subscriptions import company_ids
from server.runtime.logs import get_logger
from server.services import Services
from server.settings import ReminderSettings, TestModeSettings
from server.store import sweep_staging
from server.store.db import read_scope, session_scope
from server.store.leases import acquire_lease, release_lease
from server.store.sweep_staging import ALONE, BY_RECIPIENT, Held, last_sweep, record_sweep

log = get_logger("ml_connector.sweep")

LEASE_NAME = "bc-sweep"
LEASE_TTL = timedelta(minutes=30)
# What "open" means per entity set; other entity sets with sweep rules are read whole.
SWEEP_FILTERS = {"salesInvoices": "status eq 'Open' and remainingAmount gt 0"}
# Held messages stored per transaction at the end of a sweep (whole recipients, at least this many).
HELD_BATCH = 1000
T = TypeVar("T")


# What the end-of-sweep steps read from a held reminder's record (engine.grouping, engine.pauses,
# server.planning.reminders's payment grace); the configured BC switch field is added to these.
HELD_FIELDS = (
    "id",
    "number",
    "customerId",
    "customerNumber",
    "dueDate",
    "currencyCode",
    "remainingAmount",
    "totalAmountIncludingTax",
)


def held_fields(suppress_field: str | None) -> frozenset[str]:
    extra = {suppress_field.split(".")[0]} if suppress_field else set()
    return frozenset(HELD_FIELDS) | extra


def slim_held(message: PlannedMessage, keep: frozenset[str]) -> PlannedMessage:
    """The message with only the record fields the end-of-sweep steps read (and the whole customer,
    which a group text may name)."""
    record = message.record
    if record is None:
        return message
    slim = {k: record[k] for k in keep | {"customer"} if k in record}
    return replace(message, record=slim)


def held_part(ruleset: RuleSet, message: PlannedMessage) -> tuple[int, str]:
    """Which messages are stored together at the end of the sweep: everything grouping and the caps
    compare lives in one recipient's messages (the group key and the cap both name the recipient).
    Staff stages (an account manager) are neither grouped nor capped: each is stored alone, after
    every recipient's, as before when the caps were counted before any of them was inserted."""
    rule = ruleset.get(message.rule_id)
    if rule is not None and rule.to_staff(message.stage):
        return ALONE, message.job_id
    return BY_RECIPIENT, message.to or ""


class Sweeper:
    def __init__(self, services: Services, *, page_size: int | None = None) -> None:
        self.services = services
        self.page_size = page_size
        self.zone = ZoneInfo(services.settings.business_timezone)
        self.at = time.fromisoformat(services.settings.sweep.time)

    def entities(self) -> list[str]:
        return sorted(self.services.ruleset.entities({"sweep"}))

    def due(self, company_id: str, now: datetime) -> bool:
        """Past today's sweep time (business time zone) and not yet swept today."""
        local = now.astimezone(self.zone)
        if local.time() < self.at:
            return False
        with read_scope(self.services.db) as session:
            last = last_sweep(session, company_id)
        return last is None or last.astimezone(self.zone).date() < local.date()

    async def run_once(self) -> int:
        """Sweep each company whose sweep is due; returns the records evaluated."""
        now = self.services.clock.now()
        if now.astimezone(self.zone).time() < self.at or not self.entities():
            return 0
        return await self._sweep(only_due=True)

    async def sweep_now(self) -> int:
        """Sweep every company now, whatever the time of day (tests, sandbox, an operator's command)."""
        return await self._sweep(only_due=False)

    async def _sweep(self, *, only_due: bool) -> int:
        services = self.services
        companies = await company_ids(services)
        if only_due and not any(self.due(c, services.clock.now()) for c in companies):
            return 0  # checked before taking the lease: no write every minute of the day
        with session_scope(services.db) as session:
            grant = acquire_lease(
                session, LEASE_NAME, services.instance_id, now=services.clock.now(), ttl=LEASE_TTL
            )
        if grant is None:
            return 0  # another instance is sweeping
        total = 0
        try:
            # Under the lease no other sweep runs: whatever is staged is a dead sweep's (a crash).
            with session_scope(services.db) as session:
                stale = sweep_staging.drop_all(session)
            if stale:
                log.warning("dropped held messages of an unfinished sweep", rows=stale)
            for company_id in companies:
                if only_due and not self.due(company_id, services.clock.now()):
                    continue
                started = services.clock.now()
                swept = 0
                for entity in self.entities():
                    swept += await self.sweep_entity(company_id, entity)
                with session_scope(services.db) as session:
                    record_sweep(session, company_id, started)
                log.info("swept", company=company_id, records=swept)
                total += swept
        finally:
            with session_scope(services.db) as session:
                release_lease(session, LEASE_NAME, services.instance_id)
        return total

    async def sweep_entity(self, company_id: str, entity: str) -> int:
        services = self.services
        target = entity_set(entity)
        params: dict[str, str] = {}
        if entity in SWEEP_FILTERS:
            params["$filter"] = SWEEP_FILTERS[entity]
        expand = sorted(services.ruleset.expansions(entity))
        if expand:
            params["$expand"] = ",".join(expand)
        url = services.bc.url(target.collection_path(company_id))
        evaluated = 0
        hold = groups_on_sweep(services.ruleset)
        run = HeldRun(
            services.db,
            services.ruleset,
            company_id=company_id,
            entity=entity,
            reminders=services.settings.reminders,
            test_mode=services.settings.testing,
        )
        try:
            async for page in services.bc.iter_pages(url, params, page_size=self.page_size):
                records = [target.model.model_validate(raw) for raw in page]
                changes = [change_from_record(r, ("sweep",)) for r in records if r.id]
                del page, records  # the changes carry what is evaluated
                # In a thread: evaluating a page and waiting on the database must not stall the event
                # loop that answers BC's and Twilio's webhooks.
                result = await run.in_thread(
                    evaluate_and_store,
                    services.db,
                    services.ruleset,
                    company_id=company_id,
                    entity=entity,
                    changes=changes,
                    now=services.clock.now(),
                    store_snapshots=False,
                    hold=hold,
                    stage_held=run.stage,
                    reminders=services.settings.reminders,
                    test_mode=services.settings.testing,
                )
                del changes
                evaluated += result.records
                if result.inserted:
                    services.wake("dispatcher")
            # Grouping needs the whole sweep (one customer's invoices may sit on different pages).
            if await run.in_thread(run.store, services.clock.now()):
                services.wake("dispatcher")
        finally:
            await asyncio.to_thread(run.drop)
        return evaluated


class HeldRun:
    """One sweep of one company and entity: its held messages, staged with their pages, stored at the end.

    `stage` is evaluate_and_store's `stage_held` (it runs in the page's transaction); `store` reads
    them back a few whole recipients at a time and stores them (grouping, pauses, grace, the BC
    switch, caps: server.planning.reminders); `drop` deletes the run's rows, whatever happened.

    Cancelled (the service stops), the sweep lets the thread at work finish first - a page's
    transaction, or `store` up to the end of its batch - so that `drop` never deletes rows under a
    reader: a group is stored with all its members or not at all.
    """

    def __init__(
        self,
        db: Engine,
        ruleset: RuleSet,
        *,
        company_id: str,
        entity: str,
        reminders: ReminderSettings | None = None,
        test_mode: TestModeSettings | None = None,
    ) -> None:
        self.db = db
        self.ruleset = ruleset
        self.company_id = company_id
        self.entity = entity
        self.reminders = reminders or ReminderSettings()
        self.test_mode = test_mode or TestModeSettings()
        self.run_id = sweep_staging.new_run_id()
        self.staged = 0  # numbers the held messages in the order planned
        # Slimmed to what grouping, pauses, grace and the BC switch read.
        self.keep = held_fields(self.reminders.suppress_field)
        self._stop = threading.Event()

    async def in_thread(self, fn: Callable[..., T], /, *args: Any, **kwargs: Any) -> T:
        work = asyncio.ensure_future(asyncio.to_thread(fn, *args, **kwargs))
        try:
            return await asyncio.shield(work)
        except asyncio.CancelledError:
            self._stop.set()
            await asyncio.wait([work])
            raise

    def stage(self, session: Session, held: Sequence[PlannedMessage]) -> None:
        rows = []
        for message in held:
            phase, part = held_part(self.ruleset, message)
            rows.append(Held(self.staged, phase, part, slim_held(message, self.keep)))
            self.staged += 1
        sweep_staging.stage(session, self.run_id, self.company_id, self.entity, rows)

    def store(self, now: datetime, *, batch_size: int = HELD_BATCH, chunk: int = sweep_staging.CHUNK) -> int:
        """Store the held messages a few whole recipients at a time; returns the outbox rows added."""
        with read_scope(self.db) as session:
            found = sweep_staging.count_run(session, self.run_id)
        if found != self.staged:
            # Only a sweep that started after this one's lease ran out deletes its rows: that sweep
            # stores them all, so this one stores none rather than part of a group.
            log.warning(
                "held messages gone from staging; not stored",
                run=self.run_id,
                staged=self.staged,
                found=found,
            )
            return 0
        inserted = 0
        batch: list[PlannedMessage] = []
        for part in sweep_staging.parts(self.db, self.run_id, chunk=chunk):
            if self._stop.is_set():
                return inserted  # cancelled: whole recipients only, the next sweep plans the rest
            batch.extend(part)
            if len(batch) >= batch_size:
                inserted += self._insert(batch, now)
                batch = []
        if batch and not self._stop.is_set():
            inserted += self._insert(batch, now)
        return inserted

    def _insert(self, batch: Sequence[PlannedMessage], now: datetime) -> int:
        return insert_grouped(
            self.db,
            self.ruleset,
            company_id=self.company_id,
            messages=batch,
            now=now,
            reminders=self.reminders,
            test_mode=self.test_mode,
        )

    def drop(self) -> None:
        try:
            with session_scope(self.db) as session:
                sweep_staging.drop_run(session, self.run_id)
        except Exception as exc:  # the next sweep deletes them; do not hide why this one stopped
            log.warning("could not drop held messages; the next sweep will", run=self.run_id, error=str(exc))
