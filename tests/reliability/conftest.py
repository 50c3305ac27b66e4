"""The connector as a real process (`ml-connector serve`), killed for real, against in-test simulators.

- `Connector`: starts `ml-connector serve` as a subprocess on a fixed free port (BC's notificationUrl and
  Twilio's StatusCallback must survive restarts), optionally with a crash point armed; waits for
  /health; kills it with SIGKILL; reports how it ended.
- `World`: the BC and Twilio simulators (threads of the test process), the connector's environment,
  and the checks an outsider can make: what Twilio received, what BC holds, what the audit API says.
- `private_postgres`: a PostgreSQL cluster of our own (initdb in a temp dir, a free port) that a test
  may stop and start without disturbing anything else.

MLC_SOAK=N multiplies the burst sizes and kill counts for longer manual runs (default 1: CI-sized).
MLC_FIGURES_DIR=DIR makes each test write its figures as JSON there (tests/reliability/render.py
turns them into docs/reliability.md).
"""

from __future__ import annotations

import abc
import asyncio
import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine, Iterator
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any, Self

import httpx
import pytest
from cryptography.fernet import Fernet

from server.runtime.crashpoints import CRASH_EXIT_CODE
from simulators.bc.simulator import BCSimulator
from simulators.twilio.simulator import TwilioSimulator

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
RULES = HERE / "rules"
TEMPLATES = HERE / "templates"
SECRET_KEY = Fernet.generate_key().decode()
SOAK = max(1, int(os.environ.get("MLC_SOAK", "1") or "1"))
FINAL = frozenset({"delivered", "undelivered", "failed", "skipped", "opted_out"})
PG_BIN = Path("/usr/lib/postgresql/15/bin")
# Numbers of the three rules in tests/reliability/rules.
ALERT, AUDIT, VENDOR = "+447700900101", "+447700900102", "+447700900103"


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def eventually(
    check: Callable[[], Awaitable[bool]], *, within: float = 60.0, step: float = 0.2, what: str = ""
) -> None:
    deadline = time.monotonic() + within
    while not await check():
        if time.monotonic() > deadline:
            raise AssertionError(f"not reached within {within:.0f}s: {what or check}")
        await asyncio.sleep(step)


def backend_of(database_url: str) -> str:
    return "sqlite" if database_url.startswith("sqlite") else "postgres"


def matrix(default: list[tuple[str, str]], full: list[tuple[str, str]]) -> list[tuple[str, str]]:
    """(backend, point) cases: every pair under MLC_SOAK>1; the default run covers each point once and
    each backend at least once (a few minutes in CI; the store code is the same on both)."""
    return full if SOAK > 1 else default


def amount(value: float) -> str:
    """A number as the templates render it (a whole float loses its '.0')."""
    return str(int(value)) if float(value).is_integer() else str(value)


def write_figures(name: str, figures: dict[str, Any]) -> None:
    target = os.environ.get("MLC_FIGURES_DIR")
    if not target:
        return
    path = Path(target)
    path.mkdir(parents=True, exist_ok=True)
    (path / f"{name}.json").write_text(json.dumps(figures, indent=2, sort_keys=True, default=str))


class TcpProxy(abc.ABC):
    """A TCP proxy on a free loopback port (async context manager); subclasses decide, in
    `_connection`, where each accepted connection goes and how its bytes pass."""

    def __init__(self, port: int | None = None) -> None:
        self.port = port or free_port()
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    async def __aenter__(self) -> Self:
        self._server = await asyncio.start_server(self._connection, "127.0.0.1", self.port)
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._server is not None
        self._server.close()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    @abc.abstractmethod
    async def _connection(self, client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        """Route one accepted connection (each proxy its own way)."""

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    @staticmethod
    async def _pipe(source: asyncio.StreamReader, sink: asyncio.StreamWriter) -> None:
        """Pass bytes on as they come; close the sink when the source ends."""
        with contextlib.suppress(OSError):
            while chunk := await source.read(65536):
                sink.write(chunk)
                await sink.drain()
        with contextlib.suppress(OSError, RuntimeError):
            sink.close()


class Connector:
    """One `ml-connector serve` process at a time, restartable on the same port."""

    def __init__(self, env: dict[str, str], port: int, workdir: Path) -> None:
        self.env = env
        self.port = port
        self.url = f"http://127.0.0.1:{port}"
        self.workdir = workdir
        self.log_path = workdir / "connector.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self.starts = 0
        self.exits: list[int] = []

    def start(self, *, crash: str | None = None, at: int = 1, extra: dict[str, str] | None = None) -> None:
        assert self.proc is None or self.proc.poll() is not None, "already running"
        env = dict(self.env)
        env.pop("MLC_CRASH_POINTS", None)
        if crash:
            env["MLC_CRASH_POINTS"] = crash
            env["MLC_CRASH_AT"] = str(at)
        env.update(extra or {})
        log = self.log_path.open("ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "server.cli", "serve", "--port", str(self.port)],
            cwd=self.workdir,  # no stray .env from the checkout
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        log.close()
        self.starts += 1

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    async def healthy(self) -> bool:
        if not self.running:
            return False
        try:
            async with httpx.AsyncClient(timeout=2) as client:
                return (await client.get(f"{self.url}/health")).status_code == 200
        except httpx.HTTPError:
            return False

    async def wait_healthy(self, within: float = 45.0) -> None:
        async def up() -> bool:
            if self.proc is not None and self.proc.poll() is not None:
                raise AssertionError(f"connector exited with {self.proc.returncode}:\n{self.tail()}")
            return await self.healthy()

        await eventually(up, within=within, step=0.1, what="connector /health")

    async def wait_exit(self, within: float = 60.0) -> int:
        assert self.proc is not None
        proc = self.proc

        async def ended() -> bool:
            return proc.poll() is not None

        await eventually(ended, within=within, step=0.05, what="connector exit")
        self.exits.append(proc.returncode)
        return proc.returncode

    def kill(self) -> None:
        """SIGKILL: no shutdown code runs at all."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(timeout=15)
            self.exits.append(self.proc.returncode)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=15)

    def tail(self, lines: int = 40) -> str:
        if not self.log_path.exists():
            return ""
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""


@dataclass
class World:
    bc: BCSimulator
    twilio: TwilioSimulator
    connector: Connector
    database_url: str
    api_token: str
    company: str
    created: list[dict[str, Any]] = field(default_factory=list)

    # -- what BC holds, and what the rules must therefore send --------------------------------------

    def create_customers(self, count: int, *, start: int = 0) -> list[dict[str, Any]]:
        made = []
        for n in range(start, start + count):
            made.append(
                self.bc.create_record(
                    self.company,
                    "customers",
                    {"number": f"R{n:05d}", "displayName": f"Reliability {n}", "balanceDue": 100.0 + n * 7.5},
                )
            )
        self.created.extend(made)
        return made

    def expected(self) -> Counter[tuple[str, str]]:
        """(To, Body) of every message the rules call for, from the records as BC holds them now."""
        want: Counter[tuple[str, str]] = Counter()
        for record in self.created:
            current = self.bc.get_record(self.company, "customers", record["id"])
            if current is None:
                continue
            balance = amount(current["balanceDue"])
            if current["balanceDue"] > 0:
                want[(ALERT, f"Balance of customer {current['number']} is now {balance}.")] += 1
            if current["balanceDue"] > 500:
                want[(AUDIT, f"Audit: customer {current['number']} owes {balance}.")] += 1
        return want

    # -- what Twilio received ----------------------------------------------------------------------

    def accepted(self) -> Counter[tuple[str, str]]:
        """(To, Body) of every message create Twilio accepted (a refused request created nothing)."""
        out: Counter[tuple[str, str]] = Counter()
        for r in self.twilio.requests(path_contains="/Messages.json"):
            if r.method == "POST" and r.status == 201:
                form = r.form_dict()
                out[(form["To"][0], form["Body"][0])] += 1
        return out

    def twilio_messages(self) -> Counter[tuple[str, str]]:
        """What Twilio holds (counts also creates whose answer never reached the connector)."""
        return Counter((m["to"], m["body"]) for m in self.twilio.messages())

    # -- the audit API -----------------------------------------------------------------------------

    async def audit(self) -> list[dict[str, Any]]:
        items: list[dict[str, Any]] = []
        cursor: int | None = None
        headers = {"Authorization": f"Bearer {self.api_token}"}
        async with httpx.AsyncClient(base_url=self.connector.url, headers=headers, timeout=10) as api:
            while True:
                params: dict[str, Any] = {"limit": 500}
                if cursor is not None:
                    params["cursor"] = cursor
                response = await api.get("/api/messages", params=params)
                response.raise_for_status()
                page = response.json()
                items.extend(page["items"])
                cursor = page["next_cursor"]
                if cursor is None:
                    return items

    async def settled(self, want: Counter[tuple[str, str]]) -> bool:
        """Every wanted message at Twilio and every audit row final (nudging both simulators)."""
        await self.bc.aflush_notifications()  # BC's retries after a dead connector, now
        await self.twilio.asettle()
        if not await self.connector.healthy():
            return False
        if not set(want) <= set(self.twilio_messages()):
            return False
        rows = await self.audit()
        if len(rows) < sum(want.values()):
            return False
        return all(r["status"] in FINAL for r in rows)

    async def wait_settled(
        self, want: Counter[tuple[str, str]], *, within: float, what: str, context: str = ""
    ) -> None:
        """`settled`, or an AssertionError that says what it still waits for."""
        try:
            await eventually(lambda: self.settled(want), within=within, step=0.5, what=what)
        except AssertionError as exc:
            where = f" ({context})" if context else ""
            raise AssertionError(f"{exc}{where}: {await self.why_unsettled(want)}") from None

    async def why_unsettled(self, want: Counter[tuple[str, str]]) -> str:
        """What `settled` still waits for, for a failure message."""
        held = self.twilio_messages()
        missing = [key for key in want if key not in held]
        rows = await self.audit()
        open_rows = Counter(str(r["status"]) for r in rows if r["status"] not in FINAL)
        return (
            f"healthy={await self.connector.healthy()}, {len(missing)} of {len(want)} wanted messages "
            f"not at Twilio (e.g. {missing[:3]}), {len(rows)} audit rows for {sum(want.values())} "
            f"wanted, not final: {dict(open_rows)}"
        )

    def secrets(self) -> dict[str, str]:
        found = {
            "api token": self.api_token,
            "BC client secret": self.bc.client_secret,
            "Twilio API key secret": self.twilio.api_key_secret,
            "Twilio auth token": self.twilio.auth_token,
        }
        # Each webhook subscription's clientState (the store keeps only its hash).
        for sub in self.bc.subscriptions():
            found[f"clientState of subscription {sub['subscriptionId']}"] = sub["clientState"]
        return found

    def assert_no_secrets_at_rest(self) -> int:
        """No secret in the connector's log output or (SQLite) its database file; returns bytes read."""
        places = {"log": self.connector.log_path.read_bytes()}
        if self.database_url.startswith("sqlite:///"):
            db = Path(self.database_url.removeprefix("sqlite:///"))
            places.update({p.name: p.read_bytes() for p in db.parent.glob(db.name + "*")})
        for where, data in places.items():
            for name, secret in self.secrets().items():
                assert secret.encode() not in data, f"the {name} is in the {where} in plain text"
        return sum(len(d) for d in places.values())

    async def check_invariants(self, want: Counter[tuple[str, str]]) -> dict[str, int]:
        """Exactly once, nothing lost, everything final; returns the figures."""
        held = self.twilio_messages()
        rows = await self.audit()
        duplicated = sum(n - 1 for n in held.values() if n > 1)
        lost = sum(1 for key in want if held[key] == 0)
        unexpected = sum(1 for key in held if key not in want)
        not_final = [r for r in rows if r["status"] not in FINAL]
        figures = {
            "expected": sum(want.values()),
            "sent": sum(held.values()),
            "duplicated": duplicated,
            "lost": lost,
            "unexpected": unexpected,
            "audit_rows": len(rows),
            "not_final": len(not_final),
        }
        assert duplicated == 0, f"sent twice: {[k for k, n in held.items() if n > 1][:5]}"
        assert lost == 0, f"never sent: {[k for k in want if held[k] == 0][:5]}"
        assert unexpected == 0, (
            f"sent without a rule calling for it: {[k for k in held if k not in want][:5]}"
        )
        assert not not_final, f"not final in the audit: {[(r['job_id'], r['status']) for r in not_final][:5]}"
        assert len(rows) == sum(want.values())
        assert all(r["status"] == "delivered" for r in rows)
        # Every row's SID is one Twilio holds, and no SID is used twice.
        sids = [r["twilio_sid"] for r in rows]
        assert len(set(sids)) == len(sids)
        assert set(sids) <= {m["sid"] for m in self.twilio.messages()}
        return figures


# Leases and Twilio client timeouts that start-up accepts (server/settings.py, lease_problems) and
# that a test can wait out. The read timeout leaves room for a Twilio answer (or a slow uplink)
# of 4 s; one attempt per create, so a refused create is retried by the dispatcher, not in-line.
SAFE_LEASES: dict[str, str] = {
    "MLC_TWILIO__CONNECT_TIMEOUT_SECONDS": "0.25",
    "MLC_TWILIO__WRITE_TIMEOUT_SECONDS": "0.25",
    "MLC_TWILIO__READ_TIMEOUT_SECONDS": "5",
    "MLC_TWILIO__MAX_ATTEMPTS": "1",
    "MLC_CLAIM_SECONDS": "6",
    "MLC_SUBMIT_LEASE_SECONDS": "6",
    "MLC_RECONCILE_GRACE_SECONDS": "6",
    # A killed reconciler's unknown sends wait out this lease before another one looks them up.
    "MLC_RECONCILE_LEASE_SECONDS": "6",
}


def connector_env(
    *, bc: BCSimulator, twilio: TwilioSimulator, database_url: str, url: str, api_token: str, company: str
) -> dict[str, str]:
    keep = {k: v for k, v in os.environ.items() if not k.startswith("MLC_")}
    return {
        **keep,
        "PYTHONPATH": str(REPO),
        "MLC_MODE": "test",
        "MLC_LOG_LEVEL": "INFO",
        "MLC_DATABASE_URL": database_url,
        "MLC_PUBLIC_BASE_URL": url,
        "MLC_API_TOKEN": api_token,
        # Credentials and proposed bank details are stored encrypted with this key (the same one
        # across restarts, as an operator's key file would be).
        "MLC_SECRET_KEY": SECRET_KEY,
        "MLC_RULES_DIR": str(RULES),
        "MLC_TEMPLATES_DIR": str(TEMPLATES),
        "MLC_FETCH_INTERVAL_SECONDS": "0.1",
        "MLC_DISPATCH_INTERVAL_SECONDS": "0.1",
        "MLC_MESSAGES_PER_SECOND": "500",
        # The harness polls the whole audit API every half second; a soak run's pages would pass
        # the 600 requests/min of one token (the limit itself: tests/server/web/test_ratelimit.py).
        "MLC_RATE_LIMITS__API_PER_TOKEN": "100000",
        # Recovery after a kill: leases and grace periods short enough for a test to wait out, and
        # safe: the Twilio client's timeouts are short too, so that the leases outlast its calls
        # (one attempt of 2 x 0.25 + 0.25 + 5 = 5.75 s; start-up refuses leases shorter than that).
        **SAFE_LEASES,
        "MLC_RECONCILE_INTERVAL_SECONDS": "0.5",
        "MLC_STATUS_POLL_AFTER_SECONDS": "2",
        "MLC_CHANGES__WRITE_LEASE_SECONDS": "1",
        **bc.connector_env([company]),
        **twilio.connector_env(),
    }


@pytest.fixture(params=["sqlite", "postgres"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """Parametrized over both backends; a test may narrow it with `indirect` parametrization."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'connector.sqlite3'}"
    url: str = request.getfixturevalue("postgres_url")
    return url


@pytest.fixture
async def world(database_url: str, tmp_path: Path) -> AsyncIterator[World]:
    async with open_world(database_url, tmp_path) as running:
        yield running


class open_world:  # used as `async with open_world(...)`
    def __init__(self, database_url: str, workdir: Path) -> None:
        self.database_url = database_url
        self.workdir = workdir
        self.world: World | None = None

    async def __aenter__(self) -> World:
        port = free_port()
        url = f"http://127.0.0.1:{port}"
        bc = BCSimulator(seed="demo", notification_window=timedelta(milliseconds=200)).start()
        twilio = TwilioSimulator(inbound_url=f"{url}/webhooks/twilio/inbound").start()
        token = "reliability-" + os.urandom(12).hex()
        company = bc.companies[0]
        env = connector_env(
            bc=bc, twilio=twilio, database_url=self.database_url, url=url, api_token=token, company=company
        )
        self.world = World(bc, twilio, Connector(env, port, self.workdir), self.database_url, token, company)
        return self.world

    async def __aexit__(self, *exc: object) -> None:
        assert self.world is not None
        self.world.connector.stop()
        self.world.twilio.stop()
        self.world.bc.stop()


# -- a private PostgreSQL cluster ----------------------------------------------------------------


@dataclass
class PrivateCluster:
    datadir: Path
    port: int
    run_as: list[str]

    @property
    def url(self) -> str:
        return f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/postgres"

    def ctl(self, *args: str) -> None:
        subprocess.run(
            [*self.run_as, str(PG_BIN / "pg_ctl"), "-D", str(self.datadir), "-w", "-t", "30", *args],
            check=True,
            capture_output=True,
        )

    def start(self) -> None:
        options = f"-p {self.port} -k {self.datadir} -c listen_addresses=127.0.0.1"
        self.ctl("-o", options, "-l", str(self.datadir / "server.log"), "start")

    def stop(self) -> None:
        self.ctl("-m", "fast", "stop")


@pytest.fixture
def private_postgres() -> Iterator[PrivateCluster]:
    if not (PG_BIN / "initdb").exists():
        pytest.skip(f"PostgreSQL server binaries not found at {PG_BIN}: cannot run a private cluster")
    run_as: list[str] = []
    base = Path(tempfile.mkdtemp(prefix="mlc-pg-"))
    if os.geteuid() == 0:
        if shutil.which("runuser") is None:
            pytest.skip("running as root without runuser: cannot start PostgreSQL as the postgres user")
        run_as = ["runuser", "-u", "postgres", "--"]
        shutil.chown(base, "postgres", "postgres")
    datadir = base / "data"
    subprocess.run(
        [*run_as, str(PG_BIN / "initdb"), "-D", str(datadir), "-U", "postgres", "--auth=trust", "-E", "UTF8"],
        check=True,
        capture_output=True,
    )
    cluster = PrivateCluster(datadir, free_port(), run_as)
    cluster.start()
    try:
        yield cluster
    finally:
        try:
            cluster.stop()
        finally:
            shutil.rmtree(base, ignore_errors=True)


def expected_crash(code: int) -> bool:
    return code == CRASH_EXIT_CODE
