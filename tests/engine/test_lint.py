"""Lint over a corpus of broken rule files (data files: each states its expected codes and lines)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from engine.diagnostics import explain, registry
from engine.lint import format_diagnostics, lint_paths
from engine.render import make_environment
from engine.rulefile import compile_rule_file

CASES = Path(__file__).with_name("lint_cases")
EXPECT = re.compile(r"^# expect: (ML\d{3}) (\d+)$", re.M)


@pytest.mark.parametrize("path", sorted(CASES.glob("*.yaml")), ids=lambda p: p.stem)
def test_lint_case(path: Path, repo_root: Path) -> None:
    expected = {(code, int(line)) for code, line in EXPECT.findall(path.read_text())}
    assert expected, f"{path.name} states no expectations"
    result = compile_rule_file(path, env=make_environment(repo_root / "templates"))
    found = {(d.code, d.line) for d in result.diagnostics if d.severity in {"error", "warning"}}
    assert found == expected, "\n".join(d.format_text() for d in result.diagnostics)
    assert result.rule is None


def test_shipped_rules_are_clean(repo_root: Path) -> None:
    report = lint_paths([repo_root / "rules"])
    assert [d.format_text() for d in report.diagnostics if d.severity != "info"] == []
    assert report.exit_code == 0
    assert len(report.ruleset) == 6
    # Every shipped SMS is one segment with the sample record.
    assert {(d.code, d.data["segments"]) for d in report.diagnostics} == {("ML253", 1)}


def test_messages_carry_did_you_mean(repo_root: Path) -> None:
    result = compile_rule_file(CASES / "unknown-fields.yaml", env=make_environment(repo_root / "templates"))
    texts = [d.format_text() for d in result.diagnostics]
    assert texts[0] == (
        f"{CASES / 'unknown-fields.yaml'}:11:5: ML350 unknown field 'dueDat' on salesInvoices "
        "(did you mean 'dueDate'?) [unknown-field]"
    )
    assert texts[2].endswith(
        "unknown-fields.yaml:13:36: ML302 unknown field 'blockd' on customers (the customer of a sales invoice) "
        "(did you mean 'blocked'?) [unknown-name]"
    )


def test_formats_render_the_same_record(repo_root: Path) -> None:
    report = lint_paths([CASES / "typo-keys.yaml"], templates_dir=repo_root / "templates")
    text = format_diagnostics(report.diagnostics, "text")
    github = format_diagnostics(report.diagnostics, "github")
    rows = [json.loads(line) for line in format_diagnostics(report.diagnostics, "json")]
    assert len(text) == len(github) == len(rows) == 3
    assert github[0].startswith("::error file=")
    assert (
        ",line=9,col=1,title=ML101 unknown-key::ML101 unknown key 'wehn' (did you mean 'when'?)" in github[0]
    )
    assert rows[0]["code"] == "ML101" and rows[0]["line"] == 9 and rows[0]["name"] == "unknown-key"
    assert report.exit_code == 1


def test_every_code_is_explained_with_examples() -> None:
    for code, info in registry().items():
        text = explain(code)
        assert text is not None and info.name in text
        assert re.fullmatch(r"[a-z0-9]+(-[a-z0-9]+)*", info.name), code
        assert "Bad:" in text and "Good:" in text, f"{code} lacks examples"


def test_no_rule_files_cannot_run(tmp_path: Path) -> None:
    report = lint_paths([tmp_path])
    assert report.exit_code == 2
    assert [d.code for d in report.diagnostics] == ["ML504"]
