"""Hostile-input fixtures: the connector (ASGI app on a real port) with both simulators, on SQLite."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from cryptography.fernet import Fernet

from server.runtime.clock import OffsetClock
from server.sandbox.stack import Stack
from server.settings import ChangeSettings
from tests.server.changes.people import APPROVER, ROLES, identity_settings

__all__ = ["APPROVER"]


def write_figures(name: str, figures: dict[str, Any]) -> None:
    """MLC_FIGURES_DIR=DIR: keep this test's figures for docs/reliability.md (tests/reliability/render.py)."""
    import json

    target = os.environ.get("MLC_FIGURES_DIR")
    if not target:
        return
    path = Path(target)
    path.mkdir(parents=True, exist_ok=True)
    (path / f"{name}.json").write_text(json.dumps(figures, indent=2, sort_keys=True, default=str))


@pytest.fixture
def clock() -> OffsetClock:
    """The hostile-input tests run on moving time (Stack's own default clock), not a manual clock."""
    return OffsetClock()


@pytest.fixture
def stack_url(sqlite_url: str) -> str:
    return sqlite_url


@pytest.fixture
def stack_settings() -> dict[str, Any]:
    return {
        "secret_key": Fernet.generate_key().decode(),
        "changes": ChangeSettings(max_attempts=3, approver_roles=ROLES),
        "max_body_bytes": 65_536,
        **identity_settings(),
    }


def row_counts(stack: Stack) -> dict[str, int]:
    """Rows per table: 'nothing stored' is these numbers not moving."""
    inspector = sa.inspect(stack.services.db)
    counts: dict[str, int] = {}
    with stack.services.db.connect() as conn:
        for table in inspector.get_table_names():
            if table == "alembic_version":
                continue
            counts[table] = int(conn.execute(sa.text(f'SELECT count(*) FROM "{table}"')).scalar_one())
    return counts
