"""Fixtures for the Twilio simulator tests (and, imported from here, the Twilio client tests in
tests/server/twilio): the simulator on the manual clock, Twilio's OpenAPI contract, and a webhook
receiver, all over real loopback HTTP."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from server.runtime.clock import ManualClock
from simulators.twilio.simulator import TwilioSimulator
from tests.openapi_contract import TwilioContract

START = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)


@pytest.fixture(scope="session")
def contract(shared_reference: Path) -> TwilioContract:
    return TwilioContract(shared_reference / "data" / "twilio" / "openapi")


@pytest.fixture
def clock_start() -> datetime:
    return START


@pytest.fixture
def sim(clock: ManualClock) -> Iterator[TwilioSimulator]:
    with TwilioSimulator(clock=clock, callback_timeout=2.0) as simulator:
        yield simulator


@dataclass
class ReceivedWebhook:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes


@dataclass
class WebhookReceiver:
    """A plain threaded HTTP server standing in for our application's webhook endpoint."""

    base_url: str = ""
    received: list[ReceivedWebhook] = field(default_factory=list)
    status: int = 200
    lock: threading.Lock = field(default_factory=threading.Lock)

    def url(self, path: str) -> str:
        return self.base_url + path

    def snapshot(self) -> list[ReceivedWebhook]:
        with self.lock:
            return list(self.received)


@pytest.fixture
def receiver() -> Iterator[WebhookReceiver]:
    state = WebhookReceiver()

    class Handler(BaseHTTPRequestHandler):
        def _handle(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length)
            with state.lock:
                state.received.append(
                    ReceivedWebhook(self.command, self.path, {k: v for k, v in self.headers.items()}, body)
                )
            self.send_response(state.status)
            self.send_header("Content-Type", "text/xml")
            payload = b"<Response/>"
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        do_POST = _handle
        do_GET = _handle

        def log_message(self, format: str, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    state.base_url = f"http://127.0.0.1:{server.server_address[1]}"
    try:
        yield state
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)
