"""`ml-connector messages resolve JOB --sent SID | --not-sent --reason TEXT`: decide a send the
reconciler left in 'needs_review' (it could prove neither that Twilio holds the message nor that it
does not).

Look the message up at Twilio first (the console's Messaging logs, or the API's Messages list for
the recipient). `--sent SID` records that message as the job's, after checking at Twilio that the
SID exists and went to the job's recipient; `--not-sent` puts the job back to be sent once more.
Each writes one audit entry with who (your login) and why (--reason). Works on the database in
MLC_DATABASE_URL, like `pause`.
"""

from __future__ import annotations

import argparse
import asyncio
import getpass
import sys
from typing import Any

EXIT_OK, EXIT_REFUSED, EXIT_UNREACHABLE = 0, 1, 2


def register(subparsers: Any) -> None:
    group = subparsers.add_parser("messages", help="operator actions on outbox messages")
    commands = group.add_subparsers(dest="messages_command", metavar="SUBCOMMAND")
    commands.required = True
    resolve = commands.add_parser("resolve", help="decide a message left in 'needs_review'")
    resolve.add_argument("job", help="the job id (the audit pages and /api/messages show it)")
    which = resolve.add_mutually_exclusive_group(required=True)
    which.add_argument("--sent", metavar="SID", help="Twilio holds it: the message SID (SM...)")
    which.add_argument("--not-sent", action="store_true", help="Twilio has no such message: send it")
    resolve.add_argument("--reason", required=True, help="why (kept in the audit log)")
    resolve.add_argument("--by", help="who decides (default: your login name)")
    resolve.set_defaults(func=run_resolve)


def _actor(given: str | None) -> str:
    if given:
        return given
    try:
        return f"cli:{getpass.getuser()}"
    except (KeyError, OSError):
        return "cli"


def run_resolve(args: argparse.Namespace) -> int:
    from server.credentials import apply_stored_credentials
    from server.runtime.clock import SystemClock
    from server.settings import load_settings
    from server.store import outbox
    from server.store.db import create_db_engine, read_scope, session_scope
    from server.store.migrate import upgrade_database

    reason = args.reason.strip()
    if not reason:
        print("error: --reason: say why (it is kept in the audit log)", file=sys.stderr)
        return EXIT_REFUSED
    settings = load_settings()
    engine = create_db_engine(settings.database_url)
    upgrade_database(engine)
    actor = _actor(args.by)
    try:
        with read_scope(engine) as session:
            recipient, channel = outbox.review_target(session, args.job)
        if args.not_sent:
            with session_scope(engine) as session:
                outbox.resolve_not_sent(
                    session, args.job, actor=actor, reason=reason, now=SystemClock().now()
                )
            print(f"{args.job}: not sent; queued to be sent once more (by {actor})")
            return EXIT_OK
        try:
            to, status = asyncio.run(_look_up(apply_stored_credentials(settings, engine), args.sent, channel))
        except LookupError as exc:
            print(f"error: --sent: {exc}", file=sys.stderr)
            return EXIT_REFUSED
        except OSError as exc:
            print(f"error: cannot ask Twilio about {args.sent}: {exc}", file=sys.stderr)
            return EXIT_UNREACHABLE
        if to != recipient:
            print(
                f"error: --sent: {args.sent} went to another number, not this job's recipient",
                file=sys.stderr,
            )
            return EXIT_REFUSED
        with session_scope(engine) as session:
            outbox.resolve_sent(
                session,
                args.job,
                sid=args.sent,
                twilio_status=status,
                actor=actor,
                reason=reason,
                now=SystemClock().now(),
            )
        print(f"{args.job}: sent as {args.sent} ({status}) (by {actor})")
        return EXIT_OK
    except outbox.ReviewError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_REFUSED
    finally:
        engine.dispose()


async def _look_up(settings: Any, sid: str, channel: str) -> tuple[str | None, str]:
    """The recipient and status of `sid` at Twilio. LookupError if Twilio has no such resource;
    OSError if Twilio cannot be asked now."""
    from server.twilio.client import TwilioClient, TwilioClientConfig
    from server.twilio.errors import DeliveryError, InvalidRequestError, NotFoundError

    async with TwilioClient(TwilioClientConfig.from_settings(settings.twilio)) as twilio:
        try:
            if channel == "voice":
                call = await twilio.fetch_call(sid)
                return call.to, call.status
            record = await twilio.fetch_message(sid)
            return record.to, record.status
        except (NotFoundError, InvalidRequestError) as exc:
            raise LookupError(f"Twilio has no {sid}: {exc}") from exc
        except DeliveryError as exc:
            raise OSError(str(exc)) from exc
