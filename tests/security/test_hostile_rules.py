"""Hostile and random rule files: `rules lint` never crashes or hangs (exit 0/1/2 with diagnostics), and
`ml-connector serve` refuses an invalid rule set with the same diagnostics. Expression and template
escapes are refused at lint time (or bounded at run time, tests/engine covers the evaluator).

MLC_FUZZ_EXAMPLES scales the random part (default 300).
"""

from __future__ import annotations

import contextlib
import io
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from server.cli import main as cli_main

from .conftest import write_figures

pytestmark = pytest.mark.timeout(240)

REPO = Path(__file__).resolve().parents[2]
TEMPLATES = REPO / "templates"
EXAMPLES = int(os.environ.get("MLC_FUZZ_EXAMPLES", "300") or 300)
DIAGNOSTIC = re.compile(r"^\S+:\d+:\d+: ML\d{3} ", re.MULTILINE)

VALID_HEAD = """version: 1
id: {id}
description: hostile input
trigger: {{entity: salesInvoices, events: [sweep]}}
recipient: {{phone: "+44 7700 900123"}}
send: {{channel: sms, template: invoice-overdue.sms.j2}}
once_per: [id]
"""


def laughs(levels: int = 9) -> str:
    lines = ['a0: &a0 ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]']
    for n in range(1, levels + 1):
        refs = ",".join([f"*a{n - 1}"] * 9)
        lines.append(f"a{n}: &a{n} [{refs}]")
    return "version: 1\n" + "\n".join(lines) + "\n"


def with_when(rule_id: str, expr: str) -> str:
    return VALID_HEAD.format(id=rule_id) + f"when:\n  - expr: {yaml.safe_dump(expr).splitlines()[0]}\n"


HOSTILE: dict[str, str | bytes] = {
    "billion-laughs": laughs(),
    "billion-laughs-in-rule": VALID_HEAD.format(id="billion-laughs-in-rule").replace(
        "description: hostile input", "description: &x [" + ",".join(["lol"] * 50) + "]"
    )
    + "x: &y ["
    + ",".join(["*x"] * 50)
    + "]\nz: ["
    + ",".join(["*y"] * 50)
    + "]\n",
    "deep-lists": "version: 1\nid: " + "[" * 5000 + "]" * 5000 + "\n",
    "deep-maps": "version: 1\nid: " + "{a: " * 3000 + "1" + "}" * 3000 + "\n",
    "huge-string": "version: 1\nid: huge-string\ndescription: " + "x" * 5_000_000 + "\n",
    "huge-key-count": "version: 1\n" + "".join(f"k{n}: {n}\n" for n in range(50_000)),
    "python-object-apply": "!!python/object/apply:os.system ['touch /tmp/mlc-pwned']\n",
    "python-name": "version: 1\nid: !!python/name:os.system\n",
    "python-object-new": "version: !!python/object/new:subprocess.Popen [['id']]\n",
    "recursive-alias": "version: 1\nid: &a [*a]\n",
    "many-documents": "---\nversion: 1\n" * 20_000,
    "binary-junk": bytes(range(256)) * 64,
    "invalid-utf8": b"version: 1\nid: \xff\xfe\xfa\n",
    "nul-bytes": "version: 1\x00\nid: nul\x00bytes\n",
    "bom-and-tabs": "\ufeffversion: 1\n\tid: tabs\n",
    "unterminated": 'version: 1\nid: "unterminated\n',
    "yaml11-booleans": VALID_HEAD.format(id="yaml11-booleans") + "enabled: yes\nregion: NO\n",
    "duplicate-keys": VALID_HEAD.format(id="duplicate-keys") + "id: other\n",
    "empty": "",
    "only-comment": "# nothing here\n",
    "scalar-root": "just a string\n",
    "list-root": "- 1\n- 2\n",
    "int-overflow": "version: " + "9" * 5000 + "\n",
    "dunder-expr": with_when("dunder-expr", "status.__class__.__mro__[1].__subclasses__()"),
    "format-expr": with_when("format-expr", "'{0.__class__}'.format(status)"),
    "import-expr": with_when("import-expr", "__import__('os').system('id')"),
    "pow-expr": with_when("pow-expr", "9**9**9**9"),
    "repeat-expr": with_when("repeat-expr", "'x' * 10**9"),
    "lambda-expr": with_when("lambda-expr", "(lambda f: f(f))(lambda f: f(f))"),
    "walk-to-os": with_when("walk-to-os", "days_overdue.__globals__['os'].system('id')"),
}

TEMPLATE_ESCAPES = {
    "tpl-dunder": "{{ number.__class__.__mro__[1].__subclasses__() }}",
    "tpl-globals": "{{ lipsum.__globals__['os'].popen('id').read() }}",
    "tpl-cycler": "{{ cycler.__init__.__globals__.os.popen('id').read() }}",
    "tpl-format": "{{ '%s' % number.__class__ }}",
    "tpl-attr": "{{ number|attr('__class__') }}",
    "tpl-range": "{% for x in range(10**9) %}{{ x }}{% endfor %}",
    "tpl-repeat": "{{ 'x' * 10**9 }}",
    "tpl-recursion": "{% macro f() %}{{ f() }}{% endmacro %}{{ f() }}",
    "tpl-config": "{{ config.items() }}{{ self.__init__.__globals__ }}",
}


def lint(*args: str) -> tuple[int, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = cli_main(["rules", "lint", *args])
    return code, out.getvalue() + err.getvalue()


def write_rule(folder: Path, name: str, content: str | bytes) -> Path:
    path = folder / f"{name}.yaml"
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_text(content, encoding="utf-8", errors="surrogatepass")
    return path


@pytest.mark.parametrize("name", sorted(HOSTILE))
def test_hostile_rule_file_is_diagnosed_not_crashed(name: str, tmp_path: Path) -> None:
    path = write_rule(tmp_path, name, HOSTILE[name])
    code, output = lint(str(path), "--templates", str(TEMPLATES))
    assert code in (1, 2), output[-2000:]
    assert DIAGNOSTIC.search(output), output[-2000:]
    assert "Traceback" not in output
    assert not Path("/tmp/mlc-pwned").exists()


@pytest.mark.parametrize("name", sorted(TEMPLATE_ESCAPES))
def test_template_escape_is_refused_at_lint(name: str, tmp_path: Path) -> None:
    templates = tmp_path / "templates"
    templates.mkdir()
    (templates / f"{name}.sms.j2").write_text(TEMPLATE_ESCAPES[name])
    rules = tmp_path / "rules"
    rules.mkdir()
    write_rule(rules, name, VALID_HEAD.format(id=name).replace("invoice-overdue.sms.j2", f"{name}.sms.j2"))
    code, output = lint(str(rules), "--templates", str(templates))
    assert code == 1, output[-2000:]
    assert DIAGNOSTIC.search(output) and "Traceback" not in output


def test_random_yaml_never_crashes_lint(tmp_path: Path) -> None:
    tried = 0
    scalars = st.one_of(
        st.none(), st.booleans(), st.integers(), st.floats(allow_nan=False), st.text(max_size=30)
    )
    documents = st.recursive(
        scalars,
        lambda kids: st.lists(kids, max_size=4) | st.dictionaries(st.text(max_size=12), kids, max_size=4),
        max_leaves=25,
    )
    known = st.fixed_dictionaries(
        {"version": st.sampled_from([1, "1", 2, None])},
        optional={
            "id": st.text(max_size=20),
            "trigger": documents,
            "when": st.lists(documents, max_size=3),
            "recipient": documents,
            "send": documents,
            "once_per": documents,
            "quiet_hours": st.text(max_size=12),
        },
    )
    texts = st.one_of(
        st.text(max_size=300),
        known.map(lambda d: yaml.safe_dump(d, allow_unicode=True)),
        documents.map(lambda d: yaml.safe_dump(d, allow_unicode=True)),
    )

    @settings(max_examples=EXAMPLES, deadline=None, database=None, suppress_health_check=list(HealthCheck))
    @given(text=texts)
    def check(text: str) -> None:
        nonlocal tried
        tried += 1
        path = write_rule(tmp_path, "random-rule", text)
        code, output = lint(str(path), "--templates", str(TEMPLATES))
        assert code in (0, 1, 2), output
        assert "Traceback" not in output
        if code:
            assert DIAGNOSTIC.search(output), (text, output)

    check()
    write_figures(
        "hostile-rules",
        {
            "hostile_files": len(HOSTILE),
            "random_files": tried,
            "template_escapes": len(TEMPLATE_ESCAPES),
            "expression_escapes": sum(1 for k in HOSTILE if k.endswith("-expr") or k == "walk-to-os"),
            "crashes": 0,
        },
    )


def test_serve_refuses_an_invalid_rule_set_with_the_lint_diagnostics(tmp_path: Path) -> None:
    rules = tmp_path / "rules"
    rules.mkdir()
    for name in ("python-object-apply", "duplicate-keys", "dunder-expr", "billion-laughs"):
        write_rule(rules, name, HOSTILE[name])
    code, lint_output = lint(str(rules), "--templates", str(TEMPLATES))
    assert code == 1
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLC_")}
    env.update(
        {
            "PYTHONPATH": str(REPO),
            "MLC_MODE": "test",
            "MLC_RULES_DIR": str(rules),
            "MLC_TEMPLATES_DIR": str(TEMPLATES),
            "MLC_DATABASE_URL": f"sqlite:///{tmp_path / 'never.sqlite3'}",
        }
    )
    served = subprocess.run(
        [sys.executable, "-m", "server.cli", "serve", "--port", "0"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert served.returncode == 2, served.stderr[-2000:]
    lint_errors = sorted(
        line for line in lint_output.splitlines() if re.match(r"^\S+:\d+:\d+: ML\d{3} ", line)
    )
    serve_errors = sorted(
        line for line in served.stderr.splitlines() if re.match(r"^\S+:\d+:\d+: ML\d{3} ", line)
    )
    # Same diagnostics (the service prints errors; lint also prints warnings/notes).
    assert serve_errors and set(serve_errors) <= set(lint_errors)
    assert not (tmp_path / "never.sqlite3").exists(), "the database was touched before the rules loaded"


def test_crash_points_are_refused_in_production(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLC_")}
    env.update(
        {
            "PYTHONPATH": str(REPO),
            "MLC_MODE": "production",
            "MLC_CRASH_POINTS": "dispatch.accepted",
            "MLC_DATABASE_URL": f"sqlite:///{tmp_path / 'never.sqlite3'}",
        }
    )
    served = subprocess.run(
        [sys.executable, "-m", "server.cli", "serve", "--port", "0"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert served.returncode == 2
    assert "crash points are for tests only" in served.stderr
