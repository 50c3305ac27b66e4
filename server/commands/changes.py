"""`ml-connector changes propose|confirm|list|show|new-token`: the OTP-gated change flow for operators.

These talk to the running service's API (MLC_PUBLIC_BASE_URL or --url, bearer MLC_API_TOKEN), not
to the database. On a person's machine MLC_API_TOKEN is their personal token: the service resolves
it to their identity (MLC_API_IDENTITIES), which is who proposes and who confirms. The shared
service token proposes and confirms nothing. `new-token NAME` makes a personal token and prints
the hash the service is configured with (the token itself is never stored). The API is used, not
the database: the service holds the BC and Twilio clients and the one implementation of the
state machine, its validation and its audit trail; a second path straight into the tables could
drift from it, and would need BC and Twilio credentials on every operator's machine. The token and
the code never go on the command line (the code is prompted for, or read from stdin).
"""

from __future__ import annotations

import argparse
import getpass
import sys
from typing import Any

EXIT_OK, EXIT_REFUSED, EXIT_UNREACHABLE = 0, 1, 2


def register(subparsers: Any) -> None:
    group = subparsers.add_parser("changes", help="propose and confirm OTP-gated changes to BC records")
    group.add_argument("--url", help="the service's base URL (default: MLC_PUBLIC_BASE_URL)")
    commands = group.add_subparsers(dest="changes_command", metavar="SUBCOMMAND")
    commands.required = True

    propose = commands.add_parser("propose", help="propose a change; the approver gets a code")
    propose.add_argument("--entity", required=True, help="vendors, customers or vendorBankAccounts")
    propose.add_argument("--record", required=True, help="the BC record id (GUID)")
    propose.add_argument("--company", help="company id (needed when several are configured)")
    propose.add_argument(
        "--set", action="append", default=[], metavar="FIELD=VALUE", dest="assignments", help="repeatable"
    )
    propose.add_argument(
        "--approver", required=True, help="a role from MLC_CHANGES__APPROVER_ROLES (never a number)"
    )
    propose.add_argument("--channel", choices=["sms", "call"])
    propose.set_defaults(func=run_propose)

    confirm = commands.add_parser(
        "confirm", help="enter the code you received as the approver (prompted, or from stdin)"
    )
    confirm.add_argument("id", type=int)
    confirm.set_defaults(func=run_confirm)

    new_token = commands.add_parser(
        "new-token", help="make a personal API token; prints it once, and the hash to configure"
    )
    new_token.add_argument("identity", help="the person's identity, e.g. alice")
    new_token.set_defaults(func=run_new_token)

    list_ = commands.add_parser("list", help="recent changes, newest first")
    list_.add_argument("--status", action="append", help="repeatable")
    list_.add_argument("--limit", type=int, default=50)
    list_.set_defaults(func=run_list)

    show = commands.add_parser("show", help="one change")
    show.add_argument("id", type=int)
    show.set_defaults(func=run_show)


def _client(args: argparse.Namespace) -> Any:
    import httpx

    from server.settings import load_settings

    settings = load_settings()
    token = settings.api_token.get_secret_value()
    if not token:
        raise SystemExit("changes: set MLC_API_TOKEN (your personal API token) in the environment")
    base = args.url or settings.public_base_url
    return httpx.Client(
        base_url=base, headers={"Authorization": f"Bearer {token}"}, timeout=60.0, trust_env=False
    )


def _request(args: argparse.Namespace, method: str, path: str, **kwargs: Any) -> tuple[int, Any] | None:
    import httpx

    try:
        with _client(args) as http:
            response = http.request(method, path, **kwargs)
    except httpx.HTTPError as exc:
        print(f"changes: cannot reach the service: {type(exc).__name__}: {exc}", file=sys.stderr)
        return None
    try:
        body = response.json()
    except ValueError:
        body = {"detail": response.text}
    return response.status_code, body


def _print_change(change: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(show_header=False, title=f"change {change['id']}")
    for name in (
        "status",
        "entity",
        "company_id",
        "record_id",
        "approver",
        "approver_identity",
        "approver_role",
        "channel",
        "attempts",
        "requested_by",
        "reason",
        "created_at",
        "expires_at",
        "written_at",
    ):
        if change.get(name) is not None:
            table.add_row(name, str(change[name]))
    for field, value in change.get("changes", {}).items():
        table.add_row(f"changes.{field}", str(value))
    Console().print(table)


def run_propose(args: argparse.Namespace) -> int:
    changes: dict[str, str] = {}
    for item in args.assignments:
        field, sep, value = item.partition("=")
        if not sep or not field:
            print(f"changes propose: --set {item!r}: expected FIELD=VALUE", file=sys.stderr)
            return EXIT_REFUSED
        changes[field.strip()] = value
    body: dict[str, Any] = {
        "entity": args.entity,
        "record_id": args.record,
        "changes": changes,
        "approver": args.approver,
    }
    if args.company:
        body["company_id"] = args.company
    if args.channel:
        body["channel"] = args.channel
    answer = _request(args, "POST", "/api/changes", json=body)
    if answer is None:
        return EXIT_UNREACHABLE
    status, data = answer
    if status != 201:
        print(f"changes propose: HTTP {status}: {data.get('detail', data)}", file=sys.stderr)
        return EXIT_REFUSED
    _print_change(data)
    print(
        f"code sent to the approver by {data['channel']}; confirm with: ml-connector changes confirm {data['id']}"
    )
    return EXIT_OK


def read_code(stdin: Any = None) -> str:
    stream = stdin or sys.stdin
    if stream.isatty():
        return getpass.getpass("Code: ").strip()
    return stream.readline().strip()


def run_confirm(args: argparse.Namespace) -> int:
    code = read_code()
    if not code:
        print("changes confirm: no code given", file=sys.stderr)
        return EXIT_REFUSED
    body = {"code": code}
    answer = _request(args, "POST", f"/api/changes/{args.id}/confirm", json=body)
    if answer is None:
        return EXIT_UNREACHABLE
    status, data = answer
    if "change" not in data:
        print(f"changes confirm: HTTP {status}: {data.get('detail', data)}", file=sys.stderr)
        return EXIT_REFUSED
    _print_change(data["change"])
    print(f"{data['outcome']}: {data['message']}")
    return EXIT_OK if data["outcome"] == "written" else EXIT_REFUSED


def run_list(args: argparse.Namespace) -> int:
    from rich.console import Console
    from rich.table import Table

    params: dict[str, Any] = {"limit": args.limit}
    if args.status:
        params["status"] = args.status
    answer = _request(args, "GET", "/api/changes", params=params)
    if answer is None:
        return EXIT_UNREACHABLE
    status, data = answer
    if status != 200:
        print(f"changes list: HTTP {status}: {data.get('detail', data)}", file=sys.stderr)
        return EXIT_REFUSED
    table = Table(title="changes")
    for column in ("Id", "Status", "Entity", "Record", "Fields", "Approver", "Requested by", "Created"):
        table.add_column(column, overflow="fold")
    for item in data["items"]:
        table.add_row(
            str(item["id"]),
            item["status"],
            item["entity"],
            item["record_id"],
            ", ".join(sorted(item["changes"])),
            item.get("approver_identity") or item["approver_role"] or item["approver"],
            item["requested_by"],
            item["created_at"],
        )
    Console().print(table)
    return EXIT_OK


def run_show(args: argparse.Namespace) -> int:
    answer = _request(args, "GET", f"/api/changes/{args.id}")
    if answer is None:
        return EXIT_UNREACHABLE
    status, data = answer
    if status != 200:
        print(f"changes show: HTTP {status}: {data.get('detail', data)}", file=sys.stderr)
        return EXIT_REFUSED
    _print_change(data)
    return EXIT_OK


def run_new_token(args: argparse.Namespace) -> int:
    import hashlib
    import json
    import secrets

    from server.settings import IDENTITY_NAME, SERVICE_IDENTITY

    identity = args.identity.strip()
    if not IDENTITY_NAME.fullmatch(identity) or identity == SERVICE_IDENTITY:
        print(
            f"changes new-token: {identity!r} is not a personal identity name (letters, digits, . _ @ + -)",
            file=sys.stderr,
        )
        return EXIT_REFUSED
    token = secrets.token_urlsafe(32)
    digest = hashlib.sha256(token.encode("utf-8")).hexdigest()
    print(f"token for {identity} (give it to them; it is shown only this once): {token}")
    print(f"add to MLC_API_IDENTITIES: {json.dumps({identity: digest})}")
    return EXIT_OK
