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

from server.runtime.clock import ManualClock
from server.sending.dispatcher import Dispatcher
from server.services import open_services
from server.settings import Settings

DEADLINE_SECONDS = 120.0


async def main() -> None:
    clock = ManualClock(datetime.fromisoformat(sys.argv[1]))
    services = await open_services(Settings(), clock=clock, migrate=False)
    dispatcher = Dispatcher(services)
    print("ready", flush=True)
    if sys.stdin.readline().strip() != "go":
        raise SystemExit("expected 'go'")
    started = time.monotonic()
    try:
        sent, passes = await dispatcher.drain(within=DEADLINE_SECONDS, idle=0.02)
    finally:
        await services.aclose()
    elapsed = round(time.monotonic() - started, 2)
    print(json.dumps({"sent": sent, "passes": passes, "seconds": elapsed}), flush=True)


if __name__ == "__main__":
    asyncio.run(main())
