"""What the service's handlers and workers share: settings, clock, database, rules, clients.

`open_services` is the one place these are built, so the CLI, the tests and the sandbox wire the
service the same way. It refuses to start on an invalid rule set (RuleSetError carries the same
diagnostics `rules lint` prints) and applies database migrations before anything else runs.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import uuid
from collections.abc import Callable
from typing import TYPE_CHECKING

from sqlalchemy import Engine

from server.metrics import ConnectorMetrics
from server.runtime.clock import Clock, SystemClock
from server.runtime.logs import register_secrets
from server.settings import Settings

if TYPE_CHECKING:
    from engine.ruleset import RuleSet
    from server.bc.client import BCClient
    from server.runtime.loop import WorkerLoop
    from server.twilio.client import TwilioClient


def new_instance_id() -> str:
    """Names this process in claims and leases: host, pid and a random suffix (pids are reused)."""
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


class Services:
    """A plain class on purpose: Litestar's signature model would try to convert a dataclass."""

    def __init__(
        self,
        *,
        settings: Settings,
        clock: Clock,
        db: Engine,
        ruleset: RuleSet,
        bc: BCClient,
        twilio: TwilioClient,
        instance_id: str | None = None,
    ) -> None:
        self.settings = settings
        self.clock = clock
        self.db = db
        self.ruleset = ruleset
        self.bc = bc
        self.twilio = twilio
        self.instance_id = instance_id or new_instance_id()
        self.workers: dict[str, WorkerLoop] = {}
        self.workers_started = False
        self._closers: list[Callable[[], None]] = []
        self._metrics: ConnectorMetrics | None = None

    @property
    def metrics(self) -> ConnectorMetrics:
        """This service's metrics, made on first use; from then on the BC client counts into them
        through its `on_response` hook (the client never imports the metrics)."""
        if self._metrics is None:
            self._metrics = ConnectorMetrics(self)
            # A test double without the hook attribute is simply not counted.
            with contextlib.suppress(AttributeError):
                self.bc.on_response = self._metrics.count_bc_request
        return self._metrics

    def on_close(self, close: Callable[[], None]) -> None:
        """Run `close` (blocking allowed: it runs in a thread) when the services close, before the
        clients and the database: e.g. a dispatcher's writer thread."""
        self._closers.append(close)

    def wake(self, worker: str) -> None:
        """Ask a running worker loop to run now (e.g. the fetcher after new inbox items)."""
        loop = self.workers.get(worker)
        if loop is not None:
            loop.wake()

    async def aclose(self) -> None:
        closers, self._closers = self._closers, []
        for close in reversed(closers):
            await asyncio.to_thread(close)
        await self.bc.aclose()
        await self.twilio.aclose()
        self.db.dispose()


def secret_values(settings: Settings) -> list[str]:
    return [
        settings.api_token.get_secret_value(),
        settings.bc.client_secret.get_secret_value(),
        settings.twilio.api_key_secret.get_secret_value(),
        settings.twilio.auth_token.get_secret_value(),
    ]


async def open_services(
    settings: Settings,
    *,
    clock: Clock | None = None,
    ruleset: RuleSet | None = None,
    bc: BCClient | None = None,
    twilio: TwilioClient | None = None,
    migrate: bool = True,
) -> Services:
    from engine.loader import load_ruleset
    from server.bc.client import BCClient
    from server.bc.settings import BCConfig
    from server.credentials import apply_stored_credentials
    from server.store.db import create_db_engine
    from server.store.migrate import upgrade_database
    from server.twilio.client import TwilioClient, TwilioClientConfig

    register_secrets(secret_values(settings))
    if ruleset is None:
        ruleset = load_ruleset(
            settings.rules_dir, settings.templates_dir, default_region=settings.default_region
        )
    db = create_db_engine(settings.database_url)
    if migrate:
        upgrade_database(db)
    # Credentials stored encrypted in the database win over the environment's (the fallback).
    settings = apply_stored_credentials(settings, db)
    register_secrets(secret_values(settings))
    return Services(
        settings=settings,
        clock=clock or SystemClock(),
        db=db,
        ruleset=ruleset,
        bc=bc or BCClient(BCConfig.from_settings(settings.bc)),
        twilio=twilio or TwilioClient(TwilioClientConfig.from_settings(settings.twilio)),
    )
