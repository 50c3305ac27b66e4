"""Reminder pauses, the pure part: does a pause cover this record? (The store keeps them: server/pauses.py.)

A pause names a customer (its number, e.g. C0042, or its BC id) or one invoice (number or id) and
an end: reminders about that customer's invoices, or that invoice, are held back until then. It
only concerns reminder rules (rules with a `stages:` ladder); receipts, approvals and internal
alerts are never paused.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

Scope = Literal["customer", "invoice"]
SCOPES: tuple[str, ...] = ("customer", "invoice")


@dataclass(frozen=True)
class Pause:
    scope: str
    subject: str
    until: datetime
    reason: str = ""
    id: int | None = None
    company_id: str | None = None

    def describe(self) -> str:
        why = f" ({self.reason})" if self.reason else ""
        return f"{self.scope} {self.subject} paused until {self.until.isoformat()}{why}"


def _norm(value: Any) -> str | None:
    return None if value is None or value == "" else str(value).strip().lower()


def record_subjects(record: Mapping[str, Any]) -> dict[str, set[str]]:
    """The names a pause may use for this record: its own number/id and its customer's number/id."""
    customer = record.get("customer") if isinstance(record.get("customer"), Mapping) else {}
    assert isinstance(customer, Mapping)
    invoice = {_norm(record.get("number")), _norm(record.get("id"))}
    owner = {
        _norm(record.get("customerNumber")),
        _norm(record.get("customerId")),
        _norm(customer.get("number")),
        _norm(customer.get("id")),
    }
    return {"invoice": {v for v in invoice if v}, "customer": {v for v in owner if v}}


def pause_for(
    record: Mapping[str, Any] | None,
    pauses: Iterable[Pause],
    now: datetime,
    *,
    company_id: str | None = None,
) -> Pause | None:
    """The pause covering `record` at `now` that ends last (None when none applies)."""
    if record is None:
        return None
    names = record_subjects(record)
    found: Pause | None = None
    for pause in pauses:
        if pause.until <= now:
            continue
        if pause.company_id is not None and company_id is not None and pause.company_id != company_id:
            continue
        if _norm(pause.subject) in names.get(pause.scope, set()) and (
            found is None or pause.until > found.until
        ):
            found = pause
    return found
