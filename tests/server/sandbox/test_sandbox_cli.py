"""`ml-connector sandbox` as a person runs it: a real process, its printed summary, its exit code."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

pytestmark = pytest.mark.timeout(180)

RULES = (
    "credit-limit-crossed",
    "invoice-due-soon",
    "invoice-overdue",
    "payment-receipt",
    "purchase-invoice-approval",
    "purchase-order-changed",
)


def sandbox_command(var_dir: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "server.cli", "sandbox", "--var-dir", str(var_dir), *extra]


def environment() -> dict[str, str]:
    env = dict(os.environ)
    env["COLUMNS"] = "160"  # rich wraps to the terminal; a fixed width keeps rows on one line
    env.pop("MLC_DATABASE_URL", None)
    return env


def test_the_demo_reaches_its_summary_and_exits(tmp_path: Path, repo_root: Path) -> None:
    result = subprocess.run(
        sandbox_command(tmp_path, "--scenario", "demo", "--exit-after"),
        cwd=repo_root,
        env=environment(),
        capture_output=True,
        text=True,
        timeout=150,
    )
    out = result.stdout
    assert result.returncode == 0, out + result.stderr
    assert re.search(r"Audit pages\s+http://127\.0\.0\.1:\d+/audit/login#token=\S+", out)
    for rule in RULES:
        assert re.search(rf"│ {re.escape(rule)}\s+│\s+\d+ │ yes", out), rule
    for check in (
        "every shipped rule fired",
        "STOP honoured",
        "429 burst absorbed",
        "one send failed with Twilio 30005",
        "OTP change approved and written to BC",
    ):
        assert re.search(rf"ok\s+{re.escape(check)}", out), check
    assert "30005 Unknown destination handset" in out
    assert "+14155552671" not in out  # numbers are masked in the summary too
    # The JSON log went to the var dir, not the terminal, with secrets redacted.
    log = (tmp_path / "sandbox.log").read_text()
    assert '"request_id"' in log
    token = re.search(r"#token=(\S+)", out)
    assert token is not None and token.group(1) not in log
    assert (tmp_path / "sandbox.sqlite3").exists()


def test_without_exit_after_it_keeps_serving_until_ctrl_c(tmp_path: Path, repo_root: Path) -> None:
    process = subprocess.Popen(
        sandbox_command(tmp_path, "--scenario", "none"),
        cwd=repo_root,
        env=environment(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stdout is not None
        url = token = None
        deadline = time.monotonic() + 60
        lines: list[str] = []
        while time.monotonic() < deadline:
            line = process.stdout.readline()
            if not line:
                break
            lines.append(line)
            match = re.search(r"Audit: (http://127\.0\.0\.1:\d+)/audit/login#token=(\S+)", line)
            if match:
                url, token = match.groups()
                break
        assert url is not None and token is not None, "".join(lines)
        page = httpx.get(f"{url}/audit", headers={"Authorization": f"Bearer {token}"}, timeout=10)
        assert page.status_code == 200
        # The audit list is served. (Not "No messages": the demo company's overdue invoices are
        # planned by the sandbox's first worker passes, which race this first read.)
        assert "<h1>Messages</h1>" in page.text
        ready = httpx.get(f"{url}/ready", timeout=10).json()
        assert ready["checks"]["workers"] == "ok"  # the worker loops run while it serves
        process.send_signal(signal.SIGINT)
        assert process.wait(timeout=30) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(timeout=10)
