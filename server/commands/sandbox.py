"""`ml-connector sandbox`: the whole product on one machine, on the embedded default.

Starts the BC simulator (seeded demo company), the Twilio simulator and the connector (SQLite file
under var/, the shipped rules, the workers), prints where to look, runs a scripted scenario
(server/sandbox/scenario.py) and prints what was sent and how each message ended. Without
--exit-after it then keeps serving, with the worker loops running, until Ctrl-C.
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from rich.console import Console

    from server.sandbox.scenario import ScenarioReport
    from server.sandbox.stack import Stack

STATUS_STYLE = {
    "delivered": "green",
    "sent": "cyan",
    "queued": "cyan",
    "sending": "cyan",
    "failed": "bold red",
    "undelivered": "bold red",
    "opted_out": "yellow",
    "skipped": "dim",
    "held": "magenta",
    "planned": "magenta",
    "unknown": "bold yellow",
    "submitting": "yellow",
}


def register(subparsers: Any) -> None:
    sandbox = subparsers.add_parser(
        "sandbox",
        help="run BC + Twilio simulators and the connector on this machine, with a scripted scenario",
    )
    sandbox.add_argument(
        "--scenario", default="demo", help="scripted scenario to run: demo (default) or none"
    )
    sandbox.add_argument(
        "--exit-after",
        action="store_true",
        help="stop after the scenario's summary (exit 1 if it fell short)",
    )
    sandbox.add_argument("--port", type=int, default=0, help="the connector's port (default: a free one)")
    sandbox.add_argument(
        "--var-dir",
        type=Path,
        default=None,
        help="where the SQLite file and the JSON log go (default: var/ in the repository)",
    )
    sandbox.set_defaults(func=run_sandbox)


def run_sandbox(args: argparse.Namespace) -> int:
    return asyncio.run(_sandbox(args))


def _fresh_database(var_dir: Path) -> str:
    """A new SQLite file per run: the story starts from an empty outbox every time."""
    var_dir.mkdir(parents=True, exist_ok=True)
    path = var_dir / "sandbox.sqlite3"
    for suffix in ("", "-wal", "-shm", "-journal"):
        Path(f"{path}{suffix}").unlink(missing_ok=True)
    return f"sqlite:///{path}"


def where_to_look(console: Console, stack: Stack, log_path: Path) -> None:
    from rich.table import Table

    table = Table(show_header=False, box=None, padding=(0, 2))
    table.add_column(style="bold")
    table.add_column(overflow="fold")
    token = stack.api_token
    table.add_row("Audit pages", f"{stack.url}/audit/login#token={token}")
    table.add_row("Read API", f"curl -H 'Authorization: Bearer {token}' {stack.url}/api/messages")
    table.add_row("Metrics", f"curl -H 'Authorization: Bearer {token}' {stack.url}/metrics")
    table.add_row("Health", f"{stack.url}/health   {stack.url}/ready")
    table.add_row("BC simulator", f"{stack.bc_sim.base_url}  (control: {stack.bc_sim.origin}/_sim)")
    table.add_row(
        "Twilio simulator", f"{stack.twilio_sim.base_url}  (control: {stack.twilio_sim.base_url}/_sim)"
    )
    table.add_row("Database", stack.database_url)
    table.add_row("JSON log", str(log_path))
    console.rule("[bold]ml-connector sandbox")
    console.print(table)


def print_summary(console: Console, report: ScenarioReport) -> None:
    from rich.table import Table
    from rich.text import Text

    sent = Table(title=f"What was sent ({len(report.messages)} messages)", title_justify="left")
    for name in ("#", "Rule", "Stage", "BC record", "Recipient", "Channel", "Status"):
        sent.add_column(name, no_wrap=True)
    sent.add_column("Note", overflow="fold", ratio=1)
    for index, line in enumerate(report.messages, start=1):
        sent.add_row(
            str(index),
            line.rule_id,
            line.stage,
            line.record,
            line.recipient,
            line.channel,
            Text(line.status, style=STATUS_STYLE.get(line.status, "")),
            line.note,
        )
    console.print(sent)

    counts = ", ".join(f"{status} {n}" for status, n in sorted(report.by_status().items()))
    console.print(f"By status: {counts}")

    rules = Table(title="Shipped rules", title_justify="left")
    rules.add_column("Rule")
    rules.add_column("Messages", justify="right")
    rules.add_column("Fired")
    for rule in report.rules:
        n = report.fired.get(rule, 0)
        rules.add_row(rule, str(n), Text("yes", style="green") if n else Text("NO", style="bold red"))
    console.print(rules)

    for check, ok in report.checks.items():
        mark = Text("  ok  ", style="bold green") if ok else Text(" FAIL ", style="bold white on red")
        console.print(Text.assemble(mark, " ", check))


async def _wait_for_ctrl_c() -> None:
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        await stop.wait()
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)


async def _sandbox(args: argparse.Namespace) -> int:
    from datetime import UTC, datetime, time

    from cryptography.fernet import Fernet
    from rich.console import Console
    from rich.text import Text

    from server.runtime.clock import OffsetClock
    from server.runtime.logs import configure_logging
    from server.sandbox.scenario import DEMO_HOUR_UTC, SCENARIOS, demo_start, run_scenario, scenario_settings
    from server.sandbox.stack import Stack
    from server.settings import REPO_ROOT
    from server.workers import start_workers, stop_workers

    # A pipe or CI log is not a terminal: rich would wrap the summary at 80 columns.
    console = Console() if sys.stdout.isatty() else Console(width=160)
    if args.scenario != "none" and args.scenario not in SCENARIOS:
        console.print(
            f"sandbox: unknown scenario {args.scenario!r}; known: none, {', '.join(sorted(SCENARIOS))}"
        )
        return 2
    var_dir: Path = args.var_dir or REPO_ROOT / "var"
    database_url = _fresh_database(var_dir)
    log_path = var_dir / "sandbox.log"
    log_file = log_path.open("w", encoding="utf-8")
    configure_logging("INFO", stream=log_file)

    # The simulated business day starts on a Wednesday at 17:00 UTC (see scenario.DEMO_HOUR_UTC)
    # and then runs in real time; the scenario moves it forward when its story needs days to pass.
    real_now = datetime.now(UTC)
    start = datetime.combine(demo_start(real_now.date()), time(DEMO_HOUR_UTC), tzinfo=UTC)
    clock = OffsetClock(start - real_now)
    stack = Stack(
        database_url=database_url,
        clock=clock,
        settings_overrides=scenario_settings(Fernet.generate_key().decode()),
        port=args.port,
    )
    try:
        await stack.start()
    except OSError as exc:
        console.print(f"sandbox: cannot listen on port {args.port}: {exc.strerror or exc}")
        log_file.close()
        return 2
    exit_code = 0
    try:
        where_to_look(console, stack, log_path)
        if args.scenario != "none":
            console.rule(f"[bold]Scenario: {args.scenario}")
            report = await run_scenario(
                stack, args.scenario, clock=clock, say=lambda text: console.print(Text(text))
            )
            console.rule("[bold]Summary")
            print_summary(console, report)
            exit_code = 0 if report.ok else 1
        if not args.exit_after:
            await start_workers(stack.services)
            console.rule()
            console.print(
                Text.assemble(
                    ("Serving. ", "bold"),
                    f"Audit: {stack.url}/audit/login#token={stack.api_token}\n"
                    "Workers are running; change records through the BC simulator's control API. "
                    "Press Ctrl-C to stop.",
                )
            )
            await _wait_for_ctrl_c()
            exit_code = 0
    finally:
        await stop_workers(stack.services)
        await stack.stop()
        log_file.close()
    return exit_code
