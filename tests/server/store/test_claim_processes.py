"""Two dispatcher processes over 1,000 queued jobs: every job is claimed and sent exactly once."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import Engine

from server.store import outbox
from server.store.db import session_scope
from server.store.tables import OutboxMessage
from tests.conftest import START

from .conftest import PlannedFactory

WORKER = Path(__file__).with_name("claim_worker.py")
JOBS = 1000


@pytest.mark.slow
def test_two_processes_claim_each_job_exactly_once(
    engine: Engine, database_url: str, planned: PlannedFactory, repo_root: Path
) -> None:
    with session_scope(engine) as session:
        inserted = outbox.insert_planned(
            session, [planned(n) for n in range(JOBS)], company_id="c1", now=START
        )
    assert len(inserted) == JOBS

    env = {**os.environ, "PYTHONPATH": str(repo_root)}
    procs = [
        subprocess.Popen(
            [sys.executable, str(WORKER), database_url, f"proc-{n}"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            cwd=repo_root,
            env=env,
        )
        for n in range(2)
    ]
    try:
        for p in procs:  # both connected before either starts: they really race
            assert p.stdout is not None
            assert p.stdout.readline().strip() == "ready"
        for p in procs:
            assert p.stdin is not None
            p.stdin.write("go\n")
            p.stdin.flush()
        results = [p.communicate(timeout=90) for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait(timeout=10)
    for p, (_, err) in zip(procs, results, strict=True):
        assert p.returncode == 0, err
    claimed = [json.loads(out.strip().splitlines()[-1]) for out, _ in results]
    everything = claimed[0] + claimed[1]
    assert sorted(everything) == sorted(inserted)  # every job once, none twice
    assert not set(claimed[0]) & set(claimed[1])
    with engine.connect() as conn:
        rows = conn.execute(
            sa.select(OutboxMessage.status, OutboxMessage.attempts, sa.func.count()).group_by(  # type: ignore[call-overload]
                OutboxMessage.status, OutboxMessage.attempts
            )
        ).all()
    assert [tuple(r) for r in rows] == [("queued", 1, JOBS)]
