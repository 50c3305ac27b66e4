"""Two dispatcher processes on PostgreSQL over 1,000 queued jobs, Twilio unthrottled: every job is
sent exactly once (counted in the simulator's own request log)."""

from __future__ import annotations

import asyncio
import json
import os
import sys
from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from server.runtime.clock import ManualClock
from server.sandbox.stack import Stack

from .conftest import accepted_bodies, creates, insert, open_stack, row, statuses

WORKER = Path(__file__).with_name("dispatch_worker.py")
JOBS = 1000


@pytest.fixture
async def pg_stack(postgres_url: str, clock: ManualClock) -> AsyncIterator[Stack]:
    running = await open_stack(postgres_url, clock)
    try:
        yield running
    finally:
        await running.stop()


def worker_env(stack: Stack, repo_root: Path) -> dict[str, str]:
    sim, bc = stack.twilio_sim, stack.settings.bc
    return {
        **os.environ,
        "PYTHONPATH": str(repo_root),
        "MLC_MODE": "test",
        "MLC_DATABASE_URL": stack.database_url,
        "MLC_PUBLIC_BASE_URL": stack.url,
        "MLC_MESSAGES_PER_SECOND": "100000",
        **sim.connector_env(),
        # Services always builds a BC client (never called here): point it at the BC simulator.
        "MLC_BC__API_BASE_URL": bc.api_base_url,
        "MLC_BC__AUTHORITY_HOST": bc.authority_host,
        "MLC_BC__TENANT_ID": bc.tenant_id,
        "MLC_BC__CLIENT_ID": bc.client_id,
        "MLC_BC__CLIENT_SECRET": bc.client_secret.get_secret_value(),
        "MLC_BC__CA_CERT": str(bc.ca_cert or ""),
    }


@pytest.mark.slow
@pytest.mark.postgres
async def test_two_dispatcher_processes_send_each_job_exactly_once(pg_stack: Stack, repo_root: Path) -> None:
    stack = pg_stack
    jobs = insert(stack, *(row(n, to=f"+4477009{n % 50:05d}") for n in range(JOBS)))
    assert len(jobs) == JOBS
    env = worker_env(stack, repo_root)
    now = stack.clock.now().isoformat()
    # asyncio subprocesses: this loop also serves the connector, so it must not block.
    procs = [
        await asyncio.create_subprocess_exec(
            sys.executable,
            str(WORKER),
            now,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            cwd=repo_root,
            env=env,
        )
        for _ in range(2)
    ]
    try:
        async with asyncio.timeout(60):
            for p in procs:  # both connected before either starts: they really race
                assert p.stdout is not None and p.stderr is not None
                line = (await p.stdout.readline()).decode().strip()
                assert line == "ready", line + (await p.stderr.read()).decode()[-3000:]
        for p in procs:
            assert p.stdin is not None
            p.stdin.write(b"go\n")
            await p.stdin.drain()
        async with asyncio.timeout(150):
            outputs = [await p.communicate() for p in procs]
    finally:
        for p in procs:
            if p.returncode is None:
                p.kill()
                await p.wait()
    results = [(out.decode(), err.decode()) for out, err in outputs]
    for p, (_, err) in zip(procs, results, strict=True):
        assert p.returncode == 0, err[-3000:]
    reports = [json.loads(out.strip().splitlines()[-1]) for out, _ in results]

    assert all(r["sent"] > 0 for r in reports), reports  # both processes took part
    assert sum(r["sent"] for r in reports) == JOBS
    per_body = Counter(accepted_bodies(stack))
    assert len(per_body) == JOBS and set(per_body.values()) == {1}
    assert len(creates(stack)) == JOBS  # no create was refused or repeated
    assert statuses(stack) == {"queued": JOBS}
    print(f"two processes: {reports}")
