"""`ml-connector pause customer|invoice SUBJECT --until DATE --reason TEXT`, `pause list`, `pause lift ID`.

Works on the database in MLC_DATABASE_URL (migrated first, like `serve`).
"""

from __future__ import annotations

import argparse
import getpass
import sys
from typing import Any


def _open() -> Any:
    from server.settings import load_settings
    from server.store.db import create_db_engine
    from server.store.migrate import upgrade_database

    settings = load_settings()
    engine = create_db_engine(settings.database_url)
    upgrade_database(engine)
    return settings, engine


def _actor() -> str:
    try:
        return f"cli:{getpass.getuser()}"
    except (KeyError, OSError):
        return "cli"


def _add(args: argparse.Namespace) -> int:
    from zoneinfo import ZoneInfo

    from server.runtime.clock import SystemClock
    from server.store.db import session_scope
    from server.store.pauses import PauseError, add_pause, describe_rows, parse_until

    settings, engine = _open()
    now = SystemClock().now()
    try:
        until = parse_until(args.until, ZoneInfo(settings.business_timezone))
        with session_scope(engine) as session:
            row = add_pause(
                session,
                scope=args.scope,
                subject=args.subject,
                until=until,
                reason=args.reason,
                created_by=_actor(),
                now=now,
                company_id=args.company,
            )
            print("paused " + describe_rows([row], now=now)[0])
    except PauseError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    finally:
        engine.dispose()
    return 0


def _list(args: argparse.Namespace) -> int:
    from server.runtime.clock import SystemClock
    from server.store.db import read_scope
    from server.store.pauses import describe_rows, list_pauses

    _, engine = _open()
    now = SystemClock().now()
    try:
        with read_scope(engine) as session:
            rows = list_pauses(session, now=now, include_ended=args.all)
            if args.json:
                import json

                items = [
                    {
                        "id": r.id,
                        "scope": r.scope,
                        "subject": r.subject,
                        "company_id": r.company_id,
                        "until": r.until.isoformat(),
                        "reason": r.reason,
                        "lifted_at": r.lifted_at.isoformat() if r.lifted_at else None,
                    }
                    for r in rows
                ]
                print(json.dumps(items, indent=2))
            else:
                for line in describe_rows(rows, now=now):
                    print(line)
            print(f"{len(rows)} pause(s)", file=sys.stderr)
    finally:
        engine.dispose()
    return 0


def _lift(args: argparse.Namespace) -> int:
    from server.runtime.clock import SystemClock
    from server.store.db import session_scope
    from server.store.pauses import describe_rows, lift_pause

    _, engine = _open()
    now = SystemClock().now()
    try:
        with session_scope(engine) as session:
            row = lift_pause(session, args.id, by=_actor(), now=now)
            if row is None:
                print(f"error: no active pause #{args.id}", file=sys.stderr)
                return 1
            print("lifted " + describe_rows([row], now=now)[0])
    finally:
        engine.dispose()
    return 0


def register(subparsers: Any) -> None:
    pause = subparsers.add_parser("pause", help="pause reminders for a customer or an invoice")
    commands = pause.add_subparsers(dest="pause_command", metavar="WHAT")
    commands.required = True
    for scope in ("customer", "invoice"):
        p = commands.add_parser(scope, help=f"pause reminders for one {scope}")
        p.add_argument(
            "subject",
            help=f"the {scope}'s number (e.g. {'C0042' if scope == 'customer' else 'PS-INV104187'}) or BC id",
        )
        p.add_argument(
            "--until", required=True, help="a date (through that day) or an ISO date-time with offset"
        )
        p.add_argument("--reason", default="", help='e.g. "promise to pay"')
        p.add_argument("--company", default=None, help="BC company id (default: every company)")
        p.set_defaults(func=_add, scope=scope)
    listing = commands.add_parser("list", help="active pauses")
    listing.add_argument("--all", action="store_true", help="include lifted and ended pauses")
    listing.add_argument("--json", action="store_true", help="JSON, as `preview --pauses` reads it")
    listing.set_defaults(func=_list)
    lift = commands.add_parser("lift", help="end a pause now")
    lift.add_argument("id", type=int)
    lift.set_defaults(func=_lift)
