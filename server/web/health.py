"""Liveness and readiness.

/health answers as long as the process serves HTTP. /ready says whether the connector can do its job:
the database answers and this instance can write to it (a real write, rolled back: store.db
write_probe), the worker loops are running (when this instance runs workers), and no BC
subscription it relies on has expired or been dropped.
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from litestar import Response, get
from litestar.di import NamedDependency

from server.services import Services
from server.store.db import ping, read_scope, write_failure, write_probe
from server.store.subscriptions import list_subscriptions


@get("/health")
async def health() -> dict[str, str]:
    return {"status": "ok"}


def readiness(services: Services) -> tuple[bool, dict[str, Any]]:
    checks: dict[str, Any] = {}
    ok = True
    try:
        with read_scope(services.db) as session:
            ping(session)
            now = services.clock.now()
            subs = list_subscriptions(session, statuses=["active", "renewing", "dropped"])
            # Read inside the scope: it ends in a rollback, which expires (detaches) the rows.
            bad = [
                f"{s.entity}@{s.company_id}"
                for s in subs
                if s.status == "dropped" or (s.expires_at is not None and s.expires_at <= now)
            ]
        try:
            write_probe(services.db)
            checks["database"] = "ok"
        except sa.exc.SQLAlchemyError as exc:
            checks["database"] = write_failure(exc)
            ok = False
        checks["subscriptions"] = "ok" if not bad else f"expired or dropped: {', '.join(sorted(bad))}"
        ok = ok and not bad
    except sa.exc.SQLAlchemyError as exc:
        checks["database"] = f"unreachable: {type(exc).__name__}"
        ok = False
    if services.workers_started:
        dead = sorted(name for name, loop in services.workers.items() if not loop.running)
        checks["workers"] = "ok" if not dead else f"not running: {', '.join(dead)}"
        ok = ok and not dead
    else:
        checks["workers"] = "not started in this process"
    return ok, checks


@get("/ready", sync_to_thread=True)
def ready(services: NamedDependency[Services]) -> Response[dict[str, Any]]:
    ok, checks = readiness(services)
    return Response(
        {"status": "ready" if ok else "not ready", "checks": checks}, status_code=200 if ok else 503
    )


ROUTES = [health, ready]
