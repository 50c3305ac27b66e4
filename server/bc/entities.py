"""Where each entity set lives in the API, and which model reads it.

`EntitySet` names a collection under `companies({id})` of one API (the standard `api/v2.0`, or a
custom API page `api/{publisher}/{group}/{version}`). The standard ones are constants; payments
under one journal and custom pages are built by functions.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from server.bc.models import (
    ENTITY_MODELS,
    BCRecord,
    Customer,
    CustomerPayment,
    CustomerPaymentJournal,
    CustomRecord,
    PurchaseInvoice,
    PurchaseOrder,
    SalesInvoice,
    Vendor,
)

R = TypeVar("R", bound=BCRecord)

STANDARD_API = "api/v2.0"
_GUID = re.compile(r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$")
_SEGMENT = re.compile(r"^[A-Za-z][A-Za-z0-9_.]*$")


def check_guid(value: str, field: str = "id") -> str:
    """A GUID as BC writes it; anything else is refused before it can reach a URL or a $filter."""
    if not _GUID.match(value):
        raise ValueError(f"{field}: {value!r} is not a GUID")
    return value.lower()


@dataclass(frozen=True)
class EntitySet(Generic[R]):
    path: str  # relative to companies({id}), e.g. "customers"
    model: type[R]
    api: str = STANDARD_API

    def collection_path(self, company_id: str) -> str:
        return f"{self.api}/companies({check_guid(company_id, 'company_id')})/{self.path}"

    def record_path(self, company_id: str, record_id: str) -> str:
        return f"{self.collection_path(company_id)}({check_guid(record_id)})"


CUSTOMERS = EntitySet("customers", Customer)
VENDORS = EntitySet("vendors", Vendor)
SALES_INVOICES = EntitySet("salesInvoices", SalesInvoice)
PURCHASE_INVOICES = EntitySet("purchaseInvoices", PurchaseInvoice)
PURCHASE_ORDERS = EntitySet("purchaseOrders", PurchaseOrder)
CUSTOMER_PAYMENT_JOURNALS = EntitySet("customerPaymentJournals", CustomerPaymentJournal)
CUSTOMER_PAYMENTS = EntitySet("customerPayments", CustomerPayment)


def entity_set(name: str) -> EntitySet[Any]:
    """The standard entity set `name` with its model; an unknown name is read as CustomRecord."""
    return EntitySet(name, ENTITY_MODELS.get(name, CustomRecord))


def journal_payments(journal_id: str) -> EntitySet[CustomerPayment]:
    """The payment lines of one customer payment journal."""
    return EntitySet(
        f"customerPaymentJournals({check_guid(journal_id, 'journal_id')})/customerPayments", CustomerPayment
    )


def custom_page(publisher: str, group: str, version: str, entity_set: str) -> EntitySet[CustomRecord]:
    """A custom API page, `/api/{publisher}/{group}/{version}/companies({id})/{entitySet}`."""
    for name, value in (
        ("publisher", publisher),
        ("group", group),
        ("version", version),
        ("entity_set", entity_set),
    ):
        if not _SEGMENT.match(value):
            raise ValueError(f"{name}: {value!r} is not a valid API path segment")
    return EntitySet(entity_set, CustomRecord, api=f"api/{publisher}/{group}/{version}")
