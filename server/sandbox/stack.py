"""The whole flow on one machine: BC simulator, Twilio simulator and the connector, over loopback.

Used by the end-to-end tests and the sandbox command. The connector is served by uvicorn inside the
caller's event loop on a real port; the simulators run in their own threads, so BC notifications
and Twilio callbacks travel over real HTTP to the connector, exactly as in production.

    async with Stack(database_url="sqlite:///...", clock=ManualClock(...)) as stack:
        await stack.run("sweep"); await stack.run("dispatcher")
        await stack.twilio_sim.asettle()
"""

from __future__ import annotations

import asyncio
import secrets
import socket
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType
from typing import Any, Self

import uvicorn
from litestar.types import ControllerRouterHandler

from server.runtime.clock import Clock, OffsetClock
from server.services import Services, open_services
from server.settings import BCSettings, Settings, TwilioSettings
from simulators.bc.simulator import BCSimulator
from simulators.twilio.simulator import TwilioSimulator


def _free_socket(host: str = "127.0.0.1", port: int = 0) -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)  # else ~40 ms per response (Nagle)
    sock.bind((host, port))
    return sock


class Stack:
    def __init__(
        self,
        *,
        database_url: str,
        clock: Clock | None = None,
        seed: str = "demo",
        rules_dir: Path | None = None,
        templates_dir: Path | None = None,
        start_workers: bool = False,
        settings_overrides: dict[str, Any] | None = None,
        route_handlers: Sequence[ControllerRouterHandler] | None = None,
        bc_options: dict[str, Any] | None = None,
        twilio_options: dict[str, Any] | None = None,
        port: int = 0,
    ) -> None:
        self.clock: Clock = clock or OffsetClock()
        self.database_url = database_url
        self.seed = seed
        self.rules_dir = rules_dir
        self.templates_dir = templates_dir
        self.start_workers = start_workers
        self.settings_overrides = settings_overrides or {}
        self.route_handlers = route_handlers
        self.bc_options = bc_options or {}
        self.twilio_options = twilio_options or {}
        self.port = port  # the connector's port; 0 picks a free one (the sandbox's --port sets it)
        self.api_token = secrets.token_urlsafe(24)
        self._server: uvicorn.Server | None = None
        self._serve_task: asyncio.Task[None] | None = None
        self.bc_sim: BCSimulator
        self.twilio_sim: TwilioSimulator
        self.services: Services
        self.settings: Settings
        self.url: str

    async def start(self) -> Self:
        from server.app import create_app
        from server.workers import build_workers

        self.bc_sim = BCSimulator(clock=self.clock, seed=self.seed, **self.bc_options).start()
        sock = _free_socket(port=self.port)
        port = sock.getsockname()[1]
        self.url = f"http://127.0.0.1:{port}"
        self.twilio_sim = TwilioSimulator(
            clock=self.clock, inbound_url=f"{self.url}/webhooks/twilio/inbound", **self.twilio_options
        ).start()
        self.settings = self.make_settings()
        self.services = await open_services(self.settings, clock=self.clock)
        build_workers(self.services)
        app = create_app(self.services, route_handlers=self.route_handlers, start_workers=self.start_workers)
        # log_config=None: leave process logging to configure_logging (uvicorn would replace the handlers).
        # proxy_headers=False as in `serve`: the client address is the socket peer unless the
        # rate-limit settings name a trusted proxy.
        config = uvicorn.Config(
            app, lifespan="on", log_config=None, log_level=None, access_log=False, proxy_headers=False
        )
        self._server = uvicorn.Server(config)
        self._serve_task = asyncio.create_task(self._server.serve(sockets=[sock]))
        for _ in range(1000):
            if self._server.started or self._serve_task.done():
                break
            await asyncio.sleep(0.01)
        if not self._server.started:
            await self.stop()
            raise RuntimeError("connector did not start")
        return self

    def make_settings(self) -> Settings:
        bc, tw = self.bc_sim, self.twilio_sim
        values: dict[str, Any] = {
            "mode": "test",
            "database_url": self.database_url,
            "public_base_url": self.url,
            "api_token": self.api_token,
            "bc": BCSettings(
                api_base_url=bc.origin,
                authority_host=bc.origin,
                tenant_id=bc.tenant_id,
                environment=bc.environment,
                client_id=bc.client_id,
                client_secret=bc.client_secret,
                companies=list(bc.companies),
                ca_cert=bc.ca_cert_path,
            ),
            "twilio": TwilioSettings(
                api_base_url=tw.base_url,
                verify_base_url=tw.verify_base_url,
                account_sid=tw.account_sid,
                api_key_sid=tw.api_key_sid,
                api_key_secret=tw.api_key_secret,
                auth_token=tw.auth_token,
                from_number=tw.from_number,
                verify_service_sid=tw.verify_service_sid,
            ),
        }
        if self.rules_dir is not None:
            values["rules_dir"] = self.rules_dir
        if self.templates_dir is not None:
            values["templates_dir"] = self.templates_dir
        values.update(self.settings_overrides)
        return Settings(**values)

    async def run(self, worker: str) -> int:
        """One pass of a worker (fetcher, dispatcher, subscriptions, poller, sweep)."""
        return await self.services.workers[worker].run_once()

    async def stop(self) -> None:
        if self._server is not None:
            self._server.should_exit = True
        if self._serve_task is not None:
            await asyncio.wait_for(self._serve_task, timeout=15)
            self._serve_task = None
        if hasattr(self, "services"):
            await self.services.aclose()
        if hasattr(self, "twilio_sim"):
            self.twilio_sim.stop()
        if hasattr(self, "bc_sim"):
            self.bc_sim.stop()

    async def __aenter__(self) -> Self:
        return await self.start()

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.stop()
