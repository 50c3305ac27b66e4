"""/metrics and the request-scoped JSON logs, over real HTTP."""

from __future__ import annotations

import asyncio
import io
import json
import re
import time
from collections.abc import Iterator

import httpx
import pytest

from server.runtime.clock import ManualClock
from server.runtime.logs import configure_logging
from server.runtime.looplag import LoopLagMonitor
from server.sandbox.stack import Stack
from server.store.db import session_scope
from server.store.outbox import insert_planned
from tests.prometheus import sample
from tests.server.web.audit.conftest import COMPANY, DESK, planned


@pytest.fixture
def log_stream() -> Iterator[io.StringIO]:
    stream = io.StringIO()
    configure_logging("INFO", stream=stream)
    yield stream
    configure_logging("INFO")


async def test_metrics_need_the_bearer_token(stack: Stack, http: httpx.AsyncClient) -> None:
    assert (await http.get("/metrics")).status_code == 401
    response = await http.get("/metrics", headers={"Authorization": f"Bearer {stack.api_token}"})
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain; version=0.0.4")


async def test_metrics_from_the_store_and_the_workers(
    stack: Stack, http: httpx.AsyncClient, clock: ManualClock
) -> None:
    headers = {"Authorization": f"Bearer {stack.api_token}"}
    await stack.run("subscriptions")  # BC requests, subscriptions with an expiry
    with session_scope(stack.services.db) as session:
        insert_planned(
            session,
            [planned("mlc-new", "credit-limit-crossed", "C10080", DESK, entity="customers")],
            company_id=COMPANY,
            now=clock.now(),
        )
    text = (await http.get("/metrics", headers=headers)).text
    assert sample(text, "mlc_messages", status="planned") == 1.0
    assert sample(text, "mlc_messages", status="failed") == 1.0
    assert sample(text, "mlc_messages", status="opted_out") == 0.0
    assert sample(text, "mlc_queue_depth", queue="outbox_due") == 1.0
    assert sample(text, "mlc_rules_fired_total", rule="invoice-overdue") == 3.0
    assert sample(text, "mlc_rules_fired_total", rule="credit-limit-crossed") == 2.0
    assert sample(text, "mlc_store_up") == 1.0

    subscriptions = stack.bc_sim.subscriptions()
    assert subscriptions
    for sub in subscriptions:
        company = sub["resource"].split("companies(")[1].split(")")[0]
        entity = sub["resource"].rsplit("/", 1)[-1]
        left = sample(
            text, "mlc_subscription_expiry_seconds", company=company, entity=entity, status="active"
        )
        assert left is not None and 2 * 86400 < left <= 3 * 86400, (company, entity, left)
    created = [r for r in stack.bc_sim.requests(method="POST") if "subscriptions" in r["path"]]
    assert sample(text, "mlc_bc_requests_total", method="POST", status="201") == float(len(created))

    await stack.run("dispatcher")
    text = (await http.get("/metrics", headers=headers)).text
    assert sample(text, "mlc_send_latency_seconds_count", channel="sms") == 1.0
    assert sample(text, "mlc_queue_depth", queue="outbox_due") == 0.0


async def test_the_served_app_measures_its_event_loop_lag(stack: Stack, http: httpx.AsyncClient) -> None:
    headers = {"Authorization": f"Bearer {stack.api_token}"}
    first = sample((await http.get("/metrics", headers=headers)).text, "mlc_event_loop_lag_seconds_count")
    await asyncio.sleep(0.2)  # ten intervals of the monitor
    later = sample((await http.get("/metrics", headers=headers)).text, "mlc_event_loop_lag_seconds_count")
    assert first is not None and later is not None and later > first


async def test_a_stalled_event_loop_is_measured_and_logged(log_stream: io.StringIO) -> None:
    seen: list[float] = []
    monitor = LoopLagMonitor(seen.append, interval=0.01, warn_after=0.2)
    monitor.start()
    await asyncio.sleep(0.05)  # a few healthy wake-ups first
    healthy = len(seen)
    time.sleep(0.3)  # noqa: ASYNC251 - the stall under test: blocks the loop the monitor runs on
    await asyncio.sleep(0.05)
    await monitor.stop()
    assert healthy >= 1
    assert max(seen) >= 0.25
    stalls = [json.loads(line) for line in log_stream.getvalue().splitlines() if "event loop stalled" in line]
    assert len(stalls) == 1 and stalls[0]["seconds"] >= 0.25
    count = len(seen)
    await asyncio.sleep(0.05)
    assert len(seen) == count  # stopped: no more measurements


async def test_each_request_has_an_id_in_its_logs(
    stack: Stack, http: httpx.AsyncClient, log_stream: io.StringIO
) -> None:
    headers = {"Authorization": f"Bearer {stack.api_token}", "X-Request-ID": "req-from-proxy-42"}
    response = await http.get("/audit/mlc-failed", headers=headers)
    assert response.status_code == 200
    assert response.headers["x-request-id"] == "req-from-proxy-42"
    bad = await http.get("/health", headers={"X-Request-ID": "no spaces allowed"})
    generated = bad.headers["x-request-id"]
    assert re.fullmatch(r"[0-9a-f]{32}", generated)

    lines = [json.loads(line) for line in log_stream.getvalue().splitlines() if line.startswith("{")]
    viewed = [e for e in lines if e["event"] == "audit message viewed"]
    assert viewed and viewed[0]["request_id"] == "req-from-proxy-42"
    assert viewed[0]["job_id"] == "mlc-failed" and viewed[0]["rule_id"] == "invoice-overdue"
    access = [e for e in lines if e["event"] == "request" and e["request_id"] == "req-from-proxy-42"]
    assert len(access) == 1
    assert access[0]["path"] == "/audit/mlc-failed" and access[0]["status"] == 200
    assert access[0]["method"] == "GET" and access[0]["duration_ms"] >= 0
    assert stack.api_token not in log_stream.getvalue()
