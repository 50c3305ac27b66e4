"""`ml-connector rules diff REF_A REF_B --records FILE --now ...`: the git side of engine.diff.

Each ref's rules/ and templates/ are exported with `git archive` into a temporary folder (the
working tree is never touched), loaded like `rules lint` loads them, and previewed over the same
records. Exit codes: 0 no change, 1 messages change (so CI can flag the pull request), 2 could
not run (unknown ref, rules that do not load, bad input).
"""

from __future__ import annotations

import argparse
import io
import shutil
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path
from typing import Any

EXIT_SAME, EXIT_CHANGED, EXIT_CANNOT_RUN = 0, 1, 2


class GitError(RuntimeError):
    pass


def git(repo: Path, *args: str) -> bytes:
    exe = shutil.which("git")
    if exe is None:
        raise GitError("git is not installed (rules diff reads both versions from git)")
    # A fixed executable and an argument list, no shell: refs cannot inject commands.
    done = subprocess.run([exe, "-C", str(repo), *args], capture_output=True, check=False, timeout=60)  # noqa: S603
    if done.returncode != 0:
        raise GitError(done.stderr.decode("utf-8", "replace").strip() or f"git {' '.join(args)} failed")
    return done.stdout


def export_ref(repo: Path, ref: str, paths: list[str], target: Path) -> None:
    """Write `paths` as they are at `ref` under `target` (no checkout)."""
    git(repo, "rev-parse", "--verify", "--quiet", f"{ref}^{{commit}}")
    present = [p for p in paths if git(repo, "ls-tree", "--name-only", ref, "--", p).strip()]
    if not present:
        raise GitError(f"{ref} has none of {', '.join(paths)}")
    data = git(repo, "archive", "--format=tar", ref, "--", *present)
    with tarfile.open(fileobj=io.BytesIO(data)) as archive:
        archive.extractall(target, filter="data")  # refuses absolute paths and links out of target


def _run(args: argparse.Namespace) -> int:
    from engine.diff import diff_rulesets, format_changes
    from engine.lint import format_diagnostics
    from engine.loader import load_rules
    from engine.preview import parse_now
    from engine.records import RecordsError

    repo_arg = Path(args.repo)
    try:
        clock = parse_now(args.now)
        repo = Path(git(repo_arg, "rev-parse", "--show-toplevel").decode().strip())
    except (ValueError, GitError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_CANNOT_RUN
    records = Path(args.records)
    if not records.is_file():
        print(f"error: no such file: {records}", file=sys.stderr)
        return EXIT_CANNOT_RUN
    rulesets = []
    with tempfile.TemporaryDirectory(prefix="mlc-diff-") as tmp:
        for index, ref in enumerate((args.ref_a, args.ref_b)):
            root = Path(tmp) / str(index)
            root.mkdir()
            try:
                export_ref(repo, ref, [args.rules, args.templates], root)
            except GitError as exc:
                print(f"error: {ref}: {exc}", file=sys.stderr)
                return EXIT_CANNOT_RUN
            ruleset, diagnostics = load_rules(
                [root / args.rules], templates_dir=root / args.templates, default_region=args.region
            )
            errors = [d for d in diagnostics if d.severity == "error"]
            if errors:
                for line in format_diagnostics(errors, "text"):
                    print(f"{ref}: {line.replace(str(root) + '/', '')}", file=sys.stderr)
                return EXIT_CANNOT_RUN
            rulesets.append(ruleset)
        try:
            changes = list(
                diff_rulesets(
                    records,
                    rulesets[0],
                    rulesets[1],
                    clock,
                    previous_path=Path(args.previous) if args.previous else None,
                )
            )
        except RecordsError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return EXIT_CANNOT_RUN
        # Rule files are named as in the repository, not the temporary export.
        for change in changes:
            if change.source:
                object.__setattr__(change, "source", _relative(change.source, Path(tmp)))
    for line in format_changes(changes, args.format, ref_a=args.ref_a, ref_b=args.ref_b):
        print(line)
    return EXIT_CHANGED if changes else EXIT_SAME


def _relative(source: str, tmp: Path) -> str:
    path = Path(source)
    try:
        return str(Path(*path.relative_to(tmp).parts[1:]))
    except ValueError:
        return source


def register_diff(which: Any) -> None:
    diff = which.add_parser(
        "diff", help="what messages change between two git refs of the rules (for a pull request)"
    )
    diff.add_argument("ref_a", metavar="REF_A", help="the base, e.g. origin/main")
    diff.add_argument("ref_b", metavar="REF_B", help="the change, e.g. HEAD")
    diff.add_argument("--records", required=True, metavar="FILE", help="records as .json or .ndjson")
    diff.add_argument("--now", metavar="ISO8601", help="the clock (default: now)")
    diff.add_argument("--previous", metavar="FILE", help="last seen versions of records")
    diff.add_argument("--format", choices=("text", "markdown", "github"), default="text")
    diff.add_argument("--repo", default=".", metavar="DIR", help="the git repository (default: here)")
    diff.add_argument("--rules", default="rules", metavar="PATH", help="rules folder inside the repo")
    diff.add_argument(
        "--templates", default="templates", metavar="PATH", help="templates folder inside the repo"
    )
    diff.add_argument("--region", metavar="CC", help="default phone region for rules without one")
    diff.set_defaults(func=_run)
