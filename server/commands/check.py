"""`ml-connector check`: ping BC and Twilio with the stored (or environment) credentials."""

from __future__ import annotations

import argparse
import asyncio
from typing import Any


def register(subparsers: Any) -> None:
    check = subparsers.add_parser(
        "check",
        help="ping Business Central and Twilio with the configured credentials; a pass/fail table with fixes",
    )
    check.set_defaults(func=run_check)


def run_check(args: argparse.Namespace) -> int:
    from rich.console import Console

    from server.check import CheckResult, render, run_checks
    from server.commands.credentials import effective_settings
    from server.credentials import CredentialError

    console = Console()
    try:
        settings = effective_settings()
    except CredentialError as exc:
        render(
            [
                CheckResult(
                    "Settings", "credentials", False, str(exc), "set the key the credentials were stored with"
                )
            ],
            console,
        )
        return 1
    results = asyncio.run(run_checks(settings))
    render(results, console)
    return 0 if all(r.ok for r in results) else 1
