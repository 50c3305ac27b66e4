"""`ml-connector serve`: the connector service (webhooks, API, workers) on one port."""

from __future__ import annotations

import argparse
import asyncio
import gc
import sys
from typing import Any


def register(subparsers: Any) -> None:
    serve = subparsers.add_parser(
        "serve", help="run the connector service: webhooks, read API and background workers"
    )
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=8000)
    serve.add_argument(
        "--no-workers", action="store_true", help="serve HTTP only (e.g. a webhook-ingest instance)"
    )
    serve.set_defaults(func=run_serve)


async def _serve(args: argparse.Namespace) -> int:
    import uvicorn

    from engine.loader import RuleSetError
    from server.app import create_app
    from server.runtime.crashpoints import CrashPointError, arm_from_environment
    from server.runtime.logs import configure_logging, get_logger
    from server.services import open_services
    from server.settings import load_settings

    settings = load_settings()
    configure_logging(settings.log_level)
    log = get_logger("ml_connector.serve")
    try:
        armed = arm_from_environment(settings)
    except CrashPointError as exc:
        print(f"ml-connector: {exc}", file=sys.stderr)
        return 2
    if armed:
        log.warning("crash points armed (test only)", points=sorted(armed))
    try:
        services = await open_services(settings)
    except RuleSetError as exc:
        # The service refuses to start on the same diagnostics `rules lint` prints.
        print(f"ml-connector: the rule set in {settings.rules_dir} does not load:", file=sys.stderr)
        for diagnostic in exc.diagnostics:
            print(diagnostic.format_text(), file=sys.stderr)
        return 2
    app = create_app(services, start_workers=not args.no_workers)
    freeze_startup_heap()
    # proxy_headers=False: uvicorn would otherwise take the client from X-Forwarded-For of any peer
    # in FORWARDED_ALLOW_IPS (127.0.0.1 by default); only MLC_RATE_LIMITS__TRUSTED_PROXIES may do
    # that (server/web/ratelimit.py), so a forged header cannot dodge the per-address limits.
    config = uvicorn.Config(
        app,
        host=args.host,
        port=args.port,
        log_config=None,
        access_log=False,
        lifespan="on",
        proxy_headers=False,
    )
    log.info("serving", host=args.host, port=args.port, database=services.db.url.get_backend_name())
    try:
        await uvicorn.Server(config).serve()
    finally:
        await services.aclose()
    return 0


def freeze_startup_heap() -> None:
    """Move what start-up made (modules, the compiled rules, the app) out of the collector's reach.

    A full (oldest-generation) collection walks every tracked object; here ~180,000 of them live
    for the process's life, and each walk stopped every thread for 0.1-0.2 s on a busy 2-core
    machine: a gap in a burst of sends paced at 100/s (bench/burst.py, docs/benchmarks.md). Frozen,
    they are never walked; what the process makes later is collected as before. Only here, in the
    long-lived service: a test process making many apps must not freeze the garbage of each.
    """
    import server.workers  # noqa: F401  (the worker loops' modules, imported by the lifespan anyway)

    gc.collect()
    gc.freeze()


def run_serve(args: argparse.Namespace) -> int:
    return asyncio.run(_serve(args))
