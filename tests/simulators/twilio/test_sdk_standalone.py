"""The official twilio SDK, unchanged, against `ml-connector simulate twilio` run as a subprocess."""

from __future__ import annotations

import json
import os
import selectors
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from twilio.base.exceptions import TwilioException, TwilioRestException
from twilio.rest import Client

TO = "+447700900123"


def _command(*args: str) -> list[str]:
    """`ml-connector simulate twilio ...` via the installed console script (same entry as `python -m server.cli`)."""
    script = Path(sys.executable).with_name("ml-connector")
    entry = [str(script)] if script.exists() else [sys.executable, "-m", "server.cli"]
    return [*entry, "simulate", "twilio", *args]


@pytest.fixture(scope="module")
def standalone(repo_root: Path) -> Iterator[dict[str, Any]]:
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    process = subprocess.Popen(
        _command("--host", "127.0.0.1", "--port", "0"),
        cwd=repo_root,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    assert process.stdout is not None
    selector = selectors.DefaultSelector()
    selector.register(process.stdout, selectors.EVENT_READ)
    if not selector.select(timeout=20):
        process.kill()
        pytest.fail(
            f"simulator printed nothing within 20 s; stderr: {process.stderr.read() if process.stderr else ''}"
        )
    line = process.stdout.readline()
    info: dict[str, Any] = json.loads(line)
    info["process"] = process
    try:
        yield info
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(5)


@pytest.fixture
def sdk(standalone: dict[str, Any]) -> Client:
    client = Client(standalone["api_key_sid"], standalone["api_key_secret"], standalone["account_sid"])
    client.api.base_url = standalone["base_url"]
    client.verify.base_url = standalone["verify_base_url"]
    return client


def test_the_json_line_names_everything_a_client_needs(standalone: dict[str, Any]) -> None:
    for key in (
        "base_url",
        "verify_base_url",
        "account_sid",
        "auth_token",
        "api_key_sid",
        "api_key_secret",
        "from_number",
        "verify_service_sid",
    ):
        assert standalone[key], key
    assert standalone["account_sid"].startswith("AC") and standalone["api_key_sid"].startswith("SK")
    assert standalone["base_url"].startswith("http://127.0.0.1:")


def test_sdk_sends_fetches_and_lists_messages(sdk: Client, standalone: dict[str, Any]) -> None:
    message = sdk.messages.create(to=TO, from_=standalone["from_number"], body="Invoice 1001 is overdue")
    assert message.sid.startswith("SM") and message.status == "queued"
    fetched = sdk.messages(message.sid).fetch()
    assert (fetched.sid, fetched.body, fetched.to) == (message.sid, "Invoice 1001 is overdue", TO)
    for n in range(3):
        sdk.messages.create(to=TO, from_=standalone["from_number"], body=f"more {n}")
    listed = sdk.messages.list(to=TO, page_size=2)  # the SDK follows next_page_uri itself
    assert [m.body for m in listed][:4] == ["more 2", "more 1", "more 0", "Invoice 1001 is overdue"]


def test_sdk_creates_a_call(sdk: Client, standalone: dict[str, Any]) -> None:
    call = sdk.calls.create(
        to=TO,
        from_=standalone["from_number"],
        twiml="<Response><Say>Payment received</Say></Response>",
        status_callback="https://mlc.example.com/call",
        status_callback_event=["initiated", "completed"],
    )
    assert call.sid.startswith("CA") and call.status == "queued"
    assert sdk.calls(call.sid).fetch().to == TO


def test_sdk_starts_and_checks_a_verification(sdk: Client, standalone: dict[str, Any]) -> None:
    service = sdk.verify.v2.services(standalone["verify_service_sid"])
    verification = service.verifications.create(to=TO, channel="sms")
    assert verification.status == "pending"
    with httpx.Client(timeout=5) as control:
        items = control.get(f"{standalone['base_url']}/_sim/verifications").json()["items"]
    code = next(v["code"] for v in items if v["sid"] == verification.sid)
    check = service.verification_checks.create(to=TO, code=code)
    assert (check.status, check.valid) == ("approved", True)
    with pytest.raises(TwilioRestException) as caught:
        service.verification_checks.create(to=TO, code=code)
    assert (caught.value.status, caught.value.code) == (404, 20404)


def test_sdk_lists_incoming_phone_numbers(sdk: Client, standalone: dict[str, Any]) -> None:
    (owned,) = sdk.incoming_phone_numbers.list(phone_number=standalone["from_number"])
    assert owned.phone_number == standalone["from_number"] and owned.sid.startswith("PN")
    assert owned.account_sid == standalone["account_sid"]
    assert owned.capabilities == {"fax": False, "mms": True, "sms": True, "voice": True}
    with httpx.Client(base_url=f"{standalone['base_url']}/_sim", timeout=5) as control:
        for number, sms in (("+447700900301", False), ("+447700900302", True)):
            assert control.post("/incoming-numbers", json={"number": number, "sms": sms}).status_code == 200
    # page_size=1: the SDK follows next_page_uri (with its PhoneNumber filter) page by page.
    listed = sdk.incoming_phone_numbers.list(phone_number="+4477009003**", page_size=1)
    assert [(n.phone_number, n.capabilities["sms"]) for n in listed] == [
        ("+447700900301", False),
        ("+447700900302", True),
    ]
    assert sdk.incoming_phone_numbers.list(phone_number="+447700900399") == []


def test_sdk_sees_twilio_errors(standalone: dict[str, Any]) -> None:
    wrong = Client(standalone["api_key_sid"], "not-the-secret", standalone["account_sid"])
    wrong.api.base_url = standalone["base_url"]
    with pytest.raises(TwilioRestException) as caught:
        wrong.messages.create(to=TO, from_=standalone["from_number"], body="x")
    assert (caught.value.status, caught.value.code) == (401, 20003)
    # A list page that is not 200 raises the SDK's base TwilioException carrying the response.
    with pytest.raises(TwilioException) as listing:
        wrong.incoming_phone_numbers.list(phone_number=standalone["from_number"])
    response = listing.value.args[1]
    assert response.status_code == 401 and json.loads(response.text)["code"] == 20003


def test_sigterm_stops_it_cleanly(repo_root: Path) -> None:
    process = subprocess.Popen(
        _command("--port", "0"),
        cwd=repo_root,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert process.stdout is not None
    selector = selectors.DefaultSelector()
    selector.register(process.stdout, selectors.EVENT_READ)
    assert selector.select(timeout=20), "no JSON line within 20 s"
    base_url = json.loads(process.stdout.readline())["base_url"]
    assert httpx.get(f"{base_url}/_sim/info", timeout=5).status_code == 200
    process.send_signal(signal.SIGTERM)
    assert process.wait(10) == 0
