"""Stored credentials: one encrypted row per kind (server/credentials.py encrypts and decrypts).

Functions take a Session and never commit (the caller's session_scope does).
"""

from __future__ import annotations

from datetime import datetime

import sqlalchemy as sa
from sqlalchemy import Engine
from sqlmodel import Session, select

from server.store.tables import StoredCredential


def has_credentials_table(engine: Engine) -> bool:
    """Whether the schema holds the credentials table (a caller may not have migrated it)."""
    return bool(sa.inspect(engine).has_table(StoredCredential.__tablename__))


def get_credential(session: Session, name: str) -> StoredCredential | None:
    return session.get(StoredCredential, name)


def credential_names(session: Session) -> list[str]:
    return list(session.exec(select(StoredCredential.name)).all())


def all_credentials(session: Session) -> list[StoredCredential]:
    return list(session.exec(select(StoredCredential)).all())


def put_credential(session: Session, name: str, ciphertext: str, *, now: datetime, actor: str) -> None:
    """Insert the row for `name`, or replace its ciphertext."""
    row = session.get(StoredCredential, name)
    if row is None:
        session.add(StoredCredential(name=name, ciphertext=ciphertext, updated_at=now, updated_by=actor))
    else:
        row.ciphertext = ciphertext
        row.updated_at = now
        row.updated_by = actor
        session.add(row)


def count_credentials(session: Session) -> int:
    return len(session.exec(select(StoredCredential.name)).all())
