"""The MLC_* variables each simulator hands out read back as Settings pointing at that simulator."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from server.settings import Settings
from simulators.bc.simulator import BCSimulator
from simulators.twilio.simulator import TwilioSimulator


@pytest.fixture
def sims() -> Iterator[tuple[BCSimulator, TwilioSimulator]]:
    with BCSimulator(seed="demo") as bc, TwilioSimulator() as twilio:
        yield bc, twilio


def settings_from(env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> Settings:
    for name in [k for k in os.environ if k.startswith("MLC_")]:
        monkeypatch.delenv(name)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    return Settings(_env_file=None)


def test_the_simulators_environment_is_a_connectors_settings(
    sims: tuple[BCSimulator, TwilioSimulator], monkeypatch: pytest.MonkeyPatch
) -> None:
    bc, twilio = sims
    assert len(bc.companies) > 1
    settings = settings_from({**bc.connector_env(), **twilio.connector_env()}, monkeypatch)
    assert settings.bc.api_base_url == settings.bc.authority_host == bc.origin
    assert (settings.bc.tenant_id, settings.bc.environment) == (bc.tenant_id, bc.environment)
    assert settings.bc.client_id == bc.client_id
    assert settings.bc.client_secret.get_secret_value() == bc.client_secret
    assert settings.bc.companies == bc.companies
    assert settings.bc.ca_cert == bc.ca_cert_path
    assert settings.twilio.api_base_url == twilio.base_url
    assert settings.twilio.verify_base_url == twilio.verify_base_url
    assert settings.twilio.account_sid == twilio.account_sid
    assert settings.twilio.api_key_sid == twilio.api_key_sid
    assert settings.twilio.api_key_secret.get_secret_value() == twilio.api_key_secret
    assert settings.twilio.auth_token.get_secret_value() == twilio.auth_token
    assert settings.twilio.from_number == twilio.from_number
    assert settings.twilio.verify_service_sid == twilio.verify_service_sid


def test_the_companies_can_be_narrowed(
    sims: tuple[BCSimulator, TwilioSimulator], monkeypatch: pytest.MonkeyPatch
) -> None:
    bc, _twilio = sims
    settings = settings_from(bc.connector_env([bc.companies[1]]), monkeypatch)
    assert settings.bc.companies == [bc.companies[1]]
