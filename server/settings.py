"""Configuration from the environment (and an optional .env file), all as `MLC_*` variables.

Read once, by `load_settings` (or `Settings(...)` in tests and the sandbox), and handed down: the
services hold the one `Settings`, and inner code takes the group it needs (`settings.reminders`).
Nothing else reads the environment for configuration.

Nested groups use a double underscore: `MLC_BC__TENANT_ID`, `MLC_TWILIO__FROM_NUMBER`,
`MLC_REMINDERS__CAP_PER_DAY`. Settings that moved into a group keep the flat names operators already
set (`MLC_REMINDER_CAP_PER_DAY`, `MLC_TEST_MODE`, `MLC_SWEEP_TIME`): `FLAT_NAMES` maps each to its
group's field, and the nested name wins when both are set.
Secret values are `SecretStr` so they never print in reprs or logs; they can also be stored in the
database encrypted at rest (`ml-connector credentials set`), with these variables as the fallback.
"""

from __future__ import annotations

import ipaddress
import json
import re
from pathlib import Path
from typing import Any, Literal, get_origin

from pydantic import BaseModel, Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic.fields import FieldInfo
from pydantic_settings import (
    BaseSettings,
    EnvSettingsSource,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
)

from engine.errors import PhoneError
from engine.phones import to_e164

REPO_ROOT = Path(__file__).resolve().parents[1]


class BCSettings(BaseModel):
    """Where Business Central and its Entra tenant are, and the app registration to use."""

    api_base_url: str = Field(
        default="https://api.businesscentral.dynamics.com",
        description="API host; the client appends /v2.0/{tenant}/{environment}/api/v2.0.",
    )
    authority_host: str = Field(
        default="https://login.microsoftonline.com",
        description="Entra login host; msal authority = host/tenant.",
    )
    tenant_id: str = ""
    environment: str = "production"
    client_id: str = ""
    client_secret: SecretStr = SecretStr("")
    companies: list[str] = Field(default_factory=list, description="Company ids to watch; empty = all.")
    scope: str = "https://api.businesscentral.dynamics.com/.default"
    ca_cert: Path | None = Field(default=None, description="Extra CA file to trust (the simulator's CA).")
    max_concurrency: int = Field(
        default=4, ge=1, le=5, description="BC processes 5 requests per user at once."
    )


class TwilioSettings(BaseModel):
    api_base_url: str = "https://api.twilio.com"
    verify_base_url: str = "https://verify.twilio.com"
    account_sid: str = ""
    api_key_sid: str = ""
    api_key_secret: SecretStr = SecretStr("")
    auth_token: SecretStr = SecretStr("")
    from_number: str = ""
    messaging_service_sid: str = ""
    verify_service_sid: str = ""
    # The REST client's timeouts and in-line retries (server/twilio/client.py builds its
    # httpx.Timeout and RetryPolicy from these). httpx applies each timeout per operation, and the
    # pool timeout (waiting for a free connection) is the connect timeout here:
    # https://www.python-httpx.org/advanced/timeouts/
    connect_timeout_seconds: float = Field(default=5.0, gt=0, description="Connecting to Twilio.")
    write_timeout_seconds: float = Field(default=15.0, gt=0, description="Sending a request.")
    read_timeout_seconds: float = Field(default=15.0, gt=0, description="Waiting for Twilio's answer.")
    max_attempts: int = Field(
        default=5,
        ge=1,
        description="Tries per request, the first included (retries: 429, 5xx, no connection).",
    )
    retry_base_delay_seconds: float = Field(
        default=0.5, ge=0, description="Back-off ceiling of the first retry."
    )
    retry_max_delay_seconds: float = Field(
        default=20.0, ge=0, description="The back-off ceiling doubles per retry up to this."
    )
    retry_after_limit_seconds: float = Field(
        default=30.0,
        ge=0,
        description="The longest Retry-After slept in-line; a longer one is handed to the dispatcher.",
    )

    def attempt_seconds(self) -> float:
        """The longest one request can take: a free connection, connecting, writing, reading."""
        return 2 * self.connect_timeout_seconds + self.write_timeout_seconds + self.read_timeout_seconds

    def call_seconds(self) -> float:
        """The longest one create call can take with its in-line retries: every attempt at its
        longest and, between two attempts, the longest back-off (full jitter under its ceiling, or a
        Retry-After up to retry_after_limit_seconds)."""
        backoffs = sum(
            max(
                min(self.retry_max_delay_seconds, self.retry_base_delay_seconds * (1 << min(n - 1, 30))),
                self.retry_after_limit_seconds,
            )
            for n in range(1, self.max_attempts)
        )
        return self.max_attempts * self.attempt_seconds() + backoffs


IDENTITY_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._@+-]{0,63}$")
SERVICE_IDENTITY = "service"  # who the shared MLC_API_TOKEN is


def approver_members(value: Any) -> Any:
    """MLC_CHANGES__APPROVER_ROLES: role -> {identity: E.164 phone}, every number normalised, and one
    number belongs to one identity (else one person would receive another's codes)."""
    if not isinstance(value, dict):
        return value
    setting = "MLC_CHANGES__APPROVER_ROLES"
    owner: dict[str, str] = {}  # phone -> identity
    phone_of: dict[str, str] = {}  # identity -> phone
    roles: dict[str, dict[str, str]] = {}
    for role, members in value.items():
        if not isinstance(members, dict):
            raise ValueError(
                f"{setting}: role {role!r} maps to {type(members).__name__} {members!r}; each role maps its "
                f'members\' identities to their numbers, e.g. {{"{role}": {{"dave": "+447700900123"}}}}'
            )
        if not members:
            raise ValueError(f"{setting}: role {role!r} has no members")
        roles[role] = {}
        for identity, raw in members.items():
            where = f"{setting}: role {role!r}, member {identity!r}"
            if not IDENTITY_NAME.fullmatch(str(identity)) or identity == SERVICE_IDENTITY:
                raise ValueError(f"{where}: not a personal identity name (letters, digits, . _ @ + -)")
            try:
                number = to_e164(str(raw), None).number
            except PhoneError as exc:
                raise ValueError(f"{where}: {raw!r} is not an E.164 number: {exc.reason}") from None
            if owner.setdefault(number, identity) != identity:
                raise ValueError(f"{where}: {number} is already the number of {owner[number]!r}")
            if phone_of.setdefault(identity, number) != number:
                raise ValueError(f"{where}: {identity!r} has another number in another role")
            roles[role][identity] = number
    return roles


class ChangeSettings(BaseModel):
    """OTP-gated write-back of sensitive vendor/customer fields (server/changes/)."""

    approver_roles: dict[str, dict[str, str]] = Field(
        default_factory=dict,
        description="Role -> its members, each an identity (a name in MLC_API_IDENTITIES) with an E.164 "
        'phone, e.g. {"treasury": {"dave": "+447700900123", "erin": "+447700900124"}} (JSON). A '
        "proposal names a role; the code goes to a member who is not the proposer.",
    )
    # Standard BC API v2.0 has no vendor bank accounts (none in its entity list,
    # https://learn.microsoft.com/en-us/dynamics365/business-central/dev-itpro/api-reference/v2.0/):
    # they go through a custom API page a BC extension publishes,
    # /api/{publisher}/{group}/{version}/companies({id})/{entity_set}.
    bank_page_publisher: str = Field(default="", description="Custom API page publisher; empty = off.")
    bank_page_group: str = ""
    bank_page_version: str = "v1.0"
    bank_page_entity_set: str = "vendorBankAccounts"
    expiry_minutes: float = Field(
        default=15.0, gt=0, description="A pending change not confirmed within this time expires."
    )
    max_attempts: int = Field(
        default=5, ge=1, le=5, description="Wrong codes allowed per change (Twilio stops at 5: 60202)."
    )
    default_channel: Literal["sms", "call"] = "sms"
    write_lease_seconds: float = Field(
        default=120.0,
        gt=0,
        description="A write to BC not finished within this (its process died) may be retried by "
        "confirming again; the retry uses the same If-Match etag, so BC applies it at most once.",
    )
    # Each proposal sends a code by SMS or call and opens a new round of guesses, so proposals are
    # counted in the store (across instances) per approver and per record within a window.
    proposal_window_minutes: float = Field(
        default=10.0, gt=0, description="The window the proposal limits count in."
    )
    proposals_per_approver: int = Field(
        default=3, ge=1, description="Proposals per approver (phone) within the window; more get 429."
    )
    proposals_per_record: int = Field(
        default=2, ge=1, description="Proposals per BC record within the window; more get 429."
    )

    @field_validator("approver_roles", mode="before")
    @classmethod
    def _members(cls, value: Any) -> Any:
        return approver_members(value)


class ReminderSettings(BaseModel):
    """Per-recipient caps and the BC-side switch of reminder rules (server/planning/reminders.py)."""

    cap_per_day: int = Field(
        default=2, ge=0, description="reminder messages per recipient per day; 0 = no cap"
    )
    cap_per_week: int = Field(
        default=6, ge=0, description="reminder messages per recipient per week; 0 = no cap"
    )
    cap_timezone: str = Field(default="UTC", description="the zone whose midnight starts a cap day")
    suppress_field: str = Field(
        default="",
        description="a field path on the reminded record, e.g. customer.blocked; empty = no switch",
    )
    suppress_values: list[str] = Field(
        default_factory=lambda: ["Invoice", "All"], description="values of suppress_field that stop reminders"
    )


class TestModeSettings(BaseModel):
    """Test mode (server/planning/testmode.py): every send diverted to one number, or only logged."""

    __test__ = False  # not a pytest test class, despite the name

    enabled: bool = Field(default=False, description="divert every send (see number)")
    number: str = Field(default="", description="E.164 number that receives every send; empty = log only")

    @field_validator("number")
    @classmethod
    def _e164(cls, value: str) -> str:
        return to_e164(value, None).number if value.strip() else ""


class SweepSettings(BaseModel):
    """The daily sweep of open documents for time-based rules (server/planning/sweep.py)."""

    time: str = Field(default="08:00", description="Local time of day (business time zone) of the sweep.")


class RateLimitSettings(BaseModel):
    """Request limits and the lockout on the bearer API and the audit sign-in (server/web/ratelimit.py).

    Counted in the database in fixed windows, so every instance on one database shares the counts.
    The webhooks and the probes are never limited (a 4xx makes BC delete its subscriptions).
    """

    enabled: bool = Field(default=True, description="false: no limits and no lockout at all")
    api_per_token: int = Field(default=600, ge=1, description="requests per API window for one bearer token")
    api_per_ip: int = Field(
        default=120, ge=1, description="requests per API window from one address that present no token"
    )
    api_window_seconds: int = Field(default=60, ge=1, description="the API counting window")
    login_attempts: int = Field(
        default=10, ge=1, description="sign-in attempts per login window, per address and per token typed"
    )
    login_window_seconds: int = Field(default=300, ge=1, description="the sign-in counting window")
    lockout_failures: int = Field(
        default=20,
        ge=1,
        description="refused credentials (401) per lockout window from one address, or of one token, "
        "that start a lockout",
    )
    lockout_window_seconds: int = Field(default=300, ge=1, description="the window failures count in")
    lockout_seconds: int = Field(
        default=900, ge=1, description="how long a locked-out address or token is answered 429"
    )
    trusted_proxies: list[str] = Field(
        default_factory=list,
        description="addresses or networks (CIDR) of reverse proxies whose X-Forwarded-For names the "
        "client; empty: the socket peer is the client and the header is ignored",
    )

    @field_validator("trusted_proxies")
    @classmethod
    def _networks(cls, values: list[str]) -> list[str]:
        for value in values:
            try:
                ipaddress.ip_network(value.strip(), strict=False)
            except ValueError:
                raise ValueError(f"not an IP address or network: {value!r}") from None
        return [value.strip() for value in values]


# Flat names of settings that sit in a group, as operators set them before the groups existed:
# environment name -> (group, field). Documented in docs/operations.md.
FLAT_NAMES: dict[str, tuple[str, str]] = {
    "MLC_REMINDER_CAP_PER_DAY": ("reminders", "cap_per_day"),
    "MLC_REMINDER_CAP_PER_WEEK": ("reminders", "cap_per_week"),
    "MLC_REMINDER_CAP_TIMEZONE": ("reminders", "cap_timezone"),
    "MLC_REMINDER_SUPPRESS_FIELD": ("reminders", "suppress_field"),
    "MLC_REMINDER_SUPPRESS_VALUES": ("reminders", "suppress_values"),
    "MLC_TEST_MODE": ("testing", "enabled"),
    "MLC_TEST_NUMBER": ("testing", "number"),
    "MLC_SWEEP_TIME": ("sweep", "time"),
}


class FlatNamesSource(PydanticBaseSettingsSource):
    """The `FLAT_NAMES` variables, from the .env file and the environment (which wins), as groups.

    Listed after the ordinary sources, so `MLC_REMINDERS__CAP_PER_DAY` wins over
    `MLC_REMINDER_CAP_PER_DAY`. Lists and maps are JSON, as in the ordinary sources.
    """

    def __init__(self, settings_cls: type[BaseSettings], *sources: EnvSettingsSource) -> None:
        super().__init__(settings_cls)
        self.sources = sources  # lowest priority first

    def get_field_value(self, field: FieldInfo, field_name: str) -> tuple[Any, str, bool]:
        return None, field_name, False  # values are looked up by their flat name in __call__

    def __call__(self) -> dict[str, Any]:
        groups: dict[str, dict[str, Any]] = {}
        for source in self.sources:
            for name, (group, key) in FLAT_NAMES.items():
                raw = source.env_vars.get(name if source.case_sensitive else name.lower())
                if raw is None:
                    continue
                field = _group_model(group).model_fields[key]
                complex_value = get_origin(field.annotation) in (list, dict)
                groups.setdefault(group, {})[key] = json.loads(raw) if complex_value else raw
        return groups


def _group_model(group: str) -> type[BaseModel]:
    annotation = Settings.model_fields[group].annotation
    assert isinstance(annotation, type) and issubclass(annotation, BaseModel), group
    return annotation


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="MLC_", env_file=".env", env_nested_delimiter="__", extra="ignore"
    )

    mode: Literal["production", "development", "test"] = "development"
    database_url: str = Field(
        default=f"sqlite:///{REPO_ROOT / 'var' / 'ml-connector.sqlite3'}",
        description="SQLAlchemy URL; SQLite file by default, postgresql+psycopg://... for production.",
    )
    rules_dir: Path = Field(default=REPO_ROOT / "rules", description="Folder of rule files (*.yaml).")
    templates_dir: Path = Field(default=REPO_ROOT / "templates", description="Folder of message templates.")
    default_region: str = Field(
        default="GB", description="Region for phone numbers written without +country (ISO 3166 alpha-2)."
    )
    log_level: str = "INFO"
    public_base_url: str = Field(
        default="http://127.0.0.1:8000",
        description="The URL BC and Twilio call us on (behind a proxy: the public https URL); "
        "used for notificationUrl, StatusCallback and to rebuild URLs for signature checks.",
    )
    api_token: SecretStr = Field(
        default=SecretStr(""),
        description="The shared service bearer token for the admin and read API (identity 'service').",
    )
    api_identities: dict[str, str] = Field(
        default_factory=dict,
        description="Personal bearer tokens: identity -> SHA-256 (hex) of that person's token, e.g. "
        '{"alice": "9f86d0...", "dave": "2c26b4..."} (JSON). Only the hash is configured; '
        "`ml-connector changes new-token NAME` makes a token and prints its hash.",
    )
    bc: BCSettings = Field(default_factory=BCSettings)
    twilio: TwilioSettings = Field(default_factory=TwilioSettings)
    changes: ChangeSettings = Field(default_factory=ChangeSettings)
    reminders: ReminderSettings = Field(default_factory=ReminderSettings)
    testing: TestModeSettings = Field(default_factory=TestModeSettings)
    sweep: SweepSettings = Field(default_factory=SweepSettings)
    rate_limits: RateLimitSettings = Field(default_factory=RateLimitSettings)

    # Encryption at rest of the stored credentials (server/credentials.py). Keys are Fernet keys;
    # the first one encrypts, all of them decrypt (rotation: put the new key first, then
    # `ml-connector credentials rotate-key`).
    secret_key: SecretStr = Field(default=SecretStr(""), description="One Fernet key (MLC_SECRET_KEY).")
    secret_keys: SecretStr = Field(
        default=SecretStr(""), description="Comma-separated Fernet keys, newest first (MLC_SECRET_KEYS)."
    )
    secret_key_file: Path | None = Field(
        default=None, description="File with Fernet keys, one a line, newest first (mode 0600)."
    )

    # Workers
    fetch_interval_seconds: float = 1.0
    dispatch_interval_seconds: float = 0.5
    poll_interval_seconds: float = 60.0
    business_timezone: str = "Europe/London"
    messages_per_second: float = Field(default=10.0, gt=0)
    send_concurrency: int = Field(
        default=32,
        ge=1,
        le=64,
        # Each slot covers a send's 'submitting' commit and its create call (100-300 ms at Twilio),
        # so the rate a dispatcher can reach is about slots / that time: 32 keeps a 100/s sender
        # busy; the send budget, not this, paces the calls.
        description="Twilio create calls one dispatcher keeps in flight at once, all within "
        "messages_per_second (1: one at a time).",
    )
    subscription_check_interval_seconds: float = Field(
        default=300.0,
        gt=0,
        description="How often the subscription manager checks BC (create, renew, re-create, delete).",
    )
    subscription_renew_before_hours: float = Field(default=24.0, description="Renew this long before expiry.")
    max_send_attempts: int = 8
    # Recovery after a crash: work claimed by an instance that died is taken over when its lease
    # runs out, so these bound how long a restart waits for its predecessor's work.
    claim_seconds: float = Field(
        default=300.0,
        gt=0,
        description="Lease of claimed work (inbox batch, outbox job, a subscription pass); work of an "
        "instance that died is taken over after it.",
    )
    submit_lease_seconds: float = Field(
        default=900.0,
        gt=0,
        description="A send in flight longer than this (its instance died) is reconciled with Twilio; "
        "must outlast the Twilio client's whole call with its retries.",
    )
    reconcile_grace_seconds: float = Field(
        default=120.0, gt=0, description="How long Twilio's Messages list may lag a create."
    )
    reconcile_interval_seconds: float = Field(
        default=10.0, gt=0, description="At most one pass per interval."
    )
    reconcile_lease_seconds: float = Field(
        default=300.0,
        gt=0,
        description="Lease of the jobs one reconciliation pass takes; those of a reconciler that died "
        "are taken over after it.",
    )
    reconcile_max_listed: int = Field(
        default=20_000,
        gt=0,
        description="Safety bound on the recipient's Messages the reconciler reads back to a job's "
        "submit time; a list longer than this leaves the job for a person (needs_review).",
    )
    status_poll_after_seconds: float = Field(
        default=3600.0,
        gt=0,
        description="A send with no final status this long after its last update is looked up at "
        "Twilio (its status callbacks were lost, e.g. while the service was down).",
    )
    status_poll_max_age_hours: float = Field(
        default=72.0, gt=0, description="Sends older than this are no longer looked up (no DLR will come)."
    )
    max_body_bytes: int = Field(default=1_048_576, description="Larger request bodies are answered 413.")

    @field_validator("api_identities")
    @classmethod
    def _token_hashes(cls, value: dict[str, str]) -> dict[str, str]:
        seen: dict[str, str] = {}
        for identity, digest in value.items():
            where = f"MLC_API_IDENTITIES: {identity!r}"
            if not IDENTITY_NAME.fullmatch(identity) or identity == SERVICE_IDENTITY:
                raise ValueError(f"{where}: not a personal identity name (letters, digits, . _ @ + -)")
            if not re.fullmatch(r"[0-9a-fA-F]{64}", digest):
                raise ValueError(f"{where}: expected the SHA-256 of the token as 64 hex digits, not a token")
            if seen.setdefault(digest.lower(), identity) != identity:
                raise ValueError(f"{where}: the same token hash as {seen[digest.lower()]!r}")
        return {identity: digest.lower() for identity, digest in value.items()}

    @model_validator(mode="after")
    def _approvers_have_tokens(self) -> Settings:
        # A member without a personal token could never confirm, so a code sent to them is wasted.
        for role, members in self.changes.approver_roles.items():
            for identity in members:
                if identity not in self.api_identities:
                    raise ValueError(
                        f"MLC_CHANGES__APPROVER_ROLES: member {identity!r} of role {role!r} has no token "
                        "in MLC_API_IDENTITIES, so they could never confirm a change"
                    )
        return self

    @model_validator(mode="after")
    def _leases_outlast_the_twilio_client(self) -> Settings:
        """Leases that cannot outlast the Twilio client's own timeouts break "never send twice": a
        send still in flight would be taken for crashed, reconciled, found nowhere and sent again."""
        problems = lease_problems(self)
        if problems:
            raise ValueError("; ".join(problems))
        return self

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        assert isinstance(env_settings, EnvSettingsSource)
        assert isinstance(dotenv_settings, EnvSettingsSource)  # DotEnvSettingsSource is one
        flat = FlatNamesSource(settings_cls, dotenv_settings, env_settings)
        return init_settings, env_settings, dotenv_settings, flat, file_secret_settings


def lease_problems(settings: Settings) -> list[str]:
    """What is unsafe in the leases, given the Twilio client's timeouts (empty: all safe). Each
    problem names the settings involved and the bound they break (docs/operations.md, "Leases and
    timeouts")."""
    twilio = settings.twilio
    call, attempt = twilio.call_seconds(), twilio.attempt_seconds()
    client = (
        "MLC_TWILIO__CONNECT_TIMEOUT_SECONDS + MLC_TWILIO__WRITE_TIMEOUT_SECONDS + "
        "MLC_TWILIO__READ_TIMEOUT_SECONDS, the pool wait included"
    )
    problems: list[str] = []
    if settings.submit_lease_seconds <= call:
        # A send in flight past its submit lease is taken for interrupted and reconciled.
        problems.append(
            f"MLC_SUBMIT_LEASE_SECONDS={settings.submit_lease_seconds:g} must exceed the Twilio client's "
            f"whole create call, {call:g} s: MLC_TWILIO__MAX_ATTEMPTS={twilio.max_attempts} attempts of "
            f"{attempt:g} s ({client}) and the back-offs between them "
            "(MLC_TWILIO__RETRY_MAX_DELAY_SECONDS, MLC_TWILIO__RETRY_AFTER_LIMIT_SECONDS)"
        )
    if settings.reconcile_grace_seconds < attempt:
        # A create the client gave up on may still reach Twilio up to its timeouts after it went out.
        problems.append(
            f"MLC_RECONCILE_GRACE_SECONDS={settings.reconcile_grace_seconds:g} must be at least one "
            f"Twilio request's timeouts, {attempt:g} s ({client})"
        )
    if settings.claim_seconds < attempt:
        # A claimed job waits for a free send slot, which one create attempt may hold this long.
        problems.append(
            f"MLC_CLAIM_SECONDS={settings.claim_seconds:g} must be at least one Twilio request's "
            f"timeouts, {attempt:g} s ({client}): a claimed job may wait that long for a send slot"
        )
    if settings.reconcile_lease_seconds < attempt:
        # One look-up at Twilio (a page of the Messages list) may take this long; a shorter lease
        # hands the job to another reconciler while the first still reads.
        problems.append(
            f"MLC_RECONCILE_LEASE_SECONDS={settings.reconcile_lease_seconds:g} must be at least one Twilio "
            f"request's timeouts, {attempt:g} s ({client})"
        )
    return problems


class SettingsError(SystemExit):
    """Settings the service refuses to start with: one line naming each setting at fault."""


def load_settings() -> Settings:
    """The service's settings, read once from the environment and the .env file.

    Invalid settings end the command with one line on stderr naming them (SettingsError)."""
    try:
        return Settings()
    except ValidationError as exc:
        raise SettingsError(f"ml-connector: refusing to start: {one_line(exc)}") from None


def one_line(exc: ValidationError) -> str:
    """A ValidationError in one line: each error as `field: message`."""
    parts = []
    for error in exc.errors(include_url=False):
        where = ".".join(str(part) for part in error["loc"])
        message = str(error["msg"]).removeprefix("Value error, ")
        parts.append(f"{where}: {message}" if where else message)
    return " ".join(" ".join(parts).split())  # one line, whatever the messages hold
