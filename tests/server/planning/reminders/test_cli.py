"""`ml-connector rules diff` between two commits of a temporary git repository, and `ml-connector pause`."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest

from server.cli import main

RECORDS = {
    "salesInvoices": [
        {
            "id": "inv-1",
            "number": "PS-1",
            "status": "Open",
            "dueDate": "2026-11-17",
            "remainingAmount": 120.0,
            "currencyCode": "USD",
            "customerId": "cust-1",
            "customer": {
                "id": "cust-1",
                "number": "C1",
                "displayName": "Acme",
                "phoneNumber": "503-555-0142",
                "blocked": " ",
            },
        },
        {
            "id": "inv-2",
            "number": "PS-2",
            "status": "Open",
            "dueDate": "2026-11-24",
            "remainingAmount": 80.0,
            "currencyCode": "USD",
            "customerId": "cust-2",
            "customer": {
                "id": "cust-2",
                "number": "C2",
                "displayName": "Birch",
                "phoneNumber": "503-555-0187",
                "blocked": " ",
            },
        },
    ]
}


def git(repo: Path, *args: str) -> None:
    subprocess.run(
        ["git", "-C", str(repo), "-c", "user.name=t", "-c", "user.email=t@example.invalid", *args],
        check=True,
        capture_output=True,
        timeout=30,
    )


@pytest.fixture
def repo(tmp_path: Path, repo_root: Path) -> Path:
    """A repository whose second commit moves the second ladder stage from 7 to 5 days and rewords it."""
    if shutil.which("git") is None:
        pytest.fail("git is required for rules diff")
    root = tmp_path / "repo"
    (root / "rules").mkdir(parents=True)
    shutil.copytree(repo_root / "templates", root / "templates")
    shutil.copy(repo_root / "rules" / "invoice-overdue.yaml", root / "rules")
    (root / "schema").mkdir()
    git(root, "init", "-q")
    git(root, "add", ".")
    git(root, "commit", "-q", "-m", "ladder")
    rule = root / "rules" / "invoice-overdue.yaml"
    text = rule.read_text(encoding="utf-8")
    rule.write_text(text.replace("  - days_overdue: 7\n", "  - days_overdue: 5\n"), encoding="utf-8")
    template = root / "templates" / "invoice-overdue.sms.j2"
    template.write_text(
        template.read_text(encoding="utf-8").replace("Please pay", "Kindly pay"), encoding="utf-8"
    )
    git(root, "commit", "-q", "-am", "earlier second reminder")
    (tmp_path / "records.json").write_text(json.dumps(RECORDS), encoding="utf-8")
    return root


def test_rules_diff_lists_added_removed_and_changed_messages(
    repo: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    records = str(repo.parent / "records.json")
    # PS-1 is 8 days overdue: stage 1 before, stage 7->5 after (5 + 2 grace = day 7). PS-2: 1 day, stage 1.
    code = main(
        [
            "rules",
            "diff",
            "HEAD~1",
            "HEAD",
            "--repo",
            str(repo),
            "--records",
            records,
            "--now",
            "2026-11-25T17:00:00Z",
        ]
    )
    out = capsys.readouterr().out
    assert code == 1  # messages change: CI can flag the pull request
    lines = out.splitlines()
    assert lines[-1] == "HEAD~1..HEAD: 0 added, 0 removed, 2 changed"
    assert "CHANGED  invoice-overdue: salesInvoices PS-1 -> +15035550142" in lines
    assert "         stage: 1 -> 5" in lines
    assert any(line.startswith("         + Acme: invoice PS-1") and "Kindly pay" in line for line in lines)
    assert "CHANGED  invoice-overdue: salesInvoices PS-2 -> +15035550187" in lines


def test_rules_diff_markdown_and_github_and_no_change(repo: Path, capsys: pytest.CaptureFixture[str]) -> None:
    records = str(repo.parent / "records.json")
    common = ["--repo", str(repo), "--records", records, "--now", "2026-11-25T17:00:00Z"]
    assert main(["rules", "diff", "HEAD~1", "HEAD", *common, "--format", "markdown"]) == 1
    out = capsys.readouterr().out
    assert out.startswith(
        "### Messages that change from `HEAD~1` to `HEAD`\n\n0 added, 0 removed, 2 changed\n"
    )
    assert "| ✏️ changed | `invoice-overdue` | salesInvoices PS-1 | +15035550142 |" in out
    assert main(["rules", "diff", "HEAD~1", "HEAD", *common, "--format", "github"]) == 1
    out = capsys.readouterr().out
    assert out.count("::notice file=rules/invoice-overdue.yaml,title=rules diff: changed message::") == 2
    assert main(["rules", "diff", "HEAD", "HEAD", *common]) == 0
    assert capsys.readouterr().out.strip() == "HEAD..HEAD: 0 added, 0 removed, 0 changed"


def test_rules_diff_refuses_an_unknown_ref(repo: Path, capsys: pytest.CaptureFixture[str]) -> None:
    records = str(repo.parent / "records.json")
    assert main(["rules", "diff", "nope", "HEAD", "--repo", str(repo), "--records", records]) == 2
    assert capsys.readouterr().err.startswith("error: nope: ")


def test_pause_commands(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("MLC_DATABASE_URL", f"sqlite:///{tmp_path / 'p.sqlite3'}")
    monkeypatch.setenv("MLC_BUSINESS_TIMEZONE", "Europe/London")
    assert main(["pause", "customer", "C0042", "--until", "2099-12-15", "--reason", "promise to pay"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("paused #1 customer C0042 until 2099-12-16T00:00:00+00:00 (promise to pay; by cli")
    assert main(["pause", "invoice", "PS-1", "--until", "2000-01-01"]) == 2
    assert "until: 2000-01-02T00:00:00+00:00 is not in the future" in capsys.readouterr().err
    assert main(["pause", "list", "--json"]) == 0
    [listed] = json.loads(capsys.readouterr().out)
    assert (listed["scope"], listed["subject"], listed["reason"]) == ("customer", "C0042", "promise to pay")
    assert main(["pause", "lift", "1"]) == 0
    assert main(["pause", "lift", "1"]) == 1
    capsys.readouterr()
    assert main(["pause", "list"]) == 0
    assert capsys.readouterr().out == ""
