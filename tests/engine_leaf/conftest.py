"""Shared fixtures for the leaf modules of the engine (expressions, helpers, templates, phones)."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from datetime import UTC, date, datetime
from typing import Any

import pytest

from engine.functions import EvaluationContext

NOW = datetime(2026, 3, 30, 9, 15, tzinfo=UTC)
TODAY = date(2026, 3, 30)

INVOICE: dict[str, Any] = {
    "id": "5a0e7c12-9d4b-ef11-8a6b-6045bde9c1a2",
    "number": "PS-INV104187",
    "invoiceDate": "2026-02-14",
    "dueDate": "2026-03-16",
    "promisedPayDate": "0001-01-01",
    "customerName": "Northwind Outdoor Supply",
    "currencyCode": "USD",
    "remainingAmount": 5328.6,
    "totalAmountExcludingTax": 4980.0,
    "totalTaxAmount": 348.6,
    "totalAmountIncludingTax": 5328.6,
    "discountAmount": 0,
    "status": "Open",
    "lastModifiedDateTime": "2026-03-29T18:02:44.107Z",
    "phoneNumber": "503-555-0142",
    "customer": {"number": "C00420", "blocked": " ", "balanceDue": 12000.5, "creditLimit": 10000},
    "tags": ["key-account", "net30"],
}

ContextFactory = Callable[..., EvaluationContext]


@pytest.fixture
def make_ctx() -> ContextFactory:
    def factory(
        record: Mapping[str, Any] | None = None,
        previous: Mapping[str, Any] | None = None,
        *,
        now: datetime = NOW,
        today: date = TODAY,
    ) -> EvaluationContext:
        return EvaluationContext(
            record=INVOICE if record is None else record, previous=previous, now=now, today=today
        )

    return factory


@pytest.fixture
def invoice() -> dict[str, Any]:
    import copy

    return copy.deepcopy(INVOICE)
