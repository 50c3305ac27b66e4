"""Hostile YAML is refused quickly and with a location; the schema file never drifts from the model."""

from __future__ import annotations

import json
from pathlib import Path

import jsonschema
import pytest
import yaml

from engine.loader import RuleSetError, load_ruleset
from engine.model import rule_json_schema, rule_json_schema_text
from engine.rulefile import compile_rule_text
from engine.yamlpos import parse_yaml


def billion_laughs(levels: int = 9) -> str:
    lines = ['a0: &a0 ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]']
    lines += [f"a{i}: &a{i} [" + ",".join([f"*a{i - 1}"] * 9) + "]" for i in range(1, levels)]
    return "version: 1\n" + "\n".join(lines) + "\n"


@pytest.mark.timeout(10)
def test_billion_laughs_is_refused_without_expanding() -> None:
    doc, issues = parse_yaml(billion_laughs())
    assert doc is None
    assert [(i.code, i.message) for i in issues] == [
        ("ML006", "more than 20000 values after expanding aliases")
    ]


def test_deep_nesting_is_refused() -> None:
    doc, issues = parse_yaml("version: 1\nx: " + "[" * 200 + "]" * 200 + "\n")
    assert doc is None
    assert issues[0].code == "ML006"
    assert issues[0].message == "nesting deeper than 40 levels"
    assert issues[0].position.line == 2


def test_recursive_alias_is_refused() -> None:
    doc, issues = parse_yaml("version: 1\nx: &x [*x]\n")
    assert doc is None
    assert issues[0].code == "ML006"


@pytest.mark.parametrize(
    "tag",
    ["!!python/object/apply:os.system ['id']", "!!python/name:os.system", "!!binary aGVsbG8=", "!custom 1"],
)
def test_tags_are_refused(tag: str) -> None:
    doc, issues = parse_yaml(f"version: 1\ndescription: {tag}\n")
    assert doc is None
    assert issues[0].code == "ML005"
    assert (issues[0].position.line, issues[0].position.col) == (2, 14)


def test_large_file_is_refused() -> None:
    doc, issues = parse_yaml("version: 1\n" + "# padding\n" * 30_000)
    assert doc is None
    assert issues[0].code == "ML006"


def test_dates_stay_text_and_traps_are_reported() -> None:
    doc, issues = parse_yaml("due: 2026-03-16\nregion: NO\nflag: yes\nok: true\n")
    assert doc is not None
    assert doc.data == {"due": "2026-03-16", "region": False, "flag": True, "ok": True}
    assert [(i.code, i.position.line) for i in issues] == [("ML004", 2), ("ML004", 3)]


def test_two_documents_are_refused() -> None:
    result = compile_rule_text("version: 1\n---\nversion: 1\n", "rules/x.yaml")
    assert [(d.code, d.line) for d in result.diagnostics] == [("ML002", 2)]


def test_load_ruleset_refuses_to_start_on_errors(tmp_path: Path, repo_root: Path) -> None:
    (tmp_path / "bad.yaml").write_text("version: 1\nid: bad\n")
    with pytest.raises(RuleSetError) as caught:
        load_ruleset(tmp_path, repo_root / "templates")
    codes = {d.code for d in caught.value.diagnostics}
    assert "ML102" in codes
    assert "bad.yaml:1:1: ML102 missing required key 'description' [missing-key]" in str(caught.value)


def test_schema_file_matches_the_model(repo_root: Path) -> None:
    on_disk = (repo_root / "schema" / "rule.schema.json").read_text(encoding="utf-8")
    assert on_disk == rule_json_schema_text(), "schema drifted: run `ml-connector rules schema`"


def test_shipped_rules_validate_against_the_schema(repo_root: Path) -> None:
    schema = rule_json_schema()
    jsonschema.Draft202012Validator.check_schema(schema)
    validator = jsonschema.Draft202012Validator(schema)
    for path in sorted((repo_root / "rules").glob("*.yaml")):
        text = path.read_text(encoding="utf-8")
        assert text.startswith("# yaml-language-server: $schema=../schema/rule.schema.json\n"), path.name
        errors = [e.message for e in validator.iter_errors(yaml.safe_load(text))]
        assert errors == [], path.name
    # The schema lists the catalogue's entities and the channel table.
    text = json.dumps(schema)
    assert '"salesInvoices"' in text and '"voice"' in text
