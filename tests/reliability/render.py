"""Render the figures the reliability and security suites wrote (MLC_FIGURES_DIR) as docs/reliability.md.

MLC_FIGURES_DIR=var/figures .venv/bin/pytest tests/reliability tests/security
.venv/bin/python tests/reliability/render.py var/figures docs/reliability.md
"""

from __future__ import annotations

import json
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

PYTEST = ".venv/bin/pytest -q"
CRASH_TEST = {
    "change": "tests/reliability/test_crash_points.py::test_crash_during_an_otp_gated_write",
    "subscription": "tests/reliability/test_crash_points.py::test_crash_during_a_subscription_renewal",
}


def load(folder: Path) -> dict[str, dict[str, Any]]:
    return {p.stem: json.loads(p.read_text()) for p in sorted(folder.glob("*.json"))}


def crash_command(point: str, backend: str) -> str:
    test = CRASH_TEST.get(point.split(".")[0])
    if test is None:  # the message-path points crash one after another in one test per backend
        test = "tests/reliability/test_crash_points.py::test_crash_at_every_point_of_the_message_path"
        return f"`{PYTEST} '{test}[{backend}]'`"
    return f"`{PYTEST} '{test}[{backend}-{point}]'`"


def render(figures: dict[str, dict[str, Any]]) -> str:
    out = [
        "# Reliability and security figures",
        "",
        "Figures from the last run of `tests/reliability` and `tests/security` "
        f"({datetime.now(UTC).strftime('%Y-%m-%d %H:%M UTC')}), written by the tests themselves "
        "(`MLC_FIGURES_DIR`) and rendered by `tests/reliability/render.py`. The connector runs as a real "
        "`ml-connector serve` process against the BC and Twilio simulators; every figure is counted from "
        "outside: the Twilio simulator's messages and request log, the BC simulator's state and request log, "
        "and the audit API.",
        "",
        "Regenerate: `MLC_FIGURES_DIR=var/figures .venv/bin/pytest tests/reliability tests/security && "
        ".venv/bin/python tests/reliability/render.py var/figures docs/reliability.md`. Longer runs: "
        "`MLC_SOAK=10` (10x records and kills), `MLC_FUZZ_EXAMPLES=20000`, `MLC_KILL_SEED=N` replays a kill "
        "schedule.",
        "",
        "## Crash points x outcomes",
        "",
        "The process exits with `os._exit(86)` at the point (`MLC_CRASH_POINTS`), is restarted and settles.",
        "",
        "| crash point | backend | exit | expected | sent | duplicated | lost | final in audit | reproduce |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for key, f in figures.items():
        if not key.startswith("crash-"):
            continue
        if "expected" in f:
            final = f["audit_rows"] - f["not_final"]
            row = f"| {f['point']} | {f['backend']} | {f['exit']} | {f['expected']} | {f['sent']} | {f['duplicated']} | {f['lost']} | {final}/{f['audit_rows']} |"
        else:
            row = (
                f"| {f['point']} | {f['backend']} | {f['exit']} | approved change written "
                f"{f['approved_written']}x | BC PATCHes applied {f['bc_patches_applied']} | 0 | "
                f"unapproved written {f['unapproved_written']} | - |"
            )
        out.append(row + f" {crash_command(f['point'], f['backend'])} |")
    out += [
        "",
        "## Random SIGKILLs during a burst",
        "",
        "| backend | instances | records | kills survived | expected | sent | duplicated | lost | final in audit "
        "| seed | reproduce |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for key, f in figures.items():
        if key.startswith("random-kills-"):
            final = f["audit_rows"] - f["not_final"]
            instances = f.get("instances", 1)
            name = (
                f"test_random_sigkills_during_a_burst[{f['backend']}]"
                if instances == 1
                else "test_random_sigkills_of_two_instances_on_one_database[postgres]"
            )
            test = f"tests/reliability/test_random_kills.py::{name}"
            out.append(
                f"| {f['backend']} | {instances} | {f['records']} | {f['kills']} | {f['expected']} | {f['sent']} | "
                f"{f['duplicated']} | {f['lost']} | {final}/{f['audit_rows']} | {f['seed']} | "
                f"`MLC_KILL_SEED={f['seed']} {PYTEST} '{test}'` |"
            )
    out += [
        "",
        "## Database faults",
        "",
        "| fault | expected | sent | duplicated | lost | /ready during the fault | reproduce |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for key, f in figures.items():
        if key.startswith("db-"):
            test = (
                "test_postgres_restarted_mid_run"
                if "postgres" in key
                else "test_sqlite_locked_by_another_writer"
            )
            out.append(
                f"| {f['fault']} | {f['expected']} | {f['sent']} | {f['duplicated']} | {f['lost']} | 503 | "
                f"`{PYTEST} tests/reliability/test_database_faults.py::{test}` |"
            )
    out += [
        "",
        "## Faults from the outside world (during bursts, real process)",
        "",
        "| backend | faults | expected | sent | duplicated | lost | final in audit | reproduce |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for key, f in figures.items():
        if key.startswith("faults-"):
            final = f["audit_rows"] - f["not_final"]
            test = f"tests/reliability/test_outside_faults.py::test_twilio_and_bc_faults_during_bursts[{f['backend']}]"
            out.append(
                f"| {f['backend']} | {'; '.join(f['phases'])}; duplicate + out-of-order callbacks; a callback "
                f"for a message never sent; a record deleted before the fetch | {f['expected']} | {f['sent']} | "
                f"{f['duplicated']} | {f['lost']} | {final}/{f['audit_rows']} | `{PYTEST} '{test}'` |"
            )
    out += [
        "",
        "## Hostile input",
        "",
        "| suite | tried | outcome | reproduce |",
        "| --- | --- | --- | --- |",
    ]
    fuzz = figures.get("fuzz-http")
    if fuzz:
        out.append(
            f"| HTTP fuzz ({fuzz['operations']} operations from the OpenAPI document + pages) | {fuzz['cases']} cases | "
            f"5xx seen: {fuzz['five_xx']}; statuses {', '.join(map(str, fuzz['statuses']))}; nothing stored | "
            f"`MLC_FUZZ_EXAMPLES={fuzz['cases']} {PYTEST} tests/security/test_fuzz_http.py` |"
        )
    hooks = [figures.get("webhooks-twilio"), figures.get("webhooks-bc")]
    if all(hooks):
        out.append(
            f"| forged/unsigned/replayed webhooks | {hooks[0]['forged_or_replayed'] + hooks[1]['forged']} | "  # type: ignore[index]
            f"all refused (403), nothing stored | `{PYTEST} tests/security/test_webhooks.py` |"
        )
    rules = figures.get("hostile-rules")
    if rules:
        out.append(
            f"| hostile rule files (billion laughs, deep nesting, huge strings, python tags, NUL, ...) | "
            f"{rules['hostile_files']} | lint exit 1/2 with diagnostics, no crash or hang | "
            f"`{PYTEST} tests/security/test_hostile_rules.py -k hostile_rule_file` |"
        )
        out.append(
            f"| random rule files (hypothesis) | {rules['random_files']} | crashes: {rules['crashes']} | "
            f"`MLC_FUZZ_EXAMPLES={rules['random_files']} {PYTEST} tests/security/test_hostile_rules.py -k random` |"
        )
        out.append(
            f"| escape attempts (expressions {rules['expression_escapes']}, templates {rules['template_escapes']}; "
            "plus the corpus in tests/engine/test_expression_escapes.py) | "
            f"{rules['expression_escapes'] + rules['template_escapes']} | all refused at lint | "
            f"`{PYTEST} tests/security/test_hostile_rules.py tests/engine/test_expression_escapes.py` |"
        )
    out += [
        "",
        "## What these suites found (fixed, each with its test)",
        "",
        "- A send whose status callbacks arrived while the service was down stayed `queued` for ever: the "
        "reconciler now looks such sends up by SID (`MLC_STATUS_POLL_AFTER_SECONDS`).",
        "- An OTP change whose process died between the approval and the BC PATCH stayed `writing` for ever: a "
        "confirmation after `MLC_CHANGES__WRITE_LEASE_SECONDS` retries it with the same If-Match etag (BC applies "
        "it at most once).",
        "- A second change for the same approver got the same Twilio Verify verification (one code approved "
        "both; the proposal answered 500): now 409, one open change per approver.",
        "- `/ready` reported 'database unreachable' whenever a BC subscription existed (rows read after the "
        "session ended).",
        "- `/webhooks/bc` and the fetcher ran database calls on the event loop: a locked SQLite froze every "
        "request for 30 s; `/ready` now also probes SQLite's write lock.",
        "- `rules lint` crashed with a traceback on a NUL character and on an integer of over 4,300 digits.",
        "- Restart recovery waited out fixed leases (10-15 minutes); they are settings now "
        "(`MLC_CLAIM_SECONDS`, `MLC_SUBMIT_LEASE_SECONDS`).",
        "",
    ]
    return "\n".join(out)


# The sections below this line in OUTPUT.md are written by hand (what a run means, before/after
# comparisons); a new rendering keeps them as they are.
HAND_WRITTEN = (
    "<!-- Written by hand below this line: render.py keeps it when it writes the figures above. -->"
)


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print("usage: render.py FIGURES_DIR OUTPUT.md", file=sys.stderr)
        return 2
    output = Path(argv[1])
    kept = ""
    if output.exists() and HAND_WRITTEN in (old := output.read_text()):
        kept = "\n" + HAND_WRITTEN + old.split(HAND_WRITTEN, 1)[1]
    output.write_text(render(load(Path(argv[0]))) + kept)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
