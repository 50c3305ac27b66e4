"""Prometheus metrics, one registry per service (served at /metrics by server/web/metrics.py).

This module sits below server.services: it knows the service only by the attributes it reads
(the Protocols below), and the BC client knows nothing of it (services hands it `on_response`).

Counted in-process where the event happens (each through one small function below, called from
the module that does the work):
    mlc_bc_notifications_received_total{entity,outcome}   bc_webhook: stored / duplicate / rejected;
                                                          malformed / too_large (entity "unknown": answered 202, nothing stored)
    mlc_bc_records_fetched_total{entity}                 fetcher
    mlc_bc_requests_total{method,status}                 bc.client's on_response hook ("error" = no response)
    mlc_send_latency_seconds{channel}                    dispatcher: rule fired -> Twilio accepted
    mlc_event_loop_lag_seconds                           looplag: how late the event loop woke
    mlc_rate_limited_total{surface,reason}               ratelimit: 429s (ip, token, lockout) and
                                                         lockouts started (lockout-started)
Read from the database at scrape time (so they agree across instances sharing one database):
    mlc_rules_fired_total{rule}          outbox rows each rule planned (sent, skipped or otherwise)
    mlc_messages{status}                 outbox messages in each status
    mlc_queue_depth{queue}               outbox due now / held / in doubt, inbox pending
    mlc_subscription_expiry_seconds{company,entity,status}   time left before BC drops it
    mlc_worker_up{worker}, mlc_worker_errors_total{worker}   this process's worker loops

A scrape that cannot reach the database still answers, with mlc_store_up 0.
"""

from __future__ import annotations

import weakref
from collections.abc import Iterator, Mapping
from datetime import datetime
from typing import Protocol

import sqlalchemy as sa
from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from server.runtime.clock import Clock
from server.runtime.logs import get_logger
from server.runtime.loop import WorkerLoop
from server.store import inbox, outbox
from server.store.db import read_scope
from server.store.messages import count_by_status
from server.store.states import IN_DOUBT, MessageStatus
from server.store.subscriptions import list_subscriptions

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


class MetricsSource(Protocol):
    """What the store collector reads (server.services.Services has it; metrics sit below services)."""

    @property
    def clock(self) -> Clock: ...
    @property
    def db(self) -> sa.Engine: ...
    @property
    def workers(self) -> Mapping[str, WorkerLoop]: ...


class StoreCollector(Collector):
    """Gauges computed from the database on each scrape."""

    def __init__(self, services: MetricsSource) -> None:
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

    def _from_database(self, services: MetricsSource) -> Iterator[Metric]:
        now = services.clock.now()
        with read_scope(services.db) as session:
            by_status = count_by_status(session)
            due = outbox.count_due(session, now=now)
            pending = inbox.count_unfinished(session)
            per_rule = outbox.count_by_rule(session)
            # Plain tuples while the session is open (rows expire when it ends).
            subscriptions = [
                (sub.company_id, sub.entity, sub.status, sub.expires_at)
                for sub in list_subscriptions(session, statuses=["active", "renewing", "dropped"])
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
        queue.add_metric(["inbox_pending"], int(pending))
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

    def _workers(self, services: MetricsSource) -> Iterator[Metric]:
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
    """One registry per service (server.services builds it and hands the BC client its hook)."""

    def __init__(self, services: MetricsSource) -> None:
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
        self.rate_limited = Counter(
            "mlc_rate_limited",
            "Requests answered 429 by the rate limits (reason ip, token, lockout), and lockouts started "
            "(reason lockout-started), in this process",
            ["surface", "reason"],
            registry=r,
        )
        r.register(StoreCollector(services))

    def render(self) -> bytes:
        return generate_latest(self.registry)

    def count_bc_request(self, method: str, status: int | None) -> None:
        """The BC client's `on_response` hook; status None when no response came back."""
        self.bc_requests.labels(method=method, status=str(status) if status else "error").inc()


class Observed(Protocol):
    """Whatever carries the metrics: server.services.Services."""

    @property
    def metrics(self) -> ConnectorMetrics: ...
    @property
    def clock(self) -> Clock: ...


# -- the calls other modules make (each one line at the place the event happens) -------------------


def count_notifications(services: Observed, entity: str, count: int = 1, *, outcome: str = "stored") -> None:
    if count:
        services.metrics.notifications.labels(entity=entity, outcome=outcome).inc(count)


def count_records_fetched(services: Observed, entity: str, count: int = 1) -> None:
    if count:
        services.metrics.records_fetched.labels(entity=entity).inc(count)


def observe_send(services: Observed, channel: str, planned_at: datetime) -> None:
    """Twilio accepted a message planned at `planned_at` (the dispatcher calls this after the SID is stored)."""
    seconds = (services.clock.now() - planned_at).total_seconds()
    services.metrics.send_latency.labels(channel=channel).observe(max(0.0, seconds))


def observe_loop_lag(services: Observed, seconds: float) -> None:
    services.metrics.loop_lag.observe(seconds)


def count_rate_limited(services: Observed, surface: str, reason: str) -> None:
    services.metrics.rate_limited.labels(surface=surface, reason=reason).inc()
