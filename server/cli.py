"""The `ml-connector` command line.

Each command group lives in its own module under server/commands/ and exposes `register(subparsers)`. Modules are imported only to build the parser; heavy imports stay
inside the command functions so `ml-connector rules lint` starts fast.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from types import ModuleType

from server.commands import changes, check, credentials, messages, pause, rules, sandbox, serve, simulate

# Command groups, in `--help` order. Each module defines `register(subparsers) -> None` and sets
# `func` on its parsers (a callable taking the parsed namespace and returning an exit code).
COMMAND_GROUPS: tuple[ModuleType, ...] = (
    rules,
    simulate,
    serve,
    pause,
    messages,
    credentials,
    changes,
    check,
    sandbox,
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="ml-connector",
        description="Business Central events -> rules -> Twilio messages.",
    )
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    subparsers.required = True
    for group in COMMAND_GROUPS:
        group.register(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    func: Callable[[argparse.Namespace], int] = args.func
    try:
        return func(args)
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
