"""`ml-connector rules lint|test|schema` and `ml-connector preview`: the rule author's tools.

Heavy imports stay inside the command functions so the CLI starts fast.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

EXIT_CANNOT_RUN = 2


def _lint(args: argparse.Namespace) -> int:
    from engine.lint import EXIT_CANNOT_RUN as CANNOT_RUN
    from engine.lint import explain_code, format_diagnostics, lint_paths, summary

    if args.explain:
        text = explain_code(args.explain)
        if text is None:
            print(f"unknown code {args.explain!r}", file=sys.stderr)
            return CANNOT_RUN
        print(text)
        return 0
    paths = [Path(p) for p in (args.paths or ["rules"])]
    missing = [p for p in paths if not p.exists()]
    if missing:
        print(f"no such file or folder: {', '.join(map(str, missing))}", file=sys.stderr)
        return CANNOT_RUN
    report = lint_paths(
        paths, templates_dir=Path(args.templates) if args.templates else None, default_region=args.region
    )
    for line in format_diagnostics(report.diagnostics, args.format):
        print(line)
    if args.format == "text":
        print(summary(report), file=sys.stderr)
    return report.exit_code


def _test(args: argparse.Namespace) -> int:
    from engine.ruletests import run_rule_test_paths

    paths = [Path(p) for p in (args.paths or ["rules/tests"])]
    missing = [p for p in paths if not p.exists()]
    if missing:
        print(f"no such file or folder: {', '.join(map(str, missing))}", file=sys.stderr)
        return EXIT_CANNOT_RUN
    report = run_rule_test_paths(
        paths,
        rules_dir=Path(args.rules) if args.rules else None,
        templates_dir=Path(args.templates) if args.templates else None,
    )
    for line in report.lines(verbose=args.verbose):
        print(line)
    return report.exit_code


def _schema(args: argparse.Namespace) -> int:
    from engine.model import rule_json_schema_text

    text = rule_json_schema_text()
    target = Path(args.output)
    if args.check:
        current = target.read_text(encoding="utf-8") if target.exists() else ""
        if current != text:
            print(f"{target} is out of date; run `ml-connector rules schema`", file=sys.stderr)
            return 1
        return 0
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(text, encoding="utf-8")
    print(f"wrote {target}")
    return 0


def _preview(args: argparse.Namespace) -> int:
    from engine.preview import run_preview_command

    code: int = run_preview_command(
        records=Path(args.records),
        rules_dir=Path(args.rules),
        templates_dir=Path(args.templates) if args.templates else None,
        now=args.now,
        previous=Path(args.previous) if args.previous else None,
        fmt=args.format,
        region=args.region,
        pauses=Path(args.pauses) if args.pauses else None,
    )
    return code


def _helpers(_args: argparse.Namespace) -> int:
    from engine.functions import HELPERS

    for helper in HELPERS.values():
        summary = helper.doc.strip().splitlines()[0] if helper.doc else ""
        print(f"{helper.signature}\n    {summary}")
    return 0


def register(subparsers: Any) -> None:
    rules = subparsers.add_parser("rules", help="lint, test and describe rule files")
    which = rules.add_subparsers(dest="rules_command", metavar="SUBCOMMAND")
    which.required = True

    lint = which.add_parser(
        "lint", help="check rule files: schema, fields, expressions, templates, recipients"
    )
    lint.add_argument("paths", nargs="*", metavar="PATH", help="rule files or folders (default: rules)")
    lint.add_argument("--format", choices=("text", "github", "json"), default="text")
    lint.add_argument(
        "--explain", metavar="CODE", help="explain a diagnostic code with a bad and a good example"
    )
    lint.add_argument(
        "--templates", metavar="DIR", help="templates folder (default: templates/ beside the rules)"
    )
    lint.add_argument("--region", metavar="CC", help="default phone region for rules without one")
    lint.set_defaults(func=_lint)

    test = which.add_parser(
        "test", help="run rule test files (fixture records, fixed clock, expected messages)"
    )
    test.add_argument("paths", nargs="*", metavar="PATH", help="test files or folders (default: rules/tests)")
    test.add_argument(
        "--rules", metavar="DIR", help="rules folder (default: the test file's `rules:` or its parent)"
    )
    test.add_argument("--templates", metavar="DIR", help="templates folder")
    test.add_argument("-v", "--verbose", action="store_true", help="list every case, not only failures")
    test.set_defaults(func=_test)

    schema = which.add_parser("schema", help="write the rule-file JSON schema generated from the model")
    schema.add_argument("--output", default="schema/rule.schema.json", metavar="FILE")
    schema.add_argument("--check", action="store_true", help="exit 1 when the file differs (CI drift check)")
    schema.set_defaults(func=_schema)

    helpers = which.add_parser(
        "helpers", help="list the functions rule expressions may call, with what each returns"
    )
    helpers.set_defaults(func=_helpers)

    from server.commands.rulesdiff import register_diff

    register_diff(which)

    preview = subparsers.add_parser("preview", help="dry run: what the rules would send for some records")
    preview.add_argument(
        "--records", required=True, metavar="FILE", help="records as .json (by entity set) or .ndjson"
    )
    preview.add_argument("--rules", default="rules", metavar="DIR")
    preview.add_argument(
        "--templates", metavar="DIR", help="templates folder (default: templates/ beside the rules)"
    )
    preview.add_argument(
        "--now", metavar="ISO8601", help="the clock, e.g. 2026-11-25T09:00:00Z (default: now)"
    )
    preview.add_argument("--previous", metavar="FILE", help="last seen versions of records, same formats")
    preview.add_argument("--format", choices=("table", "json"), default="table")
    preview.add_argument("--region", metavar="CC", help="default phone region for rules without one")
    preview.add_argument(
        "--pauses", metavar="FILE", help="reminder pauses as JSON (`ml-connector pause list --json`)"
    )
    preview.set_defaults(func=_preview)
