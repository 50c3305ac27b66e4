"""The rule author's commands as an outsider sees them: exit codes and output (syrupy snapshots)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from syrupy.assertion import SnapshotAssertion

from engine import records
from engine.records import RecordsError, iter_records
from server.cli import main

NOW = "2026-11-25T09:00:00Z"


@pytest.fixture(autouse=True)
def _in_repo(repo_root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(repo_root)


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_preview_table(capsys: pytest.CaptureFixture[str], snapshot: SnapshotAssertion) -> None:
    code, out, _ = run(capsys, "preview", "--records", "rules/samples/records.json", "--now", NOW)
    assert code == 0
    assert out == snapshot


def test_preview_json_fires_every_shipped_rule(
    capsys: pytest.CaptureFixture[str], snapshot: SnapshotAssertion
) -> None:
    code, out, err = run(
        capsys, "preview", "--records", "rules/samples/records.json", "--now", NOW, "--format", "json"
    )
    assert code == 0
    rows = [json.loads(line) for line in out.splitlines()]
    assert all(
        list(row)[:11]
        == [
            "rule",
            "entity",
            "record_id",
            "number",
            "fired",
            "reason",
            "channel",
            "to",
            "body",
            "segments",
            "job_id",
        ]
        for row in rows
    )
    fired = {row["rule"] for row in rows if row["fired"] and row["to"]}
    assert fired == {p.stem for p in Path("rules").glob("*.yaml")}
    assert "11 message(s) to send, 0 skipped" in err
    assert rows == snapshot


def test_preview_ndjson_with_previous_file(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    customer = {
        "id": "C1",
        "number": "C1",
        "displayName": "Acme",
        "currencyCode": "USD",
        "creditLimit": 100,
        "balanceDue": 150,
    }
    (tmp_path / "in.ndjson").write_text(json.dumps({"entity": "customers", "record": customer}) + "\n\n")
    (tmp_path / "prev.ndjson").write_text(
        json.dumps({"entity": "customers", "record": {**customer, "balanceDue": 90}}) + "\n"
    )
    code, out, _ = run(
        capsys,
        "preview",
        "--records",
        str(tmp_path / "in.ndjson"),
        "--now",
        NOW,
        "--format",
        "json",
        "--previous",
        str(tmp_path / "prev.ndjson"),
    )
    assert code == 0
    [row] = [json.loads(line) for line in out.splitlines()]
    assert row["fired"] is True and row["to"] == "+12065550118"
    assert row["reason"] == "creditLimit 100 > 0; balanceDue went from 90 (<= creditLimit 100) to 150 (> 100)"


def test_preview_bad_input_cannot_run(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    (tmp_path / "bad.ndjson").write_text('{"entity": "customers"}\n')
    code, _, err = run(capsys, "preview", "--records", str(tmp_path / "bad.ndjson"), "--now", NOW)
    assert code == 2
    assert err.strip() == f'{tmp_path / "bad.ndjson"}:1: expected {{"entity": "...", "record": {{...}}}}'
    code, _, err = run(capsys, "preview", "--records", "rules/samples/records.json", "--now", "tomorrow")
    assert code == 2


def test_lint_corpus_output(capsys: pytest.CaptureFixture[str], snapshot: SnapshotAssertion) -> None:
    code, out, err = run(capsys, "rules", "lint", "tests/engine/lint_cases", "--templates", "templates")
    assert code == 1
    assert out == snapshot
    assert "0 rule(s) loaded" in err


def test_lint_shipped_rules_clean(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "rules", "lint", "rules", "--format", "github")
    assert code == 0
    assert out.count("::notice ") == 9  # one per SMS template the rules use


def test_lint_explain(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "rules", "lint", "--explain", "ML004")
    assert code == 0
    assert 'region: "NO"' in out and "Bad:" in out
    assert run(capsys, "rules", "lint", "--explain", "ML999")[0] == 2


def test_rules_test_passes_and_fails(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    code, out, _ = run(capsys, "rules", "test", "rules/tests")
    assert code == 0
    assert out.strip().endswith("35/35 case(s) passed in 6 file(s)")
    wrong = tmp_path / "wrong.yaml"
    wrong.write_text(
        "version: 1\nnow: '2026-11-25T17:00:00Z'\ncases:\n"
        "  - name: expects silence but a reminder is due\n    entity: salesInvoices\n    event: sweep\n"
        "    record: {id: X, number: N, status: Open, remainingAmount: 5, dueDate: '2026-11-15',"
        " currencyCode: USD, customer: {displayName: A, phoneNumber: 503-555-0142, blocked: ' '}}\n"
        "    expect: []\n"
    )
    code, out, _ = run(capsys, "rules", "test", str(wrong), "--rules", "rules", "--templates", "templates")
    assert code == 1
    assert f"FAIL {wrong}:4: expects silence but a reminder is due" in out
    assert "invoice-overdue: unexpected message to '+15035550142'" in out


def test_schema_check(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    assert run(capsys, "rules", "schema", "--check")[0] == 0
    stale = tmp_path / "s.json"
    stale.write_text("{}")
    assert run(capsys, "rules", "schema", "--check", "--output", str(stale))[0] == 1


def test_grouped_json_streams_in_small_chunks(monkeypatch: pytest.MonkeyPatch, repo_root: Path) -> None:
    whole = json.loads((repo_root / "rules/samples/records.json").read_text())
    monkeypatch.setattr(records, "CHUNK", 7)
    seen = list(iter_records(repo_root / "rules/samples/records.json"))
    main_records = [(i.entity, i.record) for i in seen if not i.section]
    assert main_records == [(k, r) for k, v in whole.items() if k != "previous" for r in v]
    assert sum(1 for i in seen if i.section == "previous") == 5


def test_grouped_json_errors_name_the_file(tmp_path: Path) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text('{"customers": [{"id": 1}, 7]}')
    with pytest.raises(RecordsError, match="customers: each record must be an object"):
        list(iter_records(bad))


def test_rules_helpers_lists_every_registered_helper(capsys: pytest.CaptureFixture[str]) -> None:
    from engine.functions import HELPERS

    code, out, _ = run(capsys, "rules", "helpers")
    assert code == 0
    signatures = [line for line in out.splitlines() if not line.startswith(" ")]
    assert signatures == [helper.signature for helper in HELPERS.values()]
    assert "days_overdue(date) -> int | None" in signatures
