"""Fixtures shared by every test folder."""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx
import pytest

from server.runtime.clock import Clock, ManualClock

if TYPE_CHECKING:
    from server.sandbox.stack import Stack

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED_REFERENCE = Path(os.environ.get("MLC_SHARED_REFERENCE", REPO_ROOT.parent / "shared" / "reference"))
DEFAULT_POSTGRES_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/test"

# A Wednesday, 09:00 in London: past the default 08:00 sweep time.
START = datetime(2026, 11, 25, 9, 0, tzinfo=UTC)


@pytest.fixture
def clock_start() -> datetime:
    """The moment `clock` starts at; a folder whose tests need another moment overrides this fixture."""
    return START


@pytest.fixture
def clock(clock_start: datetime) -> ManualClock:
    """A manual clock at `clock_start`: time moves only when a test advances it."""
    return ManualClock(clock_start)


@pytest.fixture(scope="session")
def repo_root() -> Path:
    return REPO_ROOT


@pytest.fixture(scope="session")
def shared_reference() -> Path:
    """The public-contract facts in ../shared/reference, read in place (never copied in)."""
    if not SHARED_REFERENCE.is_dir():
        pytest.skip(
            f"contract files not found at {SHARED_REFERENCE}: they sit beside the checkout in ../shared/reference "
            "(set MLC_SHARED_REFERENCE to point elsewhere)"
        )
    return SHARED_REFERENCE


def _postgres_admin_url() -> str:
    return os.environ.get("MLC_TEST_POSTGRES_URL", DEFAULT_POSTGRES_URL)


@pytest.fixture(scope="session")
def postgres_admin_url() -> str:
    """URL of a reachable PostgreSQL server. In CI an unreachable server fails the run; elsewhere it skips."""
    import sqlalchemy

    url = _postgres_admin_url()
    engine = sqlalchemy.create_engine(url, connect_args={"connect_timeout": 3})
    try:
        with engine.connect() as conn:
            conn.execute(sqlalchemy.text("select 1"))
    except Exception as exc:
        if os.environ.get("CI"):
            pytest.fail(f"PostgreSQL at {url} is not reachable in CI: {exc}")
        pytest.skip(f"no PostgreSQL server reachable at {url} (set MLC_TEST_POSTGRES_URL): {exc}")
    finally:
        engine.dispose()
    return url


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """The store's URL, once per backend: a SQLite file, and a fresh PostgreSQL database."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'connector.sqlite3'}"
    url: str = request.getfixturevalue("postgres_url")
    return url


@pytest.fixture
def postgres_url(postgres_admin_url: str) -> Iterator[str]:
    """A fresh, empty PostgreSQL database for one test, dropped afterwards."""
    import sqlalchemy

    name = f"mlc_test_{uuid.uuid4().hex[:12]}"
    admin = sqlalchemy.create_engine(postgres_admin_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(sqlalchemy.text(f'CREATE DATABASE "{name}"'))
    url = (
        sqlalchemy.engine.make_url(postgres_admin_url)
        .set(database=name)
        .render_as_string(hide_password=False)
    )
    try:
        yield url
    finally:
        with admin.connect() as conn:
            conn.execute(sqlalchemy.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    """A SQLite file for one test (the backend of the tests that need only one)."""
    return f"sqlite:///{tmp_path / 'connector.sqlite3'}"


# --- the stack: both simulators and the connector over loopback (server.sandbox.stack.Stack) ---------
# One `stack` fixture; a folder configures it by overriding the value fixtures below.


@pytest.fixture
def stack_url(database_url: str) -> str:
    """The database `stack` runs on: both backends, unless a folder narrows it (to `sqlite_url`)."""
    return database_url


@pytest.fixture
def stack_settings() -> dict[str, Any]:
    """Settings overrides for `stack` (Stack's settings_overrides)."""
    return {}


@pytest.fixture
def stack_class() -> type[Stack]:
    """The Stack (sub)class `stack` starts."""
    from server.sandbox.stack import Stack  # imported here: the engine tests need none of the server

    return Stack


@pytest.fixture
async def stack(
    stack_class: type[Stack], stack_url: str, clock: Clock, stack_settings: dict[str, Any]
) -> AsyncIterator[Stack]:
    async with stack_class(database_url=stack_url, clock=clock, settings_overrides=stack_settings) as running:
        yield running


@pytest.fixture
async def api(stack: Stack) -> AsyncIterator[httpx.AsyncClient]:
    """An HTTP client for the connector's API, with its bearer token."""
    headers = {"Authorization": f"Bearer {stack.api_token}"}
    async with httpx.AsyncClient(base_url=stack.url, headers=headers, timeout=30) as client:
        yield client
