"""Benchmark 4: webhook ingest -- POST /webhooks/bc with 100-item batches, beside a bare endpoint.

Each server is its own process with one uvicorn worker (`python -m bench.ingest serve KIND URL`):
- real: the connector's app (create_app, workers not started) with one active subscription; each
  POST is parsed, every item's clientState checked against the stored subscription in constant
  time, and the items stored in the inbox with ON CONFLICT dedupe, in one transaction;
- bare: a Litestar app with one route that parses the same body and inserts the same items into a
  plain table in one transaction, through the same engine settings (server.store.db).
The load comes from another process (`python -m bench.ingest load ...`): keep-alive HTTP/1.1 over
raw asyncio sockets, each request a new batch (distinct lastModifiedDateTime, so nothing is a
duplicate), a warm-up, then a fixed time; requests/s and latency percentiles.
"""

from __future__ import annotations

import asyncio
import json
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from litestar import Litestar, Request, Response, post
from litestar.enums import MediaType

from bench.pg import fresh_database, server_version
from bench.report import ROOT, Section, percentile

ITEMS = 100
COMPANY = "ab7f0fa9-908e-5642-88b9-418a2ed6962c"
SUBSCRIPTION = "9f0f7b4e-2b1c-4f5e-9d3a-6c2b1a0e9d8f"
CLIENT_STATE = "bench-client-state-0123456789abcdef"
BARE_PATH = "/bare/webhooks/bc"
REAL_PATH = "/webhooks/bc"
REQUEST_TIMEOUT = 30.0


@dataclass(frozen=True)
class Params:
    seconds: float
    warmup: float
    connections: int


SIZES = {
    "full": Params(seconds=4.0, warmup=1.0, connections=8),
    "issue": Params(seconds=5.0, warmup=1.0, connections=8),
    "quick": Params(seconds=2.0, warmup=0.5, connections=8),
    "tiny": Params(seconds=0.3, warmup=0.1, connections=2),
}


# ------------------------------------------------------------------------------------------ servers


def _listen() -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    sock.bind(("127.0.0.1", 0))
    return sock


async def _real_app(database_url: str) -> Any:
    from server.app import create_app
    from server.runtime.clock import SystemClock
    from server.services import open_services
    from server.settings import BCSettings, Settings, TwilioSettings
    from server.store.db import session_scope
    from server.store.subscriptions import hash_client_state
    from server.store.tables import BcSubscription

    # Neither client is called while ingesting; Services builds both, so they need a shape.
    nowhere = "http://127.0.0.1:9"
    settings = Settings(
        mode="test",
        database_url=database_url,
        log_level="WARNING",
        bc=BCSettings(
            api_base_url=nowhere,
            authority_host=nowhere,
            tenant_id=str(uuid.UUID(int=1)),
            client_id=str(uuid.UUID(int=2)),
            client_secret="unused",
            companies=[COMPANY],
        ),
        twilio=TwilioSettings(api_base_url=nowhere, account_sid="AC" + "0" * 32, api_key_sid="SK" + "0" * 32),
    )
    services = await open_services(settings, clock=SystemClock())
    now = datetime.now(UTC)
    with session_scope(services.db) as session:
        session.add(
            BcSubscription(
                subscription_id=SUBSCRIPTION,
                company_id=COMPANY,
                entity="customers",
                resource=f"api/v2.0/companies({COMPANY})/customers",
                notification_url="http://127.0.0.1/webhooks/bc",
                client_state_hash=hash_client_state(CLIENT_STATE),
                expires_at=now + timedelta(days=3),
                status="active",
                created_at=now,
                updated_at=now,
            )
        )
    return create_app(services, start_workers=False)


def _bare_app(database_url: str) -> Any:
    import sqlalchemy as sa

    from server.store.db import create_db_engine

    engine = create_db_engine(database_url)
    metadata = sa.MetaData()
    table = sa.Table(
        "bare_inbox",
        metadata,
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("subscription_id", sa.String(64)),
        sa.Column("resource", sa.String(2048)),
        sa.Column("change_type", sa.String(16)),
        sa.Column("last_modified", sa.String(40)),
        sa.Column("received_at", sa.DateTime(timezone=True)),
    )
    metadata.create_all(engine)
    insert = table.insert()

    @post(BARE_PATH, status_code=202)
    async def bare(request: Request[Any, Any, Any]) -> Response[str]:
        items = json.loads(await request.body())["value"]
        now = datetime.now(UTC)
        rows = [
            {
                "subscription_id": i["subscriptionId"],
                "resource": i["resource"],
                "change_type": i["changeType"],
                "last_modified": i["lastModifiedDateTime"],
                "received_at": now,
            }
            for i in items
        ]
        with engine.begin() as conn:
            conn.execute(insert, rows)
        return Response(content=f"accepted {len(rows)}", status_code=202, media_type=MediaType.TEXT)

    return Litestar(route_handlers=[bare])


async def serve(kind: str, database_url: str) -> None:
    import uvicorn

    from server.runtime.logs import configure_logging

    configure_logging("INFO")  # as `ml-connector serve` does: one access line per request
    app = await _real_app(database_url) if kind == "real" else _bare_app(database_url)
    sock = _listen()
    config = uvicorn.Config(app, lifespan="on", log_level="warning", access_log=False, workers=1)
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve(sockets=[sock]))
    while not server.started and not task.done():  # noqa: ASYNC110 (uvicorn exposes a flag)
        await asyncio.sleep(0.01)
    print(json.dumps({"port": sock.getsockname()[1]}), flush=True)
    await task


@contextmanager
def server_process(kind: str, database_url: str, log_dir: Path) -> Iterator[int]:
    # The server's log goes to a file: a pipe nobody reads fills up and stalls the server.
    log_path = log_dir / f"{kind}-{uuid.uuid4().hex[:6]}.log"
    with log_path.open("w") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "bench.ingest", "serve", kind, database_url],
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=log,
            text=True,
        )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        if not line:
            proc.wait(10)
            err = log_path.read_text().strip().splitlines()
            raise RuntimeError(f"{kind} server did not start: {err[-1] if err else proc.returncode}")
        yield int(json.loads(line)["port"])
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)


# ------------------------------------------------------------------------------------------- load


class BatchBodies:
    """Request bodies of ITEMS notifications each, every item new: each request has its own
    lastModifiedDateTime (a millisecond after the previous one, as changes made one after another
    carry) and its record ids a per-request counter (the inbox dedupes on subscription, resource,
    change type and time). Built from a template so the load process spends microseconds, not a
    JSON encoder, per request."""

    def __init__(self, base: datetime) -> None:
        self.base = base
        expires = (base + timedelta(days=3)).strftime("%Y-%m-%dT%H:%M:%SZ")
        head = json.dumps(
            {"subscriptionId": SUBSCRIPTION, "clientState": CLIENT_STATE, "expirationDateTime": expires}
        )[:-1]
        self.head = head + f', "resource": "api/v2.0/companies({COMPANY})/customers('
        self.middles = [
            f'-0000-4000-8000-{n:012x})", "changeType": "updated", "lastModifiedDateTime": "'
            for n in range(ITEMS)
        ]

    def body(self, counter: int) -> bytes:
        stamp = (self.base + timedelta(milliseconds=counter)).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"
        prefix = f"{self.head}{counter:08x}"
        tail = stamp + '"}'
        return ('{"value": [' + ", ".join(prefix + middle + tail for middle in self.middles) + "]}").encode()


async def load(port: int, path: str, seconds: float, warmup: float, connections: int) -> dict[str, Any]:
    # A fresh time per load run: runs against the same server never repeat an item.
    bodies = BatchBodies(datetime.now(UTC))
    counter = 0
    latencies: list[float] = []
    statuses: dict[int, int] = {}
    started = time.perf_counter()
    measure_from = started + warmup
    stop_at = measure_from + seconds

    async def connection() -> None:
        nonlocal counter
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        try:
            while True:
                counter += 1
                body = bodies.body(counter)
                head = (
                    f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Type: application/json\r\n"
                    f"Content-Length: {len(body)}\r\n\r\n"
                ).encode()
                sent = time.perf_counter()
                if sent >= stop_at:
                    return
                writer.write(head + body)
                await writer.drain()
                header = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), REQUEST_TIMEOUT)
                status = int(header.split(b" ", 2)[1])
                length = 0
                for line in header.split(b"\r\n"):
                    if line.lower().startswith(b"content-length:"):
                        length = int(line.split(b":", 1)[1])
                await reader.readexactly(length)
                done = time.perf_counter()
                if sent >= measure_from:
                    latencies.append(done - sent)
                    statuses[status] = statuses.get(status, 0) + 1
        finally:
            writer.close()

    await asyncio.gather(*(connection() for _ in range(connections)))
    return {
        "requests": len(latencies),
        "seconds": seconds,
        "rps": len(latencies) / seconds,
        "p50_ms": percentile(latencies, 50) * 1000 if latencies else float("nan"),
        "p99_ms": percentile(latencies, 99) * 1000 if latencies else float("nan"),
        "statuses": statuses,
    }


def run_load(port: int, path: str, params: Params) -> dict[str, Any]:
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "bench.ingest",
            "load",
            json.dumps(
                {
                    "port": port,
                    "path": path,
                    "seconds": params.seconds,
                    "warmup": params.warmup,
                    "connections": params.connections,
                }
            ),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=params.seconds + params.warmup + 60,
    )
    if proc.returncode != 0:
        raise RuntimeError(f"load generator failed: {proc.stderr[-2000:]}")
    result: dict[str, Any] = json.loads(proc.stdout.strip().splitlines()[-1])
    return result


# ------------------------------------------------------------------------------------------ section


def run(params: Params, runs: int) -> Section:
    section = Section(
        key="ingest",
        title="4. Webhook ingest",
        method=(
            f"POSTs of {ITEMS} notification items each, every one new, from a separate load process "
            f"({params.connections} keep-alive connections, {params.warmup:g} s warm-up, then "
            f"{params.seconds:g} s measured per run) against one uvicorn worker per server: the real "
            "`/webhooks/bc` (clientState check against the stored subscription, inbox insert with "
            "ON CONFLICT dedupe, one transaction) and a bare Litestar endpoint that parses the same body "
            "and inserts the same items in one transaction. SQLite (a file, WAL, the connector's engine "
            "settings) and PostgreSQL (a fresh database each); the runs of each pair alternate."
        ),
    )
    backends = ["sqlite"] + (["postgresql"] if server_version() else [])
    if len(backends) == 1:
        section.notes.append("PostgreSQL not reachable: its rows are missing.")
    results: dict[tuple[str, str], list[dict[str, Any]]] = {}
    with tempfile.TemporaryDirectory(prefix="mlc-bench-ingest-") as tmp:
        for backend in backends:
            with ExitStack() as stack:
                ports: dict[str, int] = {}
                for kind in ("bare", "real"):
                    if backend == "sqlite":
                        url = f"sqlite:///{Path(tmp) / f'{kind}.sqlite3'}"
                    else:
                        url = stack.enter_context(fresh_database(f"ingest_{kind}"))
                    ports[kind] = stack.enter_context(server_process(kind, url, Path(tmp)))
                for _ in range(runs):
                    for kind in ("bare", "real"):
                        path = BARE_PATH if kind == "bare" else REAL_PATH
                        results.setdefault((backend, kind), []).append(run_load(ports[kind], path, params))
    for backend in backends:
        bare, real = results[(backend, "bare")], results[(backend, "real")]
        label = "SQLite" if backend == "sqlite" else "PostgreSQL"
        section.add(f"{label} bare: batches/s", "requests/s", [r["rps"] for r in bare])
        section.add(
            f"{label} /webhooks/bc: batches/s",
            "requests/s",
            [r["rps"] for r in real],
            baseline=f"{label} bare: batches/s",
        )
        section.add(f"{label} /webhooks/bc: notifications/s", "items/s", [r["rps"] * ITEMS for r in real])
        section.add(f"{label} bare: p99", "ms", [r["p99_ms"] for r in bare], digits=1)
        section.add(
            f"{label} /webhooks/bc: p99",
            "ms",
            [r["p99_ms"] for r in real],
            baseline=f"{label} bare: p99",
            digits=1,
        )
        section.add(f"{label} /webhooks/bc: p50", "ms", [r["p50_ms"] for r in real], digits=1)
        ratio = section.ratio(f"{label} /webhooks/bc: batches/s") or 0.0
        wrong = {int(s) for r in bare + real for s in r["statuses"] if int(s) != 202}
        section.target(
            f"{label}: /webhooks/bc at >= 0.5 of the bare endpoint",
            ratio >= 0.5 and not wrong,
            f"{ratio:.2f}" + (f"; non-202 answers {sorted(wrong)}" if wrong else ""),
        )
    return section


if __name__ == "__main__":
    if len(sys.argv) >= 2 and sys.argv[1] == "serve" and len(sys.argv) == 4:
        asyncio.run(serve(sys.argv[2], sys.argv[3]))
    elif len(sys.argv) == 3 and sys.argv[1] == "load":
        options = json.loads(sys.argv[2])
        print(json.dumps(asyncio.run(load(**options))), flush=True)
    else:
        raise SystemExit("usage: python -m bench.ingest serve real|bare DATABASE_URL | load OPTIONS_JSON")
