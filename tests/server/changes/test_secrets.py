"""A full run of the change flow (API and CLI) with credentials stored in the database: afterwards
no secret and no one-time code is in the logs, the CLI output, the audit log or the raw database."""

from __future__ import annotations

import asyncio
import io
import json
import logging
import os
import re
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlmodel import select

from server.credentials import BCCredentials, CredentialStore, TwilioCredentials, load_keys
from server.runtime.logs import configure_logging
from server.sandbox.stack import Stack
from server.store.db import read_scope
from server.store.tables import AuditEntry
from tests.conftest import START
from tests.server.changes.conftest import APPROVER, CONTROLLER, record_id
from tests.server.changes.people import TOKENS, person
from tests.server.changes.scan import database_text


@pytest.fixture
def log_stream() -> Iterator[io.StringIO]:
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    stream = io.StringIO()
    configure_logging("DEBUG", stream=stream)
    try:
        yield stream
    finally:
        root.handlers[:] = handlers
        root.setLevel(level)


async def cli(stack: Stack, repo_root: Path, who: str, *args: str, stdin: str = "") -> tuple[int, str]:
    """The CLI as `who`: MLC_API_TOKEN on that person's machine is their personal token."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLC_")}
    env.update(
        {
            "PYTHONPATH": str(repo_root),
            "COLUMNS": "300",
            "MLC_API_TOKEN": TOKENS[who],
            "MLC_PUBLIC_BASE_URL": stack.url,
        }
    )
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "server.cli",
        *args,
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
        env=env,
    )
    out, _ = await asyncio.wait_for(process.communicate(stdin.encode()), timeout=60)
    assert process.returncode is not None
    return process.returncode, out.decode()


def without_timestamps(log_text: str) -> str:
    lines = []
    for line in log_text.splitlines():
        try:
            event = json.loads(line)
        except ValueError:
            lines.append(line)
            continue
        event.pop("timestamp", None)
        lines.append(json.dumps(event))
    return "\n".join(lines)


async def test_no_secret_or_code_anywhere_after_a_full_run(
    stack: Stack, database_url: str, repo_root: Path, log_stream: io.StringIO
) -> None:
    settings = stack.settings
    store = CredentialStore(stack.services.db, load_keys(settings))
    bc, tw = settings.bc, settings.twilio
    store.save(
        BCCredentials(
            tenant_id=bc.tenant_id,
            client_id=bc.client_id,
            client_secret=bc.client_secret,
            companies=bc.companies,
        ),
        actor="test",
        now=START,
    )
    store.save(
        TwilioCredentials(
            account_sid=tw.account_sid,
            api_key_sid=tw.api_key_sid,
            api_key_secret=tw.api_key_secret,
            auth_token=tw.auth_token,
            verify_service_sid=tw.verify_service_sid,
        ),
        actor="test",
        now=START,
    )
    company = stack.bc_sim.companies[0]
    account = record_id(stack, "vendorBankAccounts", "code", "MAIN")
    outputs: list[str] = []

    # Through the CLI: propose, a wrong code, then the right one.
    rc, out = await cli(
        stack,
        repo_root,
        "alice",
        "changes",
        "propose",
        "--entity",
        "vendorBankAccounts",
        "--record",
        account,
        "--company",
        company,
        "--set",
        "iban=GB82WEST12345698765432",
        "--approver",
        "treasury",
    )
    outputs.append(out)
    assert rc == 0, out
    change_id = int(re.search(r"changes confirm (\d+)", out).group(1))  # type: ignore[union-attr]
    code = stack.twilio_sim.verification_code(APPROVER)
    assert code is not None
    wrong = "000000" if code != "000000" else "111111"
    rc, out = await cli(stack, repo_root, "dave", "changes", "confirm", str(change_id), stdin=wrong + "\n")
    outputs.append(out)
    assert rc == 1
    assert "wrong_code: wrong code; 2 attempt(s) left" in out
    rc, out = await cli(stack, repo_root, "dave", "changes", "confirm", str(change_id), stdin=code + "\n")
    outputs.append(out)
    assert rc == 0, out
    assert "written: written to Business Central" in out
    rc, out = await cli(stack, repo_root, "alice", "changes", "list")
    outputs.append(out)
    assert rc == 0
    assert re.search(rf"\b{change_id}\b.*written.*vendorBankAccounts.*iban", out)

    # Through the API: a second change on a vendor, proposed by alice, confirmed by carol.
    async with person(stack, "alice") as http, person(stack, "carol") as carol:
        vendor = record_id(stack, "vendors", "number", "V01060")
        proposed = await http.post(
            "/api/changes",
            json={
                "entity": "vendors",
                "record_id": vendor,
                "company_id": company,
                "changes": {"email": "remit@northwind.example"},
                "approver": "finance-controller",
            },
        )
        assert proposed.status_code == 201
        second_code = stack.twilio_sim.verification_code(CONTROLLER)
        assert second_code is not None
        done = await carol.post(f"/api/changes/{proposed.json()['id']}/confirm", json={"code": second_code})
        assert done.status_code == 200
        outputs.append(proposed.text + done.text)

    secrets = [
        bc.client_secret.get_secret_value(),
        tw.api_key_secret.get_secret_value(),
        tw.auth_token.get_secret_value(),
        stack.api_token,
        *TOKENS.values(),
    ]
    logs = log_stream.getvalue()
    assert "change.written" in logs  # the capture did see the run
    stored = database_text(database_url)
    with read_scope(stack.services.db) as session:
        audit = json.dumps(
            [[a.actor, a.action, a.subject, a.details] for a in session.exec(select(AuditEntry))]
        )
    assert "change.code_wrong" in audit and "credentials.set" in audit
    everything = "\n".join([logs, *outputs, audit])
    for secret in secrets:
        assert secret not in everything
        assert secret not in stored
    # The proposed bank details are sealed at rest (the API shows them to bearer holders only).
    assert "GB82WEST12345698765432" not in stored
    assert "GB82WEST12345698765432" not in audit
    searchable = "\n".join([without_timestamps(logs), *outputs, audit])
    for one_time in (code, second_code):
        assert not re.search(rf"(?<!\d){one_time}(?!\d)", searchable)
        if one_time != "000000":  # SQLite stores the manual clock's zero microseconds as text
            assert not re.search(rf"(?<!\d){one_time}(?!\d)", stored)
