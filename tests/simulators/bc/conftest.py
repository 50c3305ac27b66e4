"""Fixtures for the BC simulator tests (and, imported from here, the BC client tests in
tests/server/bc): a started simulator on the manual clock, a client pointed at it, and a plain-HTTP
webhook receiver on loopback whose answers each test chooses."""

from __future__ import annotations

import asyncio
import json
import socket
import threading
import time
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from datetime import UTC, datetime
from typing import Any
from urllib.parse import parse_qs

import pytest
import uvicorn

from server.bc.client import BCClient
from server.runtime.clock import ManualClock
from simulators.bc.simulator import BCSimulator
from tests.bc_client_config import client_config

START = datetime(2026, 3, 5, 9, 0, 0, tzinfo=UTC)


class Receiver:
    """Answers the validation handshake (or not) and records notification POSTs."""

    def __init__(self) -> None:
        self.handshake_mode = "echo"  # echo | wrong | status:<code>
        self.handshakes: list[tuple[str, str]] = []  # (method, token)
        self.batches: list[dict[str, Any]] = []
        self.statuses: deque[int] = deque()  # answers for the next notification POSTs
        self.default_status = 202
        self.url = ""

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        query = parse_qs(scope["query_string"].decode())
        if "validationToken" in query:
            token = query["validationToken"][0]
            self.handshakes.append((scope["method"], token))
            if self.handshake_mode.startswith("status:"):
                status, text = int(self.handshake_mode.split(":")[1]), token
            else:
                status, text = 200, (token if self.handshake_mode == "echo" else "not-the-token")
        else:
            self.batches.append(json.loads(body))
            status, text = (self.statuses.popleft() if self.statuses else self.default_status), ""
        await send(
            {"type": "http.response.start", "status": status, "headers": [(b"content-type", b"text/plain")]}
        )
        await send({"type": "http.response.body", "body": text.encode()})

    def items(self) -> list[dict[str, Any]]:
        return [item for batch in self.batches for item in batch["value"]]


@pytest.fixture
def clock_start() -> datetime:
    return START


@pytest.fixture
def sim(clock: ManualClock) -> Iterator[BCSimulator]:
    with BCSimulator(clock=clock, seed="demo") as simulator:
        yield simulator


@pytest.fixture
def company(sim: BCSimulator) -> str:
    return sim.companies[0]


@pytest.fixture
async def client(sim: BCSimulator) -> AsyncIterator[BCClient]:
    async with BCClient(client_config(sim)) as bc:
        yield bc


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    app = Receiver()
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    server = uvicorn.Server(
        uvicorn.Config(app, lifespan="off", log_config=None, log_level=None, access_log=False)
    )
    thread = threading.Thread(target=lambda: server.run(sockets=[sock]), daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        assert time.monotonic() < deadline, "receiver did not start"
        time.sleep(0.01)
    app.url = f"http://127.0.0.1:{port}/bc/notifications"
    yield app
    server.should_exit = True
    thread.join(10)


async def wait_for(condition: Callable[[], bool], limit: float = 5.0) -> None:
    """Poll until `condition()` holds; fail (never hang) after `limit` seconds."""
    deadline = time.monotonic() + limit
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.02)


@pytest.fixture
def wait() -> Callable[..., Awaitable[None]]:
    return wait_for
