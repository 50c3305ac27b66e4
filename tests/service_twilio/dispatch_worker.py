"""A dispatcher process for test_two_processes.py: the real Dispatcher, its own Services.

Configuration comes from MLC_* variables (like `ml-connector serve`); argv[1] is the frozen time
(ISO 8601) both processes and the test share. Prints "ready", waits for "go" on stdin, then runs
dispatcher.run_once until no job is left to send; prints one JSON object with what it sent.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from datetime import datetime

import sqlalchemy as sa

from server.clock import ManualClock
from server.dispatcher import Dispatcher
from server.services import open_services
from server.settings import Settings
from server.store.db import read_scope
from server.store.states import MessageStatus
from server.store.tables import OutboxMessage

PENDING = [MessageStatus.PLANNED.value, MessageStatus.HELD.value, MessageStatus.SUBMITTING.value]
DEADLINE_SECONDS = 120.0


async def main() -> None:
    clock = ManualClock(datetime.fromisoformat(sys.argv[1]))
    services = await open_services(Settings(), clock=clock, migrate=False)
    dispatcher = Dispatcher(services)
    print("ready", flush=True)
    if sys.stdin.readline().strip() != "go":
        raise SystemExit("expected 'go'")
    sent, passes = 0, 0
    started = time.monotonic()
    deadline = started + DEADLINE_SECONDS
    try:
        while time.monotonic() < deadline:
            passes += 1
            if await dispatcher.run_once() > 0:
                sent += dispatcher.last_pass.sent
                continue
            with read_scope(services.db) as session:
                left = session.execute(
                    sa.select(sa.func.count())
                    .where(sa.column("status").in_(PENDING))
                    .select_from(OutboxMessage)
                ).scalar_one()
            if left == 0:
                break
            await asyncio.sleep(0.02)  # the other process holds the rest of the claims
        else:
            raise SystemExit("deadline passed with jobs still pending")
    finally:
        await services.aclose()
    elapsed = round(time.monotonic() - started, 2)
    print(json.dumps({"sent": sent, "passes": passes, "seconds": elapsed}), flush=True)


if __name__ == "__main__":
    asyncio.run(main())
