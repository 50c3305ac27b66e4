"""`ml-connector credentials set|show|rotate-key|new-key`: BC and Twilio credentials, encrypted at rest.

Secrets are read from a prompt (a terminal) or from stdin as `name=value` lines (scripts), never
from argv: command lines end up in shell history and `ps` output. Non-secret fields may be options.
"""

from __future__ import annotations

import argparse
import getpass
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from server.credentials import Credentials, Kind
    from server.settings import Settings

OPTION_FIELDS: dict[str, tuple[str, ...]] = {
    "bc": ("tenant_id", "environment", "client_id", "companies"),
    "twilio": ("account_sid", "api_key_sid", "from_number", "messaging_service_sid", "verify_service_sid"),
}


def register(subparsers: Any) -> None:
    group = subparsers.add_parser("credentials", help="store BC and Twilio credentials encrypted at rest")
    commands = group.add_subparsers(dest="credentials_command", metavar="SUBCOMMAND")
    commands.required = True

    set_ = commands.add_parser(
        "set",
        help="store a credential set; secrets from a prompt or stdin ('name=value' lines), never argv",
    )
    kinds = set_.add_subparsers(dest="kind", metavar="bc|twilio")
    kinds.required = True
    for kind, fields in OPTION_FIELDS.items():
        parser = kinds.add_parser(kind, help=f"{kind} credentials")
        for name in fields:
            parser.add_argument(f"--{name.replace('_', '-')}", dest=name)
        parser.set_defaults(func=run_set)

    show = commands.add_parser("show", help="show the credentials in use, secrets masked")
    show.add_argument("kind", nargs="?", choices=["bc", "twilio"])
    show.set_defaults(func=run_show)

    rotate = commands.add_parser(
        "rotate-key", help="re-encrypt every stored set with the first configured key"
    )
    rotate.set_defaults(func=run_rotate)

    new_key = commands.add_parser(
        "new-key", help="put a new Fernet key first in a key file (0600), keeping the old keys"
    )
    new_key.add_argument("--file", type=Path, required=True, help="the key file (MLC_SECRET_KEY_FILE)")
    new_key.set_defaults(func=run_new_key)


def _actor() -> str:
    try:
        return f"cli:{getpass.getuser()}"
    except (KeyError, OSError):
        return "cli"


def _open(settings: Settings) -> Any:
    from server.store.db import create_db_engine
    from server.store.migrate import upgrade_database

    engine = create_db_engine(settings.database_url)
    upgrade_database(engine)
    return engine


def effective_settings() -> Settings:
    """Settings with stored credentials laid over the environment's (what the service uses)."""
    from server.credentials import apply_stored_credentials
    from server.runtime.logs import register_secrets
    from server.services import secret_values
    from server.settings import load_settings

    settings = load_settings()
    engine = _open(settings)
    try:
        settings = apply_stored_credentials(settings, engine)
    finally:
        engine.dispose()
    register_secrets(secret_values(settings))
    return settings


def read_secrets(kind: Kind, stdin: Any = None) -> dict[str, str]:
    """Secret values by field: a prompt per field on a terminal, else `name=value` lines on stdin.

    An empty answer keeps the stored value. With one secret field a bare line is that secret.
    """
    from server.credentials import CredentialError, secret_fields

    stream = stdin or sys.stdin
    names = secret_fields(kind)
    values: dict[str, str] = {}
    if stream.isatty():
        for name in names:
            value = getpass.getpass(f"{name} (empty keeps the current value): ")
            if value:
                values[name] = value
        return values
    for number, raw in enumerate(stream.read().splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        name, sep, value = line.partition("=")
        if not sep:
            if len(names) != 1:
                raise CredentialError(
                    f"stdin line {number}: expected name=value with name one of {', '.join(names)}"
                )
            name, value = names[0], line
        name = name.strip()
        if name not in names:
            raise CredentialError(
                f"stdin line {number}: unknown secret {name!r}; expected one of {', '.join(names)}"
            )
        values[name] = value.strip()
    return values


def build_credentials(
    kind: Kind, base: Credentials, options: dict[str, Any], secrets: dict[str, str]
) -> Credentials:
    from pydantic import SecretStr

    from server.credentials import MODELS

    update: dict[str, Any] = {}
    for name in OPTION_FIELDS[kind]:
        value = options.get(name)
        if value is None:
            continue
        update[name] = (
            [c.strip() for c in value.split(",") if c.strip()] if name == "companies" else value.strip()
        )
    update.update({name: SecretStr(value) for name, value in secrets.items()})
    data = {**base.model_dump(), **update}
    return MODELS[kind].model_validate(data)


def run_set(args: argparse.Namespace) -> int:
    from server.credentials import (
        CredentialError,
        CredentialStore,
        credentials_from_settings,
        load_keys,
    )
    from server.runtime.clock import SystemClock
    from server.settings import load_settings

    kind: Kind = args.kind
    settings = load_settings()
    try:
        keys = load_keys(settings)
        engine = _open(settings)
        try:
            store = CredentialStore(engine, keys)
            store.cipher()  # fail before reading secrets when no key is configured
            base = store.load(kind) or credentials_from_settings(settings, kind)
            secrets = read_secrets(kind)
            credentials = build_credentials(kind, base, vars(args), secrets)
            store.save(credentials, actor=_actor(), now=SystemClock().now())
        finally:
            engine.dispose()
    except CredentialError as exc:
        print(f"credentials set {kind}: {exc}", file=sys.stderr)
        return 2
    changed = sorted({n for n in OPTION_FIELDS[kind] if getattr(args, n) is not None} | set(secrets))
    print(f"stored {kind} credentials encrypted ({', '.join(changed) or 'no fields changed'})")
    return 0


def run_show(args: argparse.Namespace) -> int:
    from rich.console import Console
    from rich.table import Table

    from server.credentials import (
        KINDS,
        CredentialError,
        CredentialStore,
        credentials_from_settings,
        load_keys,
        masked,
    )
    from server.settings import load_settings

    settings = load_settings()
    table = Table(title="credentials (secrets masked)")
    for column in ("Set", "Field", "Value", "Source"):
        table.add_column(column, overflow="fold")
    try:
        engine = _open(settings)
        try:
            store = CredentialStore(engine, load_keys(settings))
            for kind in [args.kind] if args.kind else list(KINDS):
                stored = store.load(kind) if kind in store.stored_kinds() else None
                source = "database (encrypted)" if stored is not None else "environment"
                shown = masked(stored if stored is not None else credentials_from_settings(settings, kind))
                for name, value in shown.items():
                    text = ", ".join(value) if isinstance(value, list) else str(value)
                    table.add_row(kind, name, text, source)
        finally:
            engine.dispose()
    except CredentialError as exc:
        print(f"credentials show: {exc}", file=sys.stderr)
        return 2
    Console().print(table)
    return 0


def run_rotate(args: argparse.Namespace) -> int:
    from server.credentials import CredentialError, CredentialStore, load_keys
    from server.runtime.clock import SystemClock
    from server.settings import load_settings

    settings = load_settings()
    try:
        engine = _open(settings)
        try:
            count = CredentialStore(engine, load_keys(settings)).rotate(
                actor=_actor(), now=SystemClock().now()
            )
        finally:
            engine.dispose()
    except CredentialError as exc:
        print(f"credentials rotate-key: {exc}", file=sys.stderr)
        return 2
    print(f"re-encrypted {count} credential set(s) with the first key; older keys may now be removed")
    return 0


def run_new_key(args: argparse.Namespace) -> int:
    from server.credentials import CredentialError, write_new_key

    try:
        rotated = write_new_key(args.file)
    except CredentialError as exc:
        print(f"credentials new-key: {exc}", file=sys.stderr)
        return 2
    if rotated:
        print(f"new key first in {args.file}; now run: ml-connector credentials rotate-key")
    else:
        print(f"created {args.file} (mode 0600); set MLC_SECRET_KEY_FILE={args.file}")
    return 0
