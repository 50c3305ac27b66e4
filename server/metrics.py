"""Prometheus metrics at /metrics (bearer-protected like the API), one registry per app.

Counted in-process where the event happens (each through one small function below, called from
the module that does the work):
    mlc_bc_notifications_received_total{entity,outcome}   webhooks_bc: stored / duplicate / rejected
    mlc_bc_records_fetched_total{entity}                 fetcher
    mlc_bc_requests_total{method,status}                 bc.client (status "error" = no response)
    mlc_send_latency_seconds{channel}                    dispatcher: rule fired -> Twilio accepted
    mlc_event_loop_lag_seconds                           looplag: how late the event loop woke
Read from the database at scrape time (so they agree across instances sharing one database):
    mlc_rules_fired_total{rule}          outbox rows each rule planned (sent, skipped or otherwise)
    mlc_messages{status}                 outbox messages in each status
    mlc_queue_depth{queue}               outbox due now / held / in doubt, inbox pending
    mlc_subscription_expiry_seconds{company,entity,status}   time left before BC drops it
    mlc_worker_up{worker}, mlc_worker_errors_total{worker}   this process's worker loops

A scrape that cannot reach the database still answers, with mlc_store_up 0.
"""

from __future__ import annotations

import contextlib
import weakref
from collections.abc import Iterator
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from litestar import Response, get
from litestar.di import NamedDependency
from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from sqlmodel import col, select

from server.runtime.logs import get_logger
from server.services import Services
from server.store.db import read_scope
from server.store.messages import count_by_status
from server.store.states import CLAIMABLE, IN_DOUBT, MessageStatus
from server.store.tables import BcSubscription, InboxNotification, OutboxMessage
from server.web.auth import make_bearer_guard_for_app

log = get_logger("ml_connector.metrics")

TEXT_FORMAT = "text/plain; version=0.0.4"

# Seconds for a normal send; minutes to hours when a message waited out a back-off or quiet hours.
SEND_LATENCY_BUCKETS = (
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
    30.0,
    60.0,
    300.0,
    900.0,
    3600.0,
    4 * 3600.0,
    12 * 3600.0,
)

# A healthy loop wakes within a few ms; 0.05 s and more is a stall the sends and webhooks feel.
LOOP_LAG_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)


class StoreCollector(Collector):
    """Gauges computed from the database on each scrape."""

    def __init__(self, services: Services) -> None:
        self._services = weakref.ref(services)

    def collect(self) -> Iterator[Metric]:
        services = self._services()
        if services is None:
            return
        store_up = GaugeMetricFamily("mlc_store_up", "1 when the database answered this scrape")
        try:
            yield from self._from_database(services)
            store_up.add_metric([], 1)
        except sa.exc.SQLAlchemyError as exc:
            log.warning("metrics: database unreachable", error=type(exc).__name__)
            store_up.add_metric([], 0)
        yield store_up
        yield from self._workers(services)

    def _from_database(self, services: Services) -> Iterator[Metric]:
        now = services.clock.now()
        with read_scope(services.db) as session:
            by_status = count_by_status(session)
            due = session.exec(
                select(sa.func.count())
                .select_from(OutboxMessage)
                .where(col(OutboxMessage.status).in_([s.value for s in CLAIMABLE]))
                .where(col(OutboxMessage.next_attempt_at) <= now)
            ).one()
            inbox = session.exec(
                select(sa.func.count())
                .select_from(InboxNotification)
                .where(col(InboxNotification.status).in_(["pending", "processing"]))
            ).one()
            per_rule = session.exec(
                select(OutboxMessage.rule_id, sa.func.count()).group_by(OutboxMessage.rule_id)
            ).all()
            # Plain tuples while the session is open (rows expire when it ends).
            subscriptions = [
                (sub.company_id, sub.entity, sub.status, sub.expires_at)
                for sub in session.exec(
                    select(BcSubscription).where(
                        col(BcSubscription.status).in_(["active", "renewing", "dropped"])
                    )
                ).all()
            ]
        messages = GaugeMetricFamily("mlc_messages", "Outbox messages by status", labels=["status"])
        for status in MessageStatus:
            messages.add_metric([status.value], by_status.get(status.value, 0))
        yield messages
        fired = CounterMetricFamily(
            "mlc_rules_fired",
            "Outbox rows each rule planned, whatever became of them (all instances: read from the database)",
            labels=["rule"],
        )
        for rule_id, count in sorted(per_rule):
            fired.add_metric([rule_id], int(count))
        yield fired
        queue = GaugeMetricFamily("mlc_queue_depth", "Work waiting, by queue", labels=["queue"])
        queue.add_metric(["outbox_due"], int(due))
        queue.add_metric(["outbox_held"], by_status.get(MessageStatus.HELD.value, 0))
        queue.add_metric(["outbox_in_doubt"], sum(by_status.get(s.value, 0) for s in IN_DOUBT))
        queue.add_metric(["inbox_pending"], int(inbox))
        yield queue
        expiry = GaugeMetricFamily(
            "mlc_subscription_expiry_seconds",
            "Seconds until a BC webhook subscription expires (negative: already expired)",
            labels=["company", "entity", "status"],
        )
        for company_id, entity, sub_status, expires_at in subscriptions:
            if expires_at is not None:
                expiry.add_metric([company_id, entity, sub_status], (expires_at - now).total_seconds())
        yield expiry

    def _workers(self, services: Services) -> Iterator[Metric]:
        up = GaugeMetricFamily(
            "mlc_worker_up", "1 while a worker loop runs in this process", labels=["worker"]
        )
        errors = CounterMetricFamily("mlc_worker_errors", "Failed worker passes", labels=["worker"])
        for name, loop in sorted(services.workers.items()):
            up.add_metric([name], 1 if loop.running else 0)
            errors.add_metric([name], loop.errors)
        yield up
        yield errors


class ConnectorMetrics:
    def __init__(self, services: Services) -> None:
        self.registry = CollectorRegistry(auto_describe=False)
        r = self.registry
        self.notifications = Counter(
            "mlc_bc_notifications_received",
            "BC webhook notification items received",
            ["entity", "outcome"],
            registry=r,
        )
        self.records_fetched = Counter(
            "mlc_bc_records_fetched", "BC records fetched for evaluation", ["entity"], registry=r
        )
        self.bc_requests = Counter(
            "mlc_bc_requests", "HTTP requests to the BC API, by answer", ["method", "status"], registry=r
        )
        self.send_latency = Histogram(
            "mlc_send_latency_seconds",
            "From the rule firing (outbox row born) to Twilio accepting the message",
            ["channel"],
            buckets=SEND_LATENCY_BUCKETS,
            registry=r,
        )
        self.loop_lag = Histogram(
            "mlc_event_loop_lag_seconds",
            "How much later than asked this process's event loop woke (sampled every 20 ms)",
            buckets=LOOP_LAG_BUCKETS,
            registry=r,
        )
        r.register(StoreCollector(services))

    def render(self) -> bytes:
        return generate_latest(self.registry)


# Services (and the clients it owns) -> their metrics. Weak keys: a closed test app leaves no trace.
_BY_OWNER: weakref.WeakKeyDictionary[Any, ConnectorMetrics] = weakref.WeakKeyDictionary()


def bind_metrics(services: Services) -> ConnectorMetrics:
    """The app's metrics (created once); the BC and Twilio clients count into them too."""
    metrics = _BY_OWNER.get(services)
    if metrics is None:
        metrics = ConnectorMetrics(services)
        _BY_OWNER[services] = metrics
    for client in (services.bc, services.twilio):
        # A client that is not weak-referenceable (a test double) is simply not counted.
        with contextlib.suppress(TypeError):
            _BY_OWNER[client] = metrics
    return metrics


def _for(owner: Any) -> ConnectorMetrics | None:
    try:
        found = _BY_OWNER.get(owner)
    except TypeError:
        return None
    if found is None and isinstance(owner, Services):
        found = bind_metrics(owner)
    return found


# -- the calls other modules make (each one line at the place the event happens) -------------------


def count_notifications(services: Services, entity: str, count: int = 1, *, outcome: str = "stored") -> None:
    metrics = _for(services)
    if metrics is not None and count:
        metrics.notifications.labels(entity=entity, outcome=outcome).inc(count)


def count_records_fetched(services: Services, entity: str, count: int = 1) -> None:
    metrics = _for(services)
    if metrics is not None and count:
        metrics.records_fetched.labels(entity=entity).inc(count)


def count_bc_request(client: Any, method: str, status: int | None) -> None:
    """`client` is the BCClient that made the request; status None when no response came back."""
    metrics = _for(client)
    if metrics is not None:
        metrics.bc_requests.labels(method=method, status=str(status) if status else "error").inc()


def observe_send(services: Services, channel: str, planned_at: datetime) -> None:
    """Twilio accepted a message planned at `planned_at` (the dispatcher calls this after the SID is stored)."""
    metrics = _for(services)
    if metrics is not None:
        seconds = (services.clock.now() - planned_at).total_seconds()
        metrics.send_latency.labels(channel=channel).observe(max(0.0, seconds))


def observe_loop_lag(services: Services, seconds: float) -> None:
    metrics = _for(services)
    if metrics is not None:
        metrics.loop_lag.observe(seconds)


@get("/metrics", guards=[make_bearer_guard_for_app()], sync_to_thread=True, include_in_schema=False)
def metrics_endpoint(services: NamedDependency[Services]) -> Response[bytes]:
    metrics = bind_metrics(services)
    # The classic text format, which every Prometheus version reads (Litestar adds the charset).
    return Response(metrics.render(), media_type=TEXT_FORMAT)


ROUTES = [metrics_endpoint]
