"""An unhandled error in a handler is answered 500 and logged with its cause (never silently)."""

from __future__ import annotations

import io
import json
from pathlib import Path

import httpx
from litestar import get

from server.runtime.clock import ManualClock
from server.runtime.logs import configure_logging
from server.sandbox.stack import Stack


@get("/boom")
async def boom() -> str:
    raise RuntimeError("the disk is on fire")


@get("/missing")
async def missing() -> str:
    from litestar.exceptions import NotFoundException

    raise NotFoundException(detail="nothing here")


async def test_unhandled_errors_are_logged_client_errors_are_not(tmp_path: Path, clock: ManualClock) -> None:
    stream = io.StringIO()
    configure_logging("INFO", stream=stream)
    url = f"sqlite:///{tmp_path / 'c.sqlite3'}"
    async with (
        Stack(database_url=url, clock=clock, route_handlers=[boom, missing]) as stack,
        httpx.AsyncClient(base_url=stack.url) as http,
    ):
        assert (await http.get("/boom")).status_code == 500
        assert (await http.get("/missing")).status_code == 404
    lines = [json.loads(line) for line in stream.getvalue().splitlines() if line.startswith("{")]
    failures = [line for line in lines if line.get("event") == "request failed"]
    assert [(f["path"], f["error"]) for f in failures] == [("/boom", "RuntimeError: the disk is on fire")]
    assert "Traceback" in failures[0]["exception"]
