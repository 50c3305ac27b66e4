"""Lint for ladders and overlaps (ML506-ML510), each asserted by code, line and message."""

from __future__ import annotations

from pathlib import Path

from engine.loader import load_rules

HEAD = """# yaml-language-server: $schema=../schema/rule.schema.json
version: 1
id: {id}
description: test
trigger: {{entity: salesInvoices, events: [sweep]}}
"""


def lint(tmp_path: Path, repo_root: Path, **files: str) -> list[str]:
    rules = tmp_path / "rules"
    rules.mkdir(parents=True)
    for name, body in files.items():
        (rules / f"{name}.yaml").write_text(HEAD.format(id=name) + body, encoding="utf-8")
    _, diagnostics = load_rules([rules], templates_dir=repo_root / "templates")
    return [
        f"{Path(d.path).name}:{d.line}: {d.code} {d.message}" for d in diagnostics if d.code not in {"ML253"}
    ]


CUSTOMER = """recipient: {phone: customer.phoneNumber, region: US}
send: {channel: sms, template: invoice-overdue.sms.j2}
"""


def test_two_rules_texting_the_same_customer_on_the_same_day(tmp_path: Path, repo_root: Path) -> None:
    found = lint(
        tmp_path,
        repo_root,
        **{
            "a-ladder": "when: [status: Open]\n"
            + CUSTOMER
            + "stages:\n  - days_overdue: 7\nonce_per: [id, stage]\n",
            "b-weekly": "when:\n  - days_overdue: {gte: 5, lte: 10}\n" + CUSTOMER + "once_per: [id]\n",
            "c-paid": "when:\n  - status: Paid\n  - days_overdue: {gte: 5}\n" + CUSTOMER + "once_per: [id]\n",
        },
    )
    assert found == [
        "a-ladder.yaml:3: ML506 a-ladder and b-weekly can both text customer.phoneNumber about the same "
        "salesInvoices record on 7 day(s) overdue; make their conditions or days exclusive, or merge them "
        "into one ladder",
        "b-weekly.yaml:3: ML506 b-weekly and a-ladder can both text customer.phoneNumber about the same "
        "salesInvoices record on 7 day(s) overdue; make their conditions or days exclusive, or merge them "
        "into one ladder",
        "b-weekly.yaml:3: ML506 b-weekly and c-paid can both text customer.phoneNumber about the same "
        "salesInvoices record on 5 day(s) overdue; make their conditions or days exclusive, or merge them "
        "into one ladder",
        "c-paid.yaml:3: ML506 c-paid and b-weekly can both text customer.phoneNumber about the same "
        "salesInvoices record on 5 day(s) overdue; make their conditions or days exclusive, or merge them "
        "into one ladder",
    ]  # a-ladder (status: Open) and c-paid (status: Paid) exclude each other: no warning for that pair


def test_ladder_overlap_gap_and_shape(tmp_path: Path, repo_root: Path) -> None:
    found = lint(
        tmp_path,
        repo_root,
        **{
            "ladder": "when:\n  - days_overdue: {lte: 20}\n"
            + CUSTOMER
            + "stages:\n  - days_overdue: 7\n    grace_days: 10\n  - days_overdue: 14\n  - days_overdue: 30\n"
            + "once_per: [id]\n"
            + 'quiet_hours: "20:00-08:00"\nsend_window: {quiet_hours: "20:00-08:00"}\n',
        },
    )
    assert found == [
        "ladder.yaml:15: ML503 a rule with stages needs `stage` in once_per, or every stage after the first "
        "is taken for a repeat of it (e.g. once_per: [id, dueDate, stage])",
        "ladder.yaml:16: ML510 quiet_hours is ignored when send_window is given; move it to "
        "send_window.quiet_hours",
    ]
    found = lint(
        tmp_path / "2",
        repo_root,
        **{
            "ladder": "when:\n  - days_overdue: {lte: 20}\n"
            + CUSTOMER
            + "stages:\n  - days_overdue: 7\n    grace_days: 10\n  - days_overdue: 14\n  - days_overdue: 30\n"
            + "once_per: [id, stage]\n",
        },
    )
    assert found == [
        "ladder.yaml:12: ML507 stage 14 starts on day 14 (after grace), not after stage 7 (day 17): the ladder "
        "overlaps and stage 7 may never be sent; shorten the grace period",
        "ladder.yaml:14: ML508 stage 30 starts on day 30, outside the days the rule's other conditions allow "
        "(up to 20 day(s) overdue): a gap in the ladder, the stage never fires",
    ]


def test_stages_out_of_order_and_group_without_sweep(tmp_path: Path, repo_root: Path) -> None:
    body = CUSTOMER + "stages:\n  - days_overdue: 7\n  - days_overdue: 1\nonce_per: [id, stage]\n"
    found = lint(tmp_path, repo_root, ladder=body)
    assert found == [
        "ladder.yaml:9: ML104 stages: days_overdue of the stages must be distinct and in increasing order"
    ]
    rules = tmp_path / "g"
    rules.mkdir()
    (rules / "grouped.yaml").write_text(
        HEAD.format(id="grouped").replace("[sweep]", "[updated]")
        + CUSTOMER
        + "stages:\n  - days_overdue: 1\ngroup: {template: invoice-overdue-group.sms.j2}\nonce_per: [id, stage]\n",
        encoding="utf-8",
    )
    _, diagnostics = load_rules([rules], templates_dir=repo_root / "templates")
    assert [(d.code, d.line) for d in diagnostics if d.code == "ML509"] == [("ML509", 10)]
