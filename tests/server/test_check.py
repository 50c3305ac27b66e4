"""`ml-connector check`, Twilio part: the sender looked up in the account's IncomingPhoneNumbers on the
real simulator over loopback (owned? SMS / voice capable for the channels the rules use?)."""

from __future__ import annotations

import shutil
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from rich.console import Console

from server.check import (
    FROM_NUMBER_SETTING,
    TWILIO_UNREACHABLE_FIX,
    CheckResult,
    _check_senders,
    check_twilio,
    render,
    rule_needs,
)
from server.runtime.clock import ManualClock
from server.runtime.retry import RetryPolicy
from server.settings import Settings, TwilioSettings
from server.twilio.client import TwilioClient, TwilioClientConfig
from simulators.twilio.simulator import TwilioSimulator
from tests.simulators.twilio.conftest import START

SMS_AND_VOICE = frozenset({"sms", "voice"})


@pytest.fixture
def sim() -> Iterator[TwilioSimulator]:
    with TwilioSimulator(clock=ManualClock(START)) as simulator:
        yield simulator


def settings_for(sim: TwilioSimulator, **twilio: Any) -> Settings:
    values: dict[str, Any] = {
        "api_base_url": sim.base_url,
        "verify_base_url": sim.verify_base_url,
        "account_sid": sim.account_sid,
        "api_key_sid": sim.api_key_sid,
        "api_key_secret": sim.api_key_secret,
        "from_number": sim.from_number,
        "verify_service_sid": sim.verify_service_sid,
    }
    values.update(twilio)
    return Settings(twilio=TwilioSettings(**values))


def rows(results: list[CheckResult]) -> list[tuple[str, bool]]:
    return [(r.name, r.ok) for r in results]


def by_name(results: list[CheckResult], name: str) -> CheckResult:
    (result,) = [r for r in results if r.name == name]
    return result


def rendered(results: list[CheckResult]) -> list[str]:
    console = Console(record=True, width=400, color_system=None)
    render(results, console)
    return console.export_text().splitlines()


def line_for(lines: list[str], name: str) -> str:
    (line,) = [line for line in lines if f" {name} " in line]
    return line


async def test_owned_number_able_to_text_and_call_passes(sim: TwilioSimulator) -> None:
    results = await check_twilio(settings_for(sim), SMS_AND_VOICE)
    assert rows(results) == [
        ("account", True),
        ("account status", True),
        ("sender", True),
        ("SMS sender", True),
        ("voice sender", True),
        ("Verify service", True),
    ]
    (number,) = [n for n in sim.incoming_numbers() if n["phone_number"] == sim.from_number]
    assert (
        by_name(results, "sender").detail == f"{sim.from_number} is a number of the account ({number['sid']})"
    )
    lines = rendered(results)
    assert "PASS" in line_for(lines, "voice sender") and "can place calls" in line_for(lines, "voice sender")
    assert "all 6 checks passed" in lines[-1]
    (lookup,) = sim.requests(path_contains="/IncomingPhoneNumbers.json")
    assert ("PhoneNumber", sim.from_number) in lookup.query


async def test_a_number_the_account_does_not_own_fails_naming_the_setting(sim: TwilioSimulator) -> None:
    sim.remove_incoming_number(sim.from_number)
    results = await check_twilio(settings_for(sim), SMS_AND_VOICE)
    assert rows(results) == [
        ("account", True),
        ("account status", True),
        ("sender", False),
        ("Verify service", True),
    ]
    sender = by_name(results, "sender")
    assert sender.detail == (
        f"{sim.from_number} ({FROM_NUMBER_SETTING}) is not a phone number of account {sim.account_sid}"
    )
    assert sender.fix.startswith(f"set {FROM_NUMBER_SETTING} to one of the account's numbers")
    lines = rendered(results)
    assert "FAIL" in line_for(lines, "sender") and "MLC_TWILIO__FROM_NUMBER" in line_for(lines, "sender")
    assert "1 check(s) failed of 4" in lines[-1]


async def test_a_number_without_sms_fails_the_sms_sender(sim: TwilioSimulator) -> None:
    sim.set_incoming_number(sim.from_number, sms=False)
    results = await check_twilio(settings_for(sim), SMS_AND_VOICE)
    assert rows(results)[2:5] == [("sender", True), ("SMS sender", False), ("voice sender", True)]
    sms = by_name(results, "SMS sender")
    assert sms.detail == f"{sim.from_number} has no SMS capability"
    assert sms.fix == f"set {FROM_NUMBER_SETTING} to an SMS-capable number of the account"
    assert "FAIL" in line_for(rendered(results), "SMS sender")


async def test_voice_capability_is_required_only_when_rules_call(sim: TwilioSimulator) -> None:
    sim.set_incoming_number(sim.from_number, voice=False)
    calling = await check_twilio(settings_for(sim), SMS_AND_VOICE)
    voice = by_name(calling, "voice sender")
    assert (
        not voice.ok and voice.detail == f"{sim.from_number} has no voice capability; rules send voice calls"
    )
    texting = await check_twilio(settings_for(sim), frozenset({"sms"}))
    assert all(r.ok for r in texting) and "voice sender" not in [r.name for r in texting]


async def test_messaging_service_is_checked_by_format_and_cannot_call(sim: TwilioSimulator) -> None:
    settings = settings_for(sim, from_number="", messaging_service_sid=sim.messaging_service_sid)
    texting = await check_twilio(settings, frozenset({"sms"}))
    sender = by_name(texting, "sender")
    assert sender.ok and sender.detail.endswith("(SID format only; the service is not looked up)")
    assert sim.requests(path_contains="/IncomingPhoneNumbers.json") == []
    calling = await check_twilio(settings, SMS_AND_VOICE)
    voice = by_name(calling, "voice sender")
    assert not voice.ok and voice.fix.startswith(f"{FROM_NUMBER_SETTING}: a voice-capable number")
    malformed = await check_twilio(settings_for(sim, from_number="", messaging_service_sid="MG123"))
    assert by_name(malformed, "sender").detail == "not a Messaging Service SID (MG + 32 hex)"


async def test_a_messaging_service_beside_a_from_number_is_reported_unused(sim: TwilioSimulator) -> None:
    settings = settings_for(sim, messaging_service_sid=sim.messaging_service_sid)
    results = await check_twilio(settings, frozenset({"sms"}))
    service = by_name(results, "Messaging Service")
    assert service.ok and service.detail.endswith(f"is not used: SMS go from {FROM_NUMBER_SETTING}")
    assert by_name(results, "SMS sender").ok


async def test_bad_credentials_stop_at_the_account_without_a_lookup(sim: TwilioSimulator) -> None:
    results = await check_twilio(settings_for(sim, api_key_secret="wrong"), SMS_AND_VOICE)
    assert rows(results) == [("account", False)]
    assert "credentials set twilio" in results[0].fix
    assert sim.requests(path_contains="/IncomingPhoneNumbers.json") == []


async def test_sender_lookup_failures_are_classified(sim: TwilioSimulator) -> None:
    """The account fetch passed, then the lookup fails: refused credentials vs Twilio unreachable."""
    settings = settings_for(sim)
    policy = RetryPolicy(max_attempts=1)
    refused = TwilioClientConfig.from_settings(settings.twilio, api_key_secret="wrong", retry=policy)
    async with TwilioClient(refused) as client:
        (result,) = await _check_senders(client, settings, SMS_AND_VOICE)
    assert (result.name, result.ok) == ("sender", False)
    assert result.detail == "cannot list the account's phone numbers: Authenticate"
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]
    gone = TwilioClientConfig.from_settings(
        settings.twilio, api_base_url=f"http://127.0.0.1:{port}", retry=policy
    )
    async with TwilioClient(gone) as client:
        (result,) = await _check_senders(client, settings, SMS_AND_VOICE)
    assert (result.name, result.ok, result.fix) == ("sender", False, TWILIO_UNREACHABLE_FIX)
    assert "could not connect" in result.detail


async def test_a_malformed_from_number_fails_before_any_lookup(sim: TwilioSimulator) -> None:
    results = await check_twilio(settings_for(sim, from_number="not a number"), SMS_AND_VOICE)
    sender = by_name(results, "sender")
    assert not sender.ok and sender.fix.startswith(f"set {FROM_NUMBER_SETTING} to a number of the account")
    assert sim.requests(path_contains="/IncomingPhoneNumbers.json") == []


def test_rule_needs_lists_the_channels_of_enabled_rules(repo_root: Path, tmp_path: Path) -> None:
    shipped = Settings(rules_dir=repo_root / "rules", templates_dir=repo_root / "templates")
    needs, problem = rule_needs(shipped)
    assert problem is None
    assert needs.channels == SMS_AND_VOICE  # invoice-overdue calls at its last stage
    assert "salesInvoices" in needs.entities
    shutil.copy(repo_root / "rules" / "payment-receipt.yaml", tmp_path / "payment-receipt.yaml")
    texting = Settings(rules_dir=tmp_path, templates_dir=repo_root / "templates")
    only_sms, problem = rule_needs(texting)
    assert problem is None and only_sms.channels == frozenset({"sms"})
