"""The operator commands as subprocesses: credentials set/show/rotate-key and `check` against the
simulators, then a grep of every output and of the database for each secret."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from cryptography.fernet import Fernet

from server.credentials import (
    BCCredentials,
    CredentialError,
    CredentialStore,
    parse_keys,
    write_new_key,
)
from server.runtime.clock import OffsetClock
from server.store.db import create_db_engine
from simulators.bc.simulator import BCSimulator
from simulators.twilio.simulator import TwilioSimulator
from tests.server.changes.scan import database_text


@dataclass
class Runner:
    env: dict[str, str]
    cwd: Path
    outputs: list[str] = field(default_factory=list)

    def __call__(
        self, *args: str, stdin: str = "", env: dict[str, str] | None = None
    ) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(
            [sys.executable, "-m", "server.cli", *args],
            input=stdin,
            capture_output=True,
            text=True,
            env={**self.env, **(env or {})},
            cwd=self.cwd,
            timeout=60,
            check=False,
        )
        self.outputs.extend([result.stdout, result.stderr])
        return result


@pytest.fixture
def sims() -> Iterator[tuple[BCSimulator, TwilioSimulator]]:
    clock = OffsetClock()
    with BCSimulator(clock=clock) as bc, TwilioSimulator(clock=clock) as twilio:
        yield bc, twilio


@pytest.fixture
def run(
    sims: tuple[BCSimulator, TwilioSimulator], database_url: str, tmp_path: Path, repo_root: Path
) -> Runner:
    bc, twilio = sims
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLC_")}
    env.update(
        {
            "PYTHONPATH": str(repo_root),
            "COLUMNS": "300",
            "MLC_DATABASE_URL": database_url,
            "MLC_SECRET_KEY": Fernet.generate_key().decode(),
            "MLC_RULES_DIR": str(repo_root / "rules"),
            "MLC_TEMPLATES_DIR": str(repo_root / "templates"),
            "MLC_BC__API_BASE_URL": bc.origin,
            "MLC_BC__AUTHORITY_HOST": bc.origin,
            "MLC_BC__CA_CERT": str(bc.ca_cert_path),
            "MLC_TWILIO__API_BASE_URL": twilio.base_url,
            "MLC_TWILIO__VERIFY_BASE_URL": twilio.verify_base_url,
            "MLC_CHANGES__BANK_PAGE_PUBLISHER": "contoso",
            "MLC_CHANGES__BANK_PAGE_GROUP": "finance",
            "MLC_CHANGES__BANK_PAGE_VERSION": "v1.0",
        }
    )
    return Runner(env=env, cwd=tmp_path)


def store_credentials(run: Runner, bc: BCSimulator, twilio: TwilioSimulator, *, bc_secret: str) -> None:
    stored_bc = run(
        "credentials",
        "set",
        "bc",
        "--tenant-id",
        bc.tenant_id,
        "--client-id",
        bc.client_id,
        "--environment",
        bc.environment,
        "--companies",
        ",".join(bc.companies),
        stdin=f"client_secret={bc_secret}\n",
    )
    assert stored_bc.returncode == 0, stored_bc.stderr
    assert stored_bc.stdout.strip() == (
        "stored bc credentials encrypted (client_id, client_secret, companies, environment, tenant_id)"
    )
    stored_twilio = run(
        "credentials",
        "set",
        "twilio",
        "--account-sid",
        twilio.account_sid,
        "--api-key-sid",
        twilio.api_key_sid,
        "--from-number",
        twilio.from_number,
        "--verify-service-sid",
        twilio.verify_service_sid,
        stdin=f"api_key_secret={twilio.api_key_secret}\nauth_token={twilio.auth_token}\n",
    )
    assert stored_twilio.returncode == 0, stored_twilio.stderr


# SQLite only: each step is a process start (~1.5 s); the same store code runs on PostgreSQL in
# test_secrets.py, which also scans a PostgreSQL database for the secrets.
@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_credentials_and_check_against_the_simulators(
    run: Runner, sims: tuple[BCSimulator, TwilioSimulator], database_url: str
) -> None:
    bc, twilio = sims
    secrets = [bc.client_secret, twilio.api_key_secret, twilio.auth_token]

    # No secret from argv: argparse refuses the option outright.
    refused = run("credentials", "set", "bc", "--client-secret", "from-argv")
    assert refused.returncode == 2
    assert "unrecognized arguments: --client-secret" in refused.stderr

    store_credentials(run, bc, twilio, bc_secret=bc.client_secret)

    shown = run("credentials", "show")
    assert shown.returncode == 0, shown.stderr
    assert shown.stdout.count("database (encrypted)") == 12
    assert "********" in shown.stdout
    assert bc.tenant_id in shown.stdout

    checked = run("check")
    assert checked.returncode == 0, checked.stdout + checked.stderr
    lines = checked.stdout.splitlines()
    passed = [line for line in lines if "PASS" in line]
    assert not [line for line in lines if "FAIL" in line]
    for expected in (
        "token",
        "companies",
        "salesInvoices",
        "api/contoso/finance/v1.0/vendorBankAccounts",
        "account",
        "sender",
        "SMS sender",
        "voice sender",  # the shipped invoice-overdue rule calls at its last stage
        "Verify service",
    ):
        assert any(expected in line for line in passed), expected
    assert f"all {len(passed)} checks passed" in checked.stdout
    assert bc.token_requests >= 1
    assert twilio.requests(path_contains=f"/Accounts/{twilio.account_sid}.json")
    # The sender is looked up in the account's numbers, not only checked for format.
    (lookup,) = twilio.requests(path_contains="/IncomingPhoneNumbers.json")
    assert ("PhoneNumber", twilio.from_number) in lookup.query

    # A wrong stored secret: the token check fails with the fix, the secret is not echoed.
    wrong_secret = "wrong-" + bc.client_secret[::-1]
    secrets.append(wrong_secret)
    assert run("credentials", "set", "bc", stdin=wrong_secret + "\n").returncode == 0
    failing = run("check")
    assert failing.returncode == 1
    [token_line] = [line for line in failing.stdout.splitlines() if " token " in line]
    assert "FAIL" in token_line
    assert "credentials set bc" in failing.stdout

    # Rotation: a new key first, the old one second; afterwards the new key alone reads everything.
    old_key = run.env["MLC_SECRET_KEY"]
    new_key = Fernet.generate_key().decode()
    rotated = run("credentials", "rotate-key", env={"MLC_SECRET_KEYS": f"{new_key},{old_key}"})
    assert rotated.returncode == 0, rotated.stderr
    assert rotated.stdout.startswith("re-encrypted 2 credential set(s)")
    engine = create_db_engine(database_url)
    try:
        after = CredentialStore(engine, [new_key.encode()]).load("bc")
        assert isinstance(after, BCCredentials)
        assert after.client_secret.get_secret_value() == wrong_secret
        with pytest.raises(CredentialError, match="none of the configured keys decrypts them"):
            CredentialStore(engine, [old_key.encode()]).load("bc")  # the old key alone no longer does
    finally:
        engine.dispose()

    output = "\n".join(run.outputs)
    stored = database_text(database_url)
    assert "credentials.rotate_key" in stored  # the scan does see the database
    for secret in secrets:
        assert secret not in output
        assert secret not in stored
    assert new_key not in stored and old_key not in stored


# One process, credentials from the environment (no stored set): everything else passes, so exit 1
# is the sender's doing.
@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_check_exits_1_when_the_account_does_not_own_the_sender(
    run: Runner, sims: tuple[BCSimulator, TwilioSimulator]
) -> None:
    bc, twilio = sims
    twilio.remove_incoming_number(twilio.from_number)
    env = {
        "MLC_BC__TENANT_ID": bc.tenant_id,
        "MLC_BC__CLIENT_ID": bc.client_id,
        "MLC_BC__CLIENT_SECRET": bc.client_secret,
        "MLC_BC__ENVIRONMENT": bc.environment,
        "MLC_BC__COMPANIES": json.dumps(list(bc.companies)),
        "MLC_TWILIO__ACCOUNT_SID": twilio.account_sid,
        "MLC_TWILIO__API_KEY_SID": twilio.api_key_sid,
        "MLC_TWILIO__API_KEY_SECRET": twilio.api_key_secret,
        "MLC_TWILIO__FROM_NUMBER": twilio.from_number,
        "MLC_TWILIO__VERIFY_SERVICE_SID": twilio.verify_service_sid,
    }
    checked = run("check", env=env)
    assert checked.returncode == 1, checked.stdout + checked.stderr
    failed = [line for line in checked.stdout.splitlines() if "FAIL" in line]
    assert len(failed) == 1 and " sender " in failed[0], checked.stdout
    assert "MLC_TWILIO__FROM_NUMBER" in failed[0] and twilio.from_number in failed[0]
    assert "1 check(s) failed" in checked.stdout
    for secret in (bc.client_secret, twilio.api_key_secret):
        assert secret not in checked.stdout + checked.stderr


def test_new_key_file_keeps_old_keys_and_refuses_foreign_content(tmp_path: Path) -> None:
    key_file = tmp_path / "keys" / "mlc.keys"
    assert write_new_key(key_file) is False
    assert oct(key_file.stat().st_mode & 0o777) == "0o600"
    first = key_file.read_text().split()
    assert write_new_key(key_file) is True
    second = key_file.read_text().split()
    assert len(second) == 2 and second[1:] == first
    with pytest.raises(CredentialError, match=r"MLC_SECRET_KEY: key 2 is not a Fernet key"):
        parse_keys(f"{first[0]},not-a-key", "MLC_SECRET_KEY")
    other = tmp_path / "other"
    other.write_text("hello\n")
    with pytest.raises(CredentialError, match="key 1 is not a Fernet key"):
        write_new_key(other)
    assert other.read_text() == "hello\n"  # left alone


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_key_file_and_missing_key(run: Runner, tmp_path: Path) -> None:
    key_file = tmp_path / "mlc.keys"
    write_new_key(key_file)
    env = {"MLC_SECRET_KEY": "", "MLC_SECRET_KEY_FILE": str(key_file)}
    assert (
        run("credentials", "set", "bc", "--tenant-id", "t", stdin="s3cret-value\n", env=env).returncode == 0
    )
    write_new_key(key_file)
    assert run("credentials", "rotate-key", env=env).stdout.startswith("re-encrypted 1 credential set(s)")
    no_key = run("credentials", "set", "bc", stdin="x\n", env={"MLC_SECRET_KEY": ""})
    assert no_key.returncode == 2
    assert "no encryption key: set MLC_SECRET_KEY" in no_key.stderr
