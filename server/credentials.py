"""Credentials for BC and Twilio, stored in the database encrypted at rest (Fernet / MultiFernet).

Keys come from MLC_SECRET_KEYS (comma-separated, newest first), MLC_SECRET_KEY, or a key file
(MLC_SECRET_KEY_FILE, one key a line, newest first). The first key encrypts; every key decrypts, so
rotation is: put a new key first (`credentials new-key --file`), run `credentials rotate-key` (every
row is re-encrypted with the first key), then drop the old key.

A whole credential set (secret and non-secret fields) is one Fernet token in one row: nothing about
the tenant or the account is readable from the database without a key. The service loads the stored
sets at start (database first, environment as the fallback) in `apply_stored_credentials`.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable
from datetime import datetime
from pathlib import Path
from typing import Literal

from cryptography.fernet import Fernet, InvalidToken, MultiFernet
from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError
from sqlalchemy import Engine
from sqlmodel import Session

from server.settings import BCSettings, Settings, TwilioSettings
from server.store.audit import record_audit
from server.store.credentials import (
    all_credentials,
    count_credentials,
    credential_names,
    get_credential,
    has_credentials_table,
    put_credential,
)
from server.store.db import read_scope, session_scope
from server.store.tables import StoredCredential

Kind = Literal["bc", "twilio"]
KINDS: tuple[Kind, ...] = ("bc", "twilio")
MASK = "********"


class CredentialError(Exception):
    """Credentials cannot be stored or read (no key, wrong key, unreadable row)."""


class BCCredentials(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    tenant_id: str = ""
    environment: str = "production"
    client_id: str = ""
    client_secret: SecretStr = SecretStr("")
    companies: list[str] = Field(default_factory=list)


class TwilioCredentials(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    account_sid: str = ""
    api_key_sid: str = ""
    api_key_secret: SecretStr = SecretStr("")
    auth_token: SecretStr = SecretStr("")
    from_number: str = ""
    messaging_service_sid: str = ""
    verify_service_sid: str = ""


Credentials = BCCredentials | TwilioCredentials
MODELS: dict[Kind, type[BCCredentials] | type[TwilioCredentials]] = {
    "bc": BCCredentials,
    "twilio": TwilioCredentials,
}
# The fields that are secrets: read from a prompt or stdin only, masked when shown.
SECRET_FIELDS: dict[Kind, tuple[str, ...]] = {
    "bc": ("client_secret",),
    "twilio": ("api_key_secret", "auth_token"),
}


def secret_fields(kind: Kind) -> tuple[str, ...]:
    return SECRET_FIELDS[kind]


def plain_fields(kind: Kind) -> tuple[str, ...]:
    return tuple(name for name in MODELS[kind].model_fields if name not in SECRET_FIELDS[kind])


# -- keys -------------------------------------------------------------------------------------------


def parse_keys(text: str, source: str) -> list[bytes]:
    """Fernet keys from comma- or newline-separated text; an invalid key is named by its position."""
    keys: list[bytes] = []
    items = [item.strip() for line in text.splitlines() for item in line.split(",")]
    for position, item in enumerate((i for i in items if i and not i.startswith("#")), start=1):
        try:
            Fernet(item.encode())
        except ValueError as exc:
            raise CredentialError(
                f"{source}: key {position} is not a Fernet key (32 url-safe base64-encoded bytes); "
                "make one with `ml-connector credentials new-key --file PATH`"
            ) from exc
        keys.append(item.encode())
    return keys


def load_keys(settings: Settings) -> list[bytes]:
    """The configured keys, newest first: MLC_SECRET_KEYS, else MLC_SECRET_KEY, else the key file."""
    keys_text = settings.secret_keys.get_secret_value()
    if keys_text.strip():
        return parse_keys(keys_text, "MLC_SECRET_KEYS")
    key_text = settings.secret_key.get_secret_value()
    if key_text.strip():
        return parse_keys(key_text, "MLC_SECRET_KEY")
    if settings.secret_key_file is not None:
        path = settings.secret_key_file
        try:
            text = path.read_text(encoding="utf-8")
        except OSError as exc:
            raise CredentialError(f"MLC_SECRET_KEY_FILE: cannot read {path}: {exc.strerror}") from exc
        return parse_keys(text, str(path))
    return []


def cipher_for(keys: list[bytes]) -> MultiFernet:
    if not keys:
        raise CredentialError(
            "no encryption key: set MLC_SECRET_KEY (or MLC_SECRET_KEYS, or MLC_SECRET_KEY_FILE); "
            "make one with `ml-connector credentials new-key --file PATH`"
        )
    return MultiFernet([Fernet(key) for key in keys])


def write_new_key(path: Path) -> bool:
    """Put a fresh key first in `path` (created 0600), keeping older keys for decryption.

    Returns True when the file already held keys (a rotation: run `credentials rotate-key` next).
    """
    existing = path.read_text(encoding="utf-8") if path.exists() else ""
    parse_keys(existing, str(path))  # refuse to extend a file that holds something else
    path.parent.mkdir(parents=True, exist_ok=True)
    content = Fernet.generate_key().decode() + "\n" + existing
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "w", encoding="utf-8") as handle:
        handle.write(content)
    os.chmod(path, 0o600)
    return bool(existing.strip())


# -- the store ---------------------------------------------------------------------------------------


def _to_plain(credentials: Credentials) -> dict[str, object]:
    data = credentials.model_dump()
    for name, value in list(data.items()):
        if isinstance(value, SecretStr):
            data[name] = value.get_secret_value()
    return data


class CredentialStore:
    """Encrypted credential sets in the `credentials` table. Never logs or returns plain secrets
    except through the typed models (whose secrets are SecretStr)."""

    def __init__(self, engine: Engine, keys: list[bytes]) -> None:
        self.engine = engine
        self.keys = keys

    def cipher(self) -> MultiFernet:
        return cipher_for(self.keys)

    def _decrypt(self, row: StoredCredential) -> Credentials:
        kind: Kind = row.name  # type: ignore[assignment]
        try:
            plain = self.cipher().decrypt(row.ciphertext.encode())
        except InvalidToken as exc:
            raise CredentialError(
                f"credentials '{row.name}': none of the configured keys decrypts them "
                "(a key was removed before `credentials rotate-key`, or the wrong key is set)"
            ) from exc
        try:
            return MODELS[kind].model_validate(json.loads(plain))
        except (ValueError, ValidationError) as exc:
            raise CredentialError(f"credentials '{row.name}': stored data is unreadable") from exc

    def load(self, kind: Kind) -> Credentials | None:
        with read_scope(self.engine) as session:
            row = get_credential(session, kind)
            return None if row is None else self._decrypt(row)

    def stored_kinds(self) -> list[str]:
        with read_scope(self.engine) as session:
            return sorted(credential_names(session))

    def save(self, credentials: Credentials, *, actor: str, now: datetime) -> Kind:
        kind: Kind = "bc" if isinstance(credentials, BCCredentials) else "twilio"
        token = self.cipher().encrypt(json.dumps(_to_plain(credentials)).encode()).decode()
        with session_scope(self.engine) as session:
            put_credential(session, kind, token, now=now, actor=actor)
            # Field names only: the audit log is read by people and exported.
            record_audit(
                session,
                actor=actor,
                action="credentials.set",
                subject=f"credentials:{kind}",
                now=now,
                details={"fields": sorted(credentials.model_fields_set)},
            )
        return kind

    def rotate(self, *, actor: str, now: datetime) -> int:
        """Re-encrypt every stored set with the first key. Returns how many rows were rewritten."""
        cipher = self.cipher()
        with session_scope(self.engine) as session:
            rows = all_credentials(session)
            for row in rows:
                try:
                    row.ciphertext = cipher.rotate(row.ciphertext.encode()).decode()
                except InvalidToken as exc:
                    raise CredentialError(
                        f"credentials '{row.name}': none of the configured keys decrypts them; "
                        "keep the old key in the list (after the new one) until rotation is done"
                    ) from exc
                row.updated_at = now
                session.add(row)
            record_audit(
                session,
                actor=actor,
                action="credentials.rotate_key",
                subject="credentials",
                now=now,
                details={"rows": len(rows), "keys_configured": len(self.keys)},
            )
        return len(rows)


def masked(credentials: Credentials) -> dict[str, object]:
    """What `credentials show` prints: plain fields as they are, secrets as set/unset only."""
    kind: Kind = "bc" if isinstance(credentials, BCCredentials) else "twilio"
    data = credentials.model_dump()
    for name in SECRET_FIELDS[kind]:
        value = getattr(credentials, name).get_secret_value()
        data[name] = MASK if value else "(not set)"
    return data


def stored_count(session: Session) -> int:
    return count_credentials(session)


# -- settings -----------------------------------------------------------------------------------------


def credentials_from_settings(settings: Settings, kind: Kind) -> Credentials:
    """The environment's values for `kind` (the fallback when nothing is stored)."""
    if kind == "bc":
        bc = settings.bc
        return BCCredentials(
            tenant_id=bc.tenant_id,
            environment=bc.environment,
            client_id=bc.client_id,
            client_secret=bc.client_secret,
            companies=list(bc.companies),
        )
    tw = settings.twilio
    return TwilioCredentials(
        account_sid=tw.account_sid,
        api_key_sid=tw.api_key_sid,
        api_key_secret=tw.api_key_secret,
        auth_token=tw.auth_token,
        from_number=tw.from_number,
        messaging_service_sid=tw.messaging_service_sid,
        verify_service_sid=tw.verify_service_sid,
    )


def with_credentials(settings: Settings, stored: Iterable[Credentials]) -> Settings:
    """`settings` with the stored credential sets laid over the environment's groups."""
    bc: BCSettings = settings.bc
    twilio: TwilioSettings = settings.twilio
    for credentials in stored:
        if isinstance(credentials, BCCredentials):
            bc = bc.model_copy(update=dict(credentials))
        else:
            twilio = twilio.model_copy(update=dict(credentials))
    return settings.model_copy(update={"bc": bc, "twilio": twilio})


def apply_stored_credentials(settings: Settings, engine: Engine) -> Settings:
    """Database first, environment as the fallback. Needs a key only when something is stored."""
    if not has_credentials_table(engine):
        return settings  # schema not migrated by this caller (open_services(migrate=False))
    with read_scope(engine) as session:
        if stored_count(session) == 0:
            return settings
    store = CredentialStore(engine, load_keys(settings))
    found = [c for c in (store.load(kind) for kind in KINDS) if c is not None]
    return with_credentials(settings, found)
