"""Every settings variable docs/operations.md documents reaches its field of `Settings`.

Settings that sit in a group keep the flat names operators set (`MLC_REMINDER_CAP_PER_DAY` ->
`reminders.cap_per_day`, `server.settings.FLAT_NAMES`); the others are `MLC_` + the field path,
groups joined by a double underscore (`MLC_CHANGES__MAX_ATTEMPTS` -> `changes.max_attempts`).
"""

from __future__ import annotations

import re
import types
from pathlib import Path
from typing import Any, Literal, Union, get_args, get_origin

import pytest
from pydantic import BaseModel, SecretStr, ValidationError
from pydantic.fields import FieldInfo

from server.settings import FLAT_NAMES, Settings

OPERATIONS = Path(__file__).resolve().parents[2] / "docs" / "operations.md"
# Values a field's type alone does not give (a number must be a phone number).
SAMPLES: dict[str, tuple[str, Any]] = {
    "MLC_TEST_NUMBER": ("+44 7700 900999", "+447700900999"),
    "MLC_TESTING__NUMBER": ("+44 7700 900999", "+447700900999"),
    # At least one Twilio request's timeouts (validated against the client's settings at start-up).
    "MLC_RECONCILE_GRACE_SECONDS": ("60", 60.0),
    "MLC_CLAIM_SECONDS": ("60", 60.0),
    "MLC_SUBMIT_LEASE_SECONDS": ("600", 600.0),
    "MLC_RECONCILE_LEASE_SECONDS": ("60", 60.0),
    "MLC_API_IDENTITIES": ('{"dave": "' + "ab" * 32 + '"}', {"dave": "ab" * 32}),
    "MLC_CHANGES__APPROVER_ROLES": (
        '{"treasury": {"dave": "+44 7700 900123"}}',
        {"treasury": {"dave": "+447700900123"}},
    ),
}
# Variables that are valid only together with another (every approver needs a personal token).
COMPANIONS: dict[str, dict[str, str]] = {
    "MLC_CHANGES__APPROVER_ROLES": {"MLC_API_IDENTITIES": '{"dave": "' + "ab" * 32 + '"}'},
}


def documented() -> list[str]:
    """The full variable names (not prefixes such as `MLC_BC__`) in the Settings section."""
    text = OPERATIONS.read_text(encoding="utf-8")
    section = text.split("## Settings", 1)[1].split("\n## ", 1)[0]
    names = re.findall(r"`(MLC_[A-Z0-9_]+)`", section)
    return sorted({n for n in names if not n.endswith("_")})


def field_path(name: str) -> tuple[str, ...]:
    if name in FLAT_NAMES:
        return FLAT_NAMES[name]
    return tuple(name.removeprefix("MLC_").lower().split("__"))


def field_at(path: tuple[str, ...]) -> FieldInfo:
    model: type[BaseModel] = Settings
    field = model.model_fields[path[0]]
    for key in path[1:]:
        assert isinstance(field.annotation, type) and issubclass(field.annotation, BaseModel), path
        model = field.annotation
        field = model.model_fields[key]
    return field


def sample(field: FieldInfo) -> tuple[str, Any]:
    """An environment value for the field that differs from its default, and what it reads as."""
    annotation = field.annotation
    if get_origin(annotation) in (Union, types.UnionType):
        annotation = next(a for a in get_args(annotation) if a is not type(None))
    if get_origin(annotation) is Literal:
        value = next(v for v in get_args(annotation) if v != field.default)
        return str(value), value
    if get_origin(annotation) is list:
        return '["sample"]', ["sample"]
    if get_origin(annotation) is dict:
        return '{"role": "+447700900123"}', {"role": "+447700900123"}
    simple: dict[Any, tuple[str, Any]] = {
        bool: ("true", True),
        int: ("3", 3),
        float: ("3.5", 3.5),
        str: ("sample", "sample"),
        SecretStr: ("s3cret", "s3cret"),
        Path: ("/srv/sample", Path("/srv/sample")),
    }
    return simple[annotation]


def read(settings: Settings, path: tuple[str, ...]) -> Any:
    value: Any = settings
    for key in path:
        value = getattr(value, key)
    return value.get_secret_value() if isinstance(value, SecretStr) else value


def test_the_operations_guide_documents_the_flat_names() -> None:
    assert set(FLAT_NAMES) <= set(documented())


@pytest.mark.parametrize("name", documented())
def test_a_documented_variable_reaches_its_field(name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    path = field_path(name)
    raw, expected = SAMPLES.get(name) or sample(field_at(path))
    monkeypatch.setenv(name, raw)
    for companion, value in COMPANIONS.get(name, {}).items():
        monkeypatch.setenv(companion, value)
    assert read(Settings(_env_file=None), path) == expected


@pytest.mark.parametrize("name", sorted(FLAT_NAMES))
def test_a_flat_name_in_the_env_file_reaches_its_field(name: str, tmp_path: Path) -> None:
    path = field_path(name)
    raw, expected = SAMPLES.get(name) or sample(field_at(path))
    env_file = tmp_path / ".env"
    env_file.write_text(f"{name}='{raw}'\n", encoding="utf-8")
    assert read(Settings(_env_file=env_file), path) == expected


def test_the_nested_name_wins_over_the_flat_one(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MLC_REMINDER_CAP_PER_DAY", "4")
    monkeypatch.setenv("MLC_REMINDERS__CAP_PER_DAY", "5")
    monkeypatch.setenv("MLC_REMINDER_CAP_PER_WEEK", "9")
    reminders = Settings(_env_file=None).reminders
    assert (reminders.cap_per_day, reminders.cap_per_week) == (5, 9)


def test_init_values_win_over_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MLC_TEST_MODE", "true")
    assert Settings(_env_file=None, testing={"enabled": False}).testing.enabled is False


HASH = "ab" * 32


@pytest.mark.parametrize(
    ("roles", "identities", "message"),
    [
        (
            '{"treasury": "+447700900123"}',
            "{}",
            "MLC_CHANGES__APPROVER_ROLES: role 'treasury' maps to str '+447700900123'; each role maps its "
            "members' identities to their numbers",
        ),
        (
            '{"treasury": {"dave": "07700 900123"}}',
            f'{{"dave": "{HASH}"}}',
            "MLC_CHANGES__APPROVER_ROLES: role 'treasury', member 'dave': '07700 900123' is not an E.164 number",
        ),
        (
            '{"treasury": {"dave": "+447700900123", "erin": "+447700900123"}}',
            f'{{"dave": "{HASH}", "erin": "{"cd" * 32}"}}',
            "member 'erin': +447700900123 is already the number of 'dave'",
        ),
        (
            '{"treasury": {"dave": "+447700900123"}}',
            "{}",
            "MLC_CHANGES__APPROVER_ROLES: member 'dave' of role 'treasury' has no token in MLC_API_IDENTITIES",
        ),
        ("{}", '{"dave": "s3cret-token"}', "MLC_API_IDENTITIES: 'dave': expected the SHA-256 of the token"),
        ("{}", f'{{"service": "{HASH}"}}', "MLC_API_IDENTITIES: 'service': not a personal identity name"),
    ],
)
def test_approver_roles_and_identities_are_checked_at_start_up(
    roles: str, identities: str, message: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MLC_CHANGES__APPROVER_ROLES", roles)
    monkeypatch.setenv("MLC_API_IDENTITIES", identities)
    with pytest.raises(ValidationError) as raised:
        Settings(_env_file=None)
    assert message in str(raised.value)


def test_leases_are_checked_against_the_twilio_clients_own_timeouts(monkeypatch: pytest.MonkeyPatch) -> None:
    from server.settings import SettingsError, load_settings
    from server.twilio.client import TwilioClientConfig

    for name, value in {
        "MLC_TWILIO__CONNECT_TIMEOUT_SECONDS": "1",
        "MLC_TWILIO__WRITE_TIMEOUT_SECONDS": "2",
        "MLC_TWILIO__READ_TIMEOUT_SECONDS": "3",
        "MLC_TWILIO__MAX_ATTEMPTS": "2",
        "MLC_TWILIO__RETRY_AFTER_LIMIT_SECONDS": "4",
        "MLC_SUBMIT_LEASE_SECONDS": "11.5",  # 2 x 7 s + 4 s = 18 s needed
        "MLC_RECONCILE_GRACE_SECONDS": "7",  # one attempt: 2 x 1 + 2 + 3 = 7 s, enough
        "MLC_CLAIM_SECONDS": "6",  # shorter than one attempt
        "MLC_RECONCILE_LEASE_SECONDS": "5",  # shorter than one attempt
    }.items():
        monkeypatch.setenv(name, value)
    with pytest.raises(SettingsError) as refused:
        load_settings()
    line = str(refused.value.code)
    assert "\n" not in line and line.startswith("ml-connector: refusing to start:")
    assert "MLC_SUBMIT_LEASE_SECONDS=11.5" in line and "18 s" in line
    assert "MLC_CLAIM_SECONDS=6" in line and "MLC_RECONCILE_GRACE_SECONDS" not in line
    assert "MLC_RECONCILE_LEASE_SECONDS=5" in line

    monkeypatch.setenv("MLC_SUBMIT_LEASE_SECONDS", "18.5")
    monkeypatch.setenv("MLC_CLAIM_SECONDS", "7")
    monkeypatch.setenv("MLC_RECONCILE_LEASE_SECONDS", "7")
    settings = load_settings()
    # The bound is the client's: the client is built from the same settings.
    config = TwilioClientConfig.from_settings(settings.twilio)
    assert (config.connect_timeout, config.write_timeout, config.read_timeout) == (1, 2, 3)
    assert (config.retry.max_attempts, config.retry.max_retry_after) == (2, 4)
    assert settings.twilio.call_seconds() == 18


def test_the_default_leases_outlast_the_default_client() -> None:
    settings = Settings()
    assert settings.twilio.call_seconds() == 320  # 5 x (2 x 5 + 15 + 15) + 4 x 30
    assert settings.submit_lease_seconds > 320 and settings.reconcile_grace_seconds >= 40
