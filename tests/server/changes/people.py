"""The people of the OTP-gate tests: personal bearer tokens (MLC_API_IDENTITIES holds only their
SHA-256), the approver roles they belong to, and an API client for each."""

from __future__ import annotations

import hashlib
import secrets
from typing import Any

import httpx

from server.sandbox.stack import Stack

APPROVER = "+447700900123"  # dave, the treasury approver
CONTROLLER = "+447700900456"  # carol, the finance controller
ALICE_PHONE = "+447700900111"
ERIN_PHONE = "+447700900222"

PEOPLE = ("alice", "bob", "carol", "dave", "erin")
TOKENS = {name: f"{name}-{secrets.token_urlsafe(18)}" for name in PEOPLE}

ROLES: dict[str, dict[str, str]] = {
    "treasury": {"dave": APPROVER},
    "finance-controller": {"carol": CONTROLLER},
    "payables": {"alice": ALICE_PHONE, "erin": ERIN_PHONE},
    "ap-clerks": {"alice": ALICE_PHONE},
}


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def identity_settings() -> dict[str, Any]:
    """The Settings values that give each person a token (only its hash is configured)."""
    return {"api_identities": {name: token_hash(token) for name, token in TOKENS.items()}}


def person(stack: Stack, name: str) -> httpx.AsyncClient:
    """An API client presenting `name`'s personal token (use as `async with person(stack, "alice")`)."""
    headers = {"Authorization": f"Bearer {TOKENS[name]}"}
    return httpx.AsyncClient(base_url=stack.url, headers=headers, timeout=30)
