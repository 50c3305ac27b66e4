"""Keeps exactly one BC webhook subscription per (company, entity) the loaded rules need.

Which entities: those with rules on created/updated/deleted that BC v2.0 webhook-enables (the
catalogue's `webhook` flag), plus `customerPaymentJournals` when rules read customerPayments lines
(customerPayments has no webhooks, but a line change notifies its journal; bc-api.md section b).

One pass (under a store lease, so only one instance acts at a time):
1. list BC's subscriptions once: a live row BC no longer has was dropped (BC deletes a subscription
   after a 4xx delivery answer, or when it expires) -> re-create; a 'creating' row left by a crash
   is matched by its clientState; a subscription at our URL the store does not know is deleted;
2. delete subscriptions no rule needs (and duplicates, and ones pointing at an old URL);
3. renew the ones expiring within `subscription_renew_before_hours` (BC expires them after 3 days;
   the PATCH repeats the handshake); a 404 on renew -> dropped -> re-create;
4. create the missing ones: the row and its random clientState are stored first, then BC is asked,
   then BC calls our /webhooks/bc with the validation token before answering.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import timedelta

from engine.catalogue import default_catalogue
from server.bc.entities import entity_set
from server.bc.errors import BCError, EntityChangedError, NotFoundError
from server.bc.models import Subscription
from server.planning.evaluation import RecordChange, change_from_record, evaluate_and_store
from server.runtime.crashpoints import crash_point
from server.runtime.logs import get_logger
from server.services import Services
from server.store.db import read_scope, session_scope
from server.store.leases import acquire_lease
from server.store.subscriptions import (
    activate_subscription,
    client_state_matches,
    create_pending_subscription,
    list_subscriptions,
    new_client_state,
    set_subscription_status,
)
from server.store.tables import BcSubscription

log = get_logger("ml_connector.subscriptions")

LEASE_NAME = "bc-subscriptions"
WEBHOOK_EVENTS = frozenset({"created", "updated", "deleted"})
# Rule entity -> the webhook-enabled entity whose notifications announce its changes: BC notifies
# a change to a line on its document header (webhooks are for the header entities,
# https://learn.microsoft.com/en-us/dynamics365/business-central/dev-itpro/api-reference/v2.0/dynamics-subscriptions).
# Rules on these read the lines on notice.
NOTIFIED_THROUGH = {"customerPayments": "customerPaymentJournals"}
PROXY_EVENTS = frozenset({"created", "updated", "deleted", "poll"})
LIVE = ("creating", "active", "renewing")
PRIME_CHUNK = 500
STALE_CREATING = timedelta(minutes=5)  # longer than any create call (handshake included) can take


def notification_url(services: Services) -> str:
    return services.settings.public_base_url.rstrip("/") + "/webhooks/bc"


def webhook_entities(services: Services) -> frozenset[str]:
    """The entity sets to subscribe to for the loaded rules."""
    ruleset = services.ruleset
    catalogue = default_catalogue()
    wanted: set[str] = set()
    for entity in ruleset.entities(WEBHOOK_EVENTS):
        spec = catalogue.get(entity)
        if spec is not None and spec.webhook:
            wanted.add(entity)
    for entity, through in NOTIFIED_THROUGH.items():
        if entity in ruleset.entities(PROXY_EVENTS):
            wanted.add(through)
    return frozenset(wanted)


async def company_ids(services: Services) -> list[str]:
    """The companies to watch: settings.bc.companies, or every company BC lists when that is empty."""
    configured = services.settings.bc.companies
    if configured:
        return [c.lower() for c in configured]
    return [c.id.lower() for c in await services.bc.list_companies() if c.id]


@dataclass
class PassReport:
    created: int = 0
    renewed: int = 0
    recreated: int = 0
    deleted: int = 0
    failed: int = 0

    @property
    def actions(self) -> int:
        return self.created + self.renewed + self.recreated + self.deleted


class SubscriptionManager:
    def __init__(self, services: Services, *, lease_ttl: timedelta | None = None) -> None:
        self.services = services
        # Sticky between passes; after a crash another (or the restarted) instance takes over once it
        # runs out, so it comes from settings (it must outlast one pass).
        self.lease_ttl = lease_ttl or timedelta(seconds=services.settings.claim_seconds)
        self.last_report = PassReport()

    async def run_once(self) -> int:
        services = self.services
        with session_scope(services.db) as session:
            grant = acquire_lease(
                session, LEASE_NAME, services.instance_id, now=services.clock.now(), ttl=self.lease_ttl
            )
        if grant is None:
            return 0  # another instance manages the subscriptions
        report = PassReport()
        self.last_report = report
        url = notification_url(services)
        wanted = {(c, e) for c in await company_ids(services) for e in webhook_entities(services)}
        remote = await self._remote_subscriptions()
        dropped = await self._reconcile(remote, url, report) if remote is not None else set()
        keep: dict[tuple[str, str], BcSubscription] = {}
        for row in self._rows(LIVE):
            key = (row.company_id.lower(), row.entity)
            if row.status == "creating":
                continue  # in flight (or reconciled above once stale)
            if key not in wanted or row.notification_url != url or key in keep:
                await self._delete(
                    row, report, reason="no rule needs it" if key not in wanted else "replaced"
                )
                continue
            keep[key] = row
        await self._renew_due(keep, report)
        for key in sorted(wanted):
            if key in keep or self._creating(key):
                continue
            await self._create(key[0], key[1], url, report, recreate=key in dropped)
        if report.actions or report.failed:
            log.info(
                "bc subscriptions",
                created=report.created,
                renewed=report.renewed,
                recreated=report.recreated,
                deleted=report.deleted,
                failed=report.failed,
            )
        return report.actions

    # -- store helpers -----------------------------------------------------------------------------

    def _rows(self, statuses: Iterable[str]) -> list[BcSubscription]:
        with read_scope(self.services.db) as session:
            rows = list_subscriptions(session, statuses=list(statuses))
            session.expunge_all()  # keep the rows readable after the read transaction ends
            return rows

    def _creating(self, key: tuple[str, str]) -> bool:
        return any((r.company_id.lower(), r.entity) == key for r in self._rows(["creating"]))

    def _set_status(self, row_id: int, status: str, error: str | None = None) -> None:
        with session_scope(self.services.db) as session:
            set_subscription_status(session, row_id, status, now=self.services.clock.now(), error=error)

    def _activate(self, row_id: int, sub: Subscription) -> None:
        with session_scope(self.services.db) as session:
            activate_subscription(
                session,
                row_id,
                subscription_id=sub.subscriptionId,
                etag=sub.odata_etag,
                expires_at=sub.expirationDateTime,
                now=self.services.clock.now(),
            )

    # -- BC calls ----------------------------------------------------------------------------------

    async def _remote_subscriptions(self) -> list[Subscription] | None:
        try:
            return await self.services.bc.list_subscriptions()
        except BCError as exc:
            # Not fatal: renewals still find dropped subscriptions by their 404.
            log.warning("bc subscriptions could not be listed", error=str(exc))
            return None

    async def _reconcile(
        self, remote: list[Subscription], url: str, report: PassReport
    ) -> set[tuple[str, str]]:
        """Align the store with BC's list; returns the (company, entity) keys BC dropped."""
        now = self.services.clock.now()
        dropped: set[tuple[str, str]] = set()
        by_id = {s.subscriptionId: s for s in remote}
        known: set[str] = set()
        for row in self._rows(LIVE):
            assert row.id is not None
            if row.status == "creating":
                if row.updated_at > now - STALE_CREATING:
                    continue
                # A crash between BC's answer and our commit: find it by its secret clientState.
                match = next((s for s in remote if client_state_matches(row, s.clientState)), None)
                if match is not None:
                    self._activate(row.id, match)
                    known.add(match.subscriptionId)
                else:
                    self._set_status(row.id, "deleted", "creation never completed")
                continue
            if row.subscription_id is None:
                continue
            known.add(row.subscription_id)
            if row.subscription_id not in by_id:
                log.warning("bc subscription dropped by BC", entity=row.entity, company=row.company_id)
                self._set_status(row.id, "dropped", "no longer listed by BC")
                dropped.add((row.company_id.lower(), row.entity))
        for sub in remote:
            if sub.notificationUrl == url and sub.subscriptionId not in known:
                try:
                    await self.services.bc.delete_subscription(sub.subscriptionId)
                    report.deleted += 1
                except NotFoundError:
                    pass
                except BCError as exc:
                    report.failed += 1
                    log.warning("orphan bc subscription not deleted", error=str(exc))
        return dropped

    async def _delete(self, row: BcSubscription, report: PassReport, *, reason: str) -> None:
        assert row.id is not None
        if row.subscription_id is not None:
            try:
                await self.services.bc.delete_subscription(row.subscription_id, etag="*")
            except NotFoundError:
                pass  # already gone
            except BCError as exc:
                report.failed += 1
                self._set_status(row.id, row.status, f"delete failed: {exc}")
                return
        self._set_status(row.id, "deleted", reason)
        report.deleted += 1

    async def _renew_due(self, rows: dict[tuple[str, str], BcSubscription], report: PassReport) -> None:
        now = self.services.clock.now()
        horizon = now + timedelta(hours=self.services.settings.subscription_renew_before_hours)
        for key, row in rows.items():
            assert row.id is not None and row.subscription_id is not None
            if row.expires_at is not None and row.expires_at > horizon:
                continue
            self._set_status(row.id, "renewing")
            crash_point("subscription.renewing")
            try:
                try:
                    sub = await self.services.bc.renew_subscription(row.subscription_id, etag=row.etag or "*")
                except EntityChangedError:
                    sub = await self.services.bc.renew_subscription(row.subscription_id, etag="*")
            except NotFoundError:
                log.warning("bc subscription gone at renewal; re-creating", entity=row.entity)
                self._set_status(row.id, "dropped", "404 on renew")
                await self._create(key[0], key[1], row.notification_url, report, recreate=True)
                continue
            except BCError as exc:
                report.failed += 1
                self._set_status(row.id, "active", f"renew failed: {exc}")
                continue
            crash_point("subscription.renewed")
            self._activate(row.id, sub)
            report.renewed += 1

    async def _create(
        self, company_id: str, entity: str, url: str, report: PassReport, *, recreate: bool = False
    ) -> None:
        bc = self.services.bc
        resource = bc.subscription_resource(entity_set(entity), company_id)
        with session_scope(self.services.db) as session:
            secret = new_client_state()  # kept in memory only: the store keeps its hash
            row = create_pending_subscription(
                session,
                company_id=company_id,
                entity=entity,
                resource=resource,
                notification_url=url,
                client_state=secret,
                now=self.services.clock.now(),
            )
            row_id = row.id
        assert row_id is not None
        try:
            sub = await bc.create_subscription(url, resource, secret)
        except BCError as exc:
            report.failed += 1
            log.warning("bc subscription not created", entity=entity, company=company_id, error=str(exc))
            self._set_status(row_id, "deleted", f"create failed: {exc}")
            return
        self._activate(row_id, sub)
        if recreate:
            report.recreated += 1
            return
        report.created += 1
        await self._prime(company_id, entity)

    async def _prime(self, company_id: str, entity: str) -> None:
        """Store a first snapshot of every record when rules compare with the previous version.

        Without it the first change seen for a record has nothing to compare with, so a crossing
        (balance over the credit limit) on that change would go unnoticed, and a rule on `deleted`
        would know nothing but the id of a record deleted before it ever changed. Subscribing first and
        reading second leaves no gap in which a change is neither read nor notified.
        """
        services = self.services
        rules = services.ruleset.rules_for(entity)
        # Rules on `deleted` see the last stored version too (a deleted record cannot be fetched).
        if not any(rule.needs_previous or "deleted" in rule.events for rule in rules):
            return
        target = entity_set(entity)
        expand = sorted(services.ruleset.expansions(entity)) or None
        chunk: list[RecordChange] = []
        try:
            async for record in services.bc.iter_records(target, company_id, expand=expand):
                if record.id:
                    chunk.append(change_from_record(record, ()))  # no events: snapshot only
                if len(chunk) >= PRIME_CHUNK:
                    # Off the event loop: evaluating and storing a chunk takes tens of ms, long
                    # enough to stall the sends and webhooks the same loop serves.
                    await asyncio.to_thread(self._store_snapshots, company_id, entity, chunk)
                    chunk = []
            if chunk:
                await asyncio.to_thread(self._store_snapshots, company_id, entity, chunk)
        except BCError as exc:
            log.warning("snapshots not primed", entity=entity, company=company_id, error=str(exc))

    def _store_snapshots(self, company_id: str, entity: str, changes: list[RecordChange]) -> None:
        services = self.services
        evaluate_and_store(
            services.db,
            services.ruleset,
            company_id=company_id,
            entity=entity,
            changes=changes,
            now=services.clock.now(),
            reminders=services.settings.reminders,
            test_mode=services.settings.testing,
        )
