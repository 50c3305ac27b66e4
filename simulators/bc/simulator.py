"""Business Central + Entra ID simulator: a real HTTPS server on loopback.

In-process (tests, sandbox)::

    with BCSimulator(clock=ManualClock(...), seed="demo") as sim:
        env = sim.connector_env()             # the MLC_BC__* variables a connector reads
        sim.update_record(sim.companies[0], "customers", cid, {"balanceDue": 12000})
        clock.advance(timedelta(seconds=30))  # or sim.flush_notifications()

Standalone: `ml-connector simulate bc [--host H] [--port N] [--seed demo]` prints one JSON line
(base_url, authority, tenant_id, client_id, client_secret, environment, companies, ca_cert,
control_url) and serves until SIGINT/SIGTERM. The same control surface is at `{origin}/_sim/...`.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import secrets
import signal
import sys
import threading
import uuid
from dataclasses import asdict
from datetime import timedelta
from pathlib import Path
from types import FrameType, TracebackType
from typing import Any, Self

from simulators.bc.app import BCApp
from simulators.bc.seeds import apply_seed
from simulators.bc.state import BCState, Fault
from simulators.clock import Clock, OffsetClock
from simulators.loopback import LoopbackServer

DEFAULT_TENANT_ID = "7c1f2b3a-4d5e-4f60-8a9b-0c1d2e3f4a5b"
DEFAULT_CLIENT_ID = "2f9e6a4c-1b3d-4e5f-8a7b-9c0d1e2f3a4b"


class BCSimulator:
    def __init__(
        self,
        *,
        clock: Clock | None = None,
        seed: str = "demo",
        host: str = "127.0.0.1",
        port: int = 0,
        tenant_id: str = DEFAULT_TENANT_ID,
        environment: str = "production",
        client_id: str = DEFAULT_CLIENT_ID,
        client_secret: str | None = None,
        notification_window: timedelta = timedelta(seconds=30),
        collection_threshold: int = 1000,
        token_lifetime: timedelta = timedelta(seconds=3599),
    ) -> None:
        self.clock: Clock = clock or OffsetClock()
        self.host = host
        self.port = port
        self.state = BCState(
            self.clock,
            tenant_id=tenant_id,
            environment=environment,
            client_id=client_id,
            client_secret=client_secret or secrets.token_urlsafe(24),
            notification_window=notification_window,
            collection_threshold=collection_threshold,
            token_lifetime=token_lifetime,
        )
        self.companies: list[str] = apply_seed(self.state, seed)
        self.app = BCApp(self.state, seed=self.seed, info=self.info)
        self._server: LoopbackServer | None = None

    # -- lifecycle ---------------------------------------------------------------------------------

    def start(self, timeout: float = 15.0) -> Self:
        if self._server is not None:
            raise RuntimeError("simulator already started")
        self._server = LoopbackServer(self.app, name="BC simulator", host=self.host, port=self.port, tls=True)
        self.app.origin = self._server.bind()
        self.port = self._server.port
        try:
            self._server.serve(timeout)
        except RuntimeError:
            self._server = None
            raise
        return self

    def stop(self, timeout: float = 10.0) -> None:
        if self._server is not None:
            self._server.stop(timeout)
            self._server = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    # -- connection facts --------------------------------------------------------------------------

    @property
    def origin(self) -> str:
        return self.app.origin

    @property
    def base_url(self) -> str:
        """`https://127.0.0.1:PORT/v2.0/{tenant}/{environment}`."""
        return self.app.base_url

    @property
    def authority(self) -> str:
        return f"{self.origin}/{self.state.tenant_id}"

    @property
    def ca_cert_path(self) -> Path:
        if self._server is None:
            raise RuntimeError("simulator not started")
        return self._server.ca_cert_path

    @property
    def tenant_id(self) -> str:
        return self.state.tenant_id

    @property
    def environment(self) -> str:
        return self.state.environment

    @property
    def client_id(self) -> str:
        return self.state.client_id

    @property
    def client_secret(self) -> str:
        return self.state.client_secret

    def info(self) -> dict[str, Any]:
        return {
            "base_url": self.base_url,
            "authority": self.authority,
            "tenant_id": self.tenant_id,
            "client_id": self.client_id,
            "client_secret": self.client_secret,
            "environment": self.environment,
            "companies": list(self.companies),
            "ca_cert": str(self.ca_cert_path),
            "api_host": self.origin,
            "control_url": f"{self.origin}/_sim",
        }

    def connector_env(self, companies: list[str] | None = None) -> dict[str, str]:
        """The MLC_BC__* variables that point a connector process at this simulator (all its
        companies unless told which)."""
        return {
            "MLC_BC__API_BASE_URL": self.origin,
            "MLC_BC__AUTHORITY_HOST": self.origin,
            "MLC_BC__TENANT_ID": self.tenant_id,
            "MLC_BC__ENVIRONMENT": self.environment,
            "MLC_BC__CLIENT_ID": self.client_id,
            "MLC_BC__CLIENT_SECRET": self.client_secret,
            "MLC_BC__COMPANIES": json.dumps(list(self.companies if companies is None else companies)),
            "MLC_BC__CA_CERT": str(self.ca_cert_path),
        }

    # -- control: data -----------------------------------------------------------------------------

    def seed(self, name: str) -> list[str]:
        """Replace all data (and subscriptions) with a named data set."""
        self.companies = apply_seed(self.state, name)
        return self.companies

    def add_company(self, name: str, company_id: str | None = None) -> str:
        cid = self.state.add_company(name, company_id=company_id or str(uuid.uuid4()))
        self.companies.append(cid)
        return cid

    def create_record(self, company_id: str, entity: str, fields: dict[str, Any]) -> dict[str, Any]:
        return self.state.create_record(company_id, entity, fields)

    def update_record(
        self, company_id: str, entity: str, record_id: str, changes: dict[str, Any]
    ) -> dict[str, Any]:
        return self.state.update_record(company_id, entity, record_id, changes)

    def delete_record(self, company_id: str, entity: str, record_id: str) -> None:
        self.state.delete_record(company_id, entity, record_id)

    def get_record(self, company_id: str, entity: str, record_id: str) -> dict[str, Any] | None:
        return self.state.get_record(company_id, entity, record_id)

    def records(self, company_id: str, entity: str) -> list[dict[str, Any]]:
        return self.state.list_records(company_id, entity)

    # -- control: time, faults, observation --------------------------------------------------------

    def advance_clock(self, delta: timedelta) -> None:
        advance = getattr(self.clock, "advance", None)
        if advance is None:
            raise TypeError(f"{type(self.clock).__name__} cannot be advanced")
        advance(delta)

    def inject_fault(self, **fields: Any) -> Fault:
        """E.g. inject_fault(status=429, retry_after=2, remaining=1, path_contains="customers")
        or inject_fault(kind="delay", delay_seconds=0.2, remaining=None)."""
        fault = Fault(**fields)
        self.state.add_fault(fault)
        return fault

    def clear_faults(self) -> None:
        self.state.clear_faults()

    def drop_notifications(self, count: int = 1) -> None:
        with self.state.lock:
            self.state.drop_notifications += count

    def expire_tokens(self) -> int:
        return self.state.expire_tokens()

    def set_collection_threshold(self, threshold: int) -> None:
        with self.state.lock:
            self.state.collection_threshold = threshold

    def requests(
        self, *, path_contains: str | None = None, method: str | None = None
    ) -> list[dict[str, Any]]:
        with self.state.lock:
            log = list(self.state.request_log)
        return [
            r
            for r in log
            if (path_contains is None or path_contains in r["path"])
            and (method is None or r["method"] == method)
        ]

    def clear_requests(self) -> None:
        with self.state.lock:
            self.state.request_log.clear()
            self.state.max_in_flight = self.state.in_flight

    @property
    def token_requests(self) -> int:
        return self.state.token_requests

    @property
    def max_in_flight(self) -> int:
        return self.state.max_in_flight

    def subscriptions(self) -> list[dict[str, Any]]:
        return self.state.list_subscriptions()

    def deliveries(self) -> list[dict[str, Any]]:
        with self.state.lock:
            return list(self.state.delivery_log)

    def faults(self) -> list[dict[str, Any]]:
        with self.state.lock:
            return [asdict(f) for f in self.state.faults]

    def flush_notifications(self, timeout: float = 15.0) -> list[str]:
        """Deliver every pending notification (and queued retry) now; from synchronous code only."""
        loop, notifier = self.app.loop, self.app.notifier
        if loop is None or notifier is None:
            raise RuntimeError("simulator not started")
        future = asyncio.run_coroutine_threadsafe(notifier.send_due(force=True), loop)
        return future.result(timeout)

    async def aflush_notifications(self) -> list[str]:
        """Same, awaitable from another event loop (a test's) without blocking it."""
        loop, notifier = self.app.loop, self.app.notifier
        if loop is None or notifier is None:
            raise RuntimeError("simulator not started")
        return await asyncio.wrap_future(
            asyncio.run_coroutine_threadsafe(notifier.send_due(force=True), loop)
        )


def cli_main(args: argparse.Namespace) -> int:
    """`ml-connector simulate bc`: serve until SIGINT/SIGTERM, after printing one JSON line."""
    try:
        simulator = BCSimulator(seed=args.seed, host=args.host, port=args.port)
    except ValueError as exc:
        print(f"simulate bc: {exc}", file=sys.stderr)
        return 2
    stop = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()

    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        simulator.start()
        print(json.dumps(simulator.info()), flush=True)
        while not stop.wait(0.5):
            pass
    finally:
        simulator.stop()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    return 0
