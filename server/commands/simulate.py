"""`ml-connector simulate bc|twilio`: run a simulator alone on loopback for your own tools."""

from __future__ import annotations

import argparse
from typing import Any


def _run_bc(args: argparse.Namespace) -> int:
    from simulators.bc.simulator import cli_main

    return cli_main(args)


def _run_twilio(args: argparse.Namespace) -> int:
    from simulators.twilio.simulator import cli_main

    return cli_main(args)


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
    bc.set_defaults(func=_run_bc)

    twilio = which.add_parser("twilio", help="Twilio Messages/Calls/Verify simulator")
    twilio.add_argument("--host", default="127.0.0.1")
    twilio.add_argument("--port", type=int, default=0, help="0 picks a free port")
    twilio.set_defaults(func=_run_twilio)
