"""The Twilio simulator: its ASGI app (simulators/twilio/app.py) served on loopback.

In-process::

    with TwilioSimulator(clock=ManualClock()) as sim:
        client = TwilioClient(TwilioClientConfig(account_sid=sim.account_sid, api_key_sid=sim.api_key_sid,
                 api_key_secret=sim.api_key_secret, api_base_url=sim.base_url, verify_base_url=sim.verify_base_url))
        ...
        sim.settle()                      # run every lifecycle to its end and deliver the callbacks now

Standalone: `ml-connector simulate twilio [--host H] [--port N]` prints one JSON line (base_url,
verify_base_url, credentials, from_number, verify_service_sid) and serves until SIGINT/SIGTERM. The
same control surface is served over HTTP under `/_sim/...` (JSON, no auth: loopback only) so a
sandbox process can drive it.

Threads: uvicorn and a lifecycle worker run in one background thread with their own event loop.
Blocking control calls (settle, send_inbound) wait on that loop; from async code whose own loop
serves the webhook receiver use asettle / asend_inbound instead, or the receiver never answers.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
import threading
from collections.abc import Coroutine
from types import FrameType
from typing import Any

from simulators.clock import Clock
from simulators.loopback import LoopbackServer
from simulators.twilio.app import TwilioApp
from simulators.twilio.state import Credentials, Timings


class TwilioSimulator(TwilioApp):
    """The simulator handle: start()/stop() (or `with`), URLs, credentials and the control surface.

    It is the app (TwilioApp) plus the loopback server that serves it and the blocking calls that
    wait on the server's loop."""

    def __init__(
        self,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        clock: Clock | None = None,
        credentials: Credentials | None = None,
        timings: Timings | None = None,
        extra_numbers: tuple[str, ...] = (),
        tick_interval: float = 0.05,
        auto_advance: bool = True,
        inbound_url: str | None = None,
        callback_timeout: float = 5.0,
    ) -> None:
        super().__init__(
            clock=clock,
            credentials=credentials,
            timings=timings,
            extra_numbers=extra_numbers,
            tick_interval=tick_interval,
            auto_advance=auto_advance,
            inbound_url=inbound_url,
            callback_timeout=callback_timeout,
        )
        self.host = host
        self.port = port
        self._server: LoopbackServer | None = None

    # ------------------------------------------------------------------ lifecycle

    def start(self, timeout: float = 10.0) -> TwilioSimulator:
        self._server = LoopbackServer(self, name="Twilio simulator", host=self.host, port=self.port)
        self.base_url = self._server.bind()
        self.state.api_base_url = self.base_url
        self.state.verify_base_url = self.verify_base_url
        self._server.serve(timeout)
        return self

    def stop(self, timeout: float = 10.0) -> None:
        if self._server is not None:
            self._server.stop(timeout)
            self._server = None

    def __enter__(self) -> TwilioSimulator:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _call_in_loop(self, coro: Coroutine[Any, Any, Any], timeout: float) -> Any:
        if self._loop is None:
            coro.close()
            raise RuntimeError("simulator not started")
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(timeout)

    async def _await_in_loop(self, coro: Coroutine[Any, Any, Any]) -> Any:
        """Await work on the simulator's loop from another loop (wrap in asyncio.timeout to bound it)."""
        if self._loop is None:
            coro.close()
            raise RuntimeError("simulator not started")
        return await asyncio.wrap_future(asyncio.run_coroutine_threadsafe(coro, self._loop))

    # ------------------------------------------------------------------ control surface (blocking)

    def settle(self, timeout: float = 10.0) -> dict[str, int]:
        """Run every message/call lifecycle to its end now and deliver all pending callbacks."""
        result: dict[str, int] = self._call_in_loop(self._settle(), timeout)
        return result

    async def asettle(self) -> dict[str, int]:
        result: dict[str, int] = await self._await_in_loop(self._settle())
        return result

    def send_inbound(
        self, from_: str, body: str, *, to: str | None = None, timeout: float = 10.0
    ) -> int | None:
        """A handset texts us (STOP/START/HELP apply opt-outs). Returns the webhook's HTTP status."""
        status: int | None = self._call_in_loop(self._inbound(from_, body, to), timeout)
        return status

    async def asend_inbound(self, from_: str, body: str, *, to: str | None = None) -> int | None:
        status: int | None = await self._await_in_loop(self._inbound(from_, body, to))
        return status


def cli_main(args: argparse.Namespace) -> int:
    """`ml-connector simulate twilio`: serve until SIGINT/SIGTERM; one JSON line on stdout when ready."""
    simulator = TwilioSimulator(host=args.host, port=args.port)
    stop = threading.Event()

    def request_stop(signum: int, frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGINT, request_stop)
    signal.signal(signal.SIGTERM, request_stop)
    simulator.start()
    print(json.dumps(simulator.info()), flush=True)
    try:
        while not stop.wait(0.5):
            pass
    finally:
        simulator.stop()
    return 0
