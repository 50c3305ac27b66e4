"""`ml-connector simulate bc|twilio`: run a simulator alone on loopback for your own tools."""

from __future__ import annotations

import argparse
import importlib
from typing import Any


def _run(target: str) -> Any:
    def run(args: argparse.Namespace) -> int:
        module_name, _, func_name = target.partition(":")
        func = getattr(importlib.import_module(module_name), func_name)
        result: int = func(args)
        return result

    return run


def register(subparsers: Any) -> None:
    simulate = subparsers.add_parser("simulate", help="run the BC or Twilio simulator standalone")
    which = simulate.add_subparsers(dest="system", metavar="SYSTEM")
    which.required = True

    bc = which.add_parser(
        "bc",
        help="Business Central API v2.0 + Entra token endpoint simulator (HTTPS with a generated CA)",
    )
    bc.add_argument("--host", default="127.0.0.1")
    bc.add_argument("--port", type=int, default=0, help="0 picks a free port")
    bc.add_argument("--seed", default="demo", help="seed data set (default: demo)")
    bc.set_defaults(func=_run("server.sandbox.bc:cli_main"))

    twilio = which.add_parser("twilio", help="Twilio Messages/Calls/Verify simulator")
    twilio.add_argument("--host", default="127.0.0.1")
    twilio.add_argument("--port", type=int, default=0, help="0 picks a free port")
    twilio.set_defaults(func=_run("server.sandbox.twilio:cli_main"))
