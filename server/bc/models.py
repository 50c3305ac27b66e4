"""Typed views of Business Central API v2.0 payloads (field names exactly as BC spells them).

Every field is optional because `$select` may leave any of them out; unknown fields are kept
(`extra="allow"`) since BC adds fields between versions and custom API pages add their own.
Money is `Decimal` (the client parses JSON numbers as Decimal, never through float), dates are
`date`, timestamps are aware `datetime`. `to_json()` writes the same shape back: BC's names,
numbers as JSON numbers, timestamps as `2026-03-04T16:21:07.513Z`.
"""

from __future__ import annotations

from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Annotated, Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field, PlainSerializer


def format_bc_datetime(moment: datetime) -> str:
    """BC's UTC form: milliseconds without trailing zeros, `Z` suffix (`...:55.4Z`, `...:02Z`)."""
    moment = moment.astimezone(UTC) if moment.tzinfo else moment.replace(tzinfo=UTC)
    text = moment.strftime("%Y-%m-%dT%H:%M:%S")
    millis = moment.microsecond // 1000
    if millis:
        text += f".{millis:03d}".rstrip("0")
    return text + "Z"


def _number(value: Decimal) -> int | float:
    return int(value) if value == value.to_integral_value() and abs(value) < 2**53 else float(value)


Money = Annotated[Decimal, PlainSerializer(_number, return_type=int | float, when_used="json")]
Timestamp = Annotated[datetime, PlainSerializer(format_bc_datetime, return_type=str, when_used="json")]


class BCRecord(BaseModel):
    """Fields every v2.0 entity has; subclasses name the rest."""

    model_config = ConfigDict(extra="allow", populate_by_name=True, frozen=True)
    entity_set: ClassVar[str] = ""

    odata_etag: str | None = Field(default=None, alias="@odata.etag")
    id: str | None = None
    lastModifiedDateTime: Timestamp | None = None

    def to_json(self) -> dict[str, Any]:
        """The JSON object BC would send (only the fields this record carries)."""
        data: dict[str, Any] = self.model_dump(mode="json", by_alias=True, exclude_unset=True)
        return data


class Company(BCRecord):
    entity_set: ClassVar[str] = "companies"

    systemVersion: str | None = None
    timestamp: int | None = None
    name: str | None = None
    displayName: str | None = None
    businessProfileId: str | None = None
    systemCreatedAt: Timestamp | None = None
    systemCreatedBy: str | None = None
    systemModifiedAt: Timestamp | None = None
    systemModifiedBy: str | None = None


class _Address(BCRecord):
    addressLine1: str | None = None
    addressLine2: str | None = None
    city: str | None = None
    state: str | None = None
    country: str | None = None
    postalCode: str | None = None


class Customer(_Address):
    entity_set: ClassVar[str] = "customers"

    number: str | None = None
    displayName: str | None = None
    type: str | None = None  # "Company" or "Person"
    phoneNumber: str | None = None
    email: str | None = None
    website: str | None = None
    salespersonCode: str | None = None
    balanceDue: Money | None = None
    creditLimit: Money | None = None
    taxLiable: bool | None = None
    taxAreaId: str | None = None
    taxAreaDisplayName: str | None = None
    taxRegistrationNumber: str | None = None
    currencyId: str | None = None
    currencyCode: str | None = None
    paymentTermsId: str | None = None
    shipmentMethodId: str | None = None
    paymentMethodId: str | None = None
    blocked: str | None = None  # " ", "Ship", "Invoice", "All"


class Vendor(_Address):
    entity_set: ClassVar[str] = "vendors"

    number: str | None = None
    displayName: str | None = None
    phoneNumber: str | None = None
    email: str | None = None
    website: str | None = None
    taxRegistrationNumber: str | None = None
    currencyId: str | None = None
    currencyCode: str | None = None
    irs1099Code: str | None = None
    paymentTermsId: str | None = None
    paymentMethodId: str | None = None
    taxLiable: bool | None = None
    blocked: str | None = None  # " ", "Payment", "All"
    balance: Money | None = None


class _DocumentAddresses(BCRecord):
    """sellTo*/billTo*/shipTo*/buyFrom*/payTo* address blocks of sales and purchase documents."""

    sellToAddressLine1: str | None = None
    sellToAddressLine2: str | None = None
    sellToCity: str | None = None
    sellToCountry: str | None = None
    sellToState: str | None = None
    sellToPostCode: str | None = None
    billToAddressLine1: str | None = None
    billToAddressLine2: str | None = None
    billToCity: str | None = None
    billToCountry: str | None = None
    billToState: str | None = None
    billToPostCode: str | None = None
    shipToAddressLine1: str | None = None
    shipToAddressLine2: str | None = None
    shipToCity: str | None = None
    shipToCountry: str | None = None
    shipToState: str | None = None
    shipToPostCode: str | None = None
    buyFromAddressLine1: str | None = None
    buyFromAddressLine2: str | None = None
    buyFromCity: str | None = None
    buyFromCountry: str | None = None
    buyFromState: str | None = None
    buyFromPostCode: str | None = None
    payToAddressLine1: str | None = None
    payToAddressLine2: str | None = None
    payToCity: str | None = None
    payToCountry: str | None = None
    payToState: str | None = None
    payToPostCode: str | None = None


class _DocumentTotals(_DocumentAddresses):
    number: str | None = None
    currencyId: str | None = None
    currencyCode: str | None = None
    shortcutDimension1Code: str | None = None
    shortcutDimension2Code: str | None = None
    pricesIncludeTax: bool | None = None
    discountAmount: Money | None = None
    discountAppliedBeforeTax: bool | None = None
    totalAmountExcludingTax: Money | None = None
    totalTaxAmount: Money | None = None
    totalAmountIncludingTax: Money | None = None
    status: str | None = None


class SalesInvoice(_DocumentTotals):
    entity_set: ClassVar[str] = "salesInvoices"

    externalDocumentNumber: str | None = None
    invoiceDate: date | None = None
    postingDate: date | None = None
    dueDate: date | None = None
    promisedPayDate: date | None = None  # "0001-01-01" when none
    customerPurchaseOrderReference: str | None = None
    customerId: str | None = None
    customerNumber: str | None = None
    customerName: str | None = None
    billToName: str | None = None
    billToCustomerId: str | None = None
    billToCustomerNumber: str | None = None
    shipToName: str | None = None
    shipToContact: str | None = None
    orderId: str | None = None
    orderNumber: str | None = None
    paymentTermsId: str | None = None
    shipmentMethodId: str | None = None
    salesperson: str | None = None
    disputeStatusId: str | None = None
    disputeStatus: str | None = None
    remainingAmount: Money | None = None
    phoneNumber: str | None = None
    email: str | None = None
    customer: Customer | None = None  # $expand=customer


class PurchaseInvoice(_DocumentTotals):
    """No `remainingAmount` on purchase invoices
    (https://learn.microsoft.com/en-us/dynamics365/business-central/dev-itpro/api-reference/v2.0/resources/dynamics_purchaseinvoice)."""

    entity_set: ClassVar[str] = "purchaseInvoices"

    postingDate: date | None = None
    invoiceDate: date | None = None
    dueDate: date | None = None
    vendorInvoiceNumber: str | None = None
    vendorId: str | None = None
    vendorNumber: str | None = None
    vendorName: str | None = None
    payToName: str | None = None
    payToContact: str | None = None
    payToVendorId: str | None = None
    payToVendorNumber: str | None = None
    shipToName: str | None = None
    shipToContact: str | None = None
    orderId: str | None = None
    orderNumber: str | None = None
    purchaser: str | None = None
    vendor: Vendor | None = None  # $expand=vendor


class PurchaseOrder(_DocumentTotals):
    entity_set: ClassVar[str] = "purchaseOrders"

    orderDate: date | None = None
    postingDate: date | None = None
    dueDate: date | None = None
    vendorId: str | None = None
    vendorNumber: str | None = None
    vendorName: str | None = None
    payToName: str | None = None
    payToVendorId: str | None = None
    payToVendorNumber: str | None = None
    shipToName: str | None = None
    shipToContact: str | None = None
    paymentTermsId: str | None = None
    shipmentMethodId: str | None = None
    purchaser: str | None = None
    requestedReceiptDate: date | None = None
    fullyReceived: bool | None = None
    vendor: Vendor | None = None  # $expand=vendor


class CustomerPayment(BCRecord):
    entity_set: ClassVar[str] = "customerPayments"

    journalId: str | None = None
    journalDisplayName: str | None = None
    lineNumber: int | None = None
    customerId: str | None = None
    customerNumber: str | None = None
    postingDate: date | None = None
    documentNumber: str | None = None
    externalDocumentNumber: str | None = None
    amount: Money | None = None
    appliesToInvoiceId: str | None = None
    appliesToInvoiceNumber: str | None = None
    description: str | None = None
    comment: str | None = None
    customer: Customer | None = None  # $expand=customer


class CustomerPaymentJournal(BCRecord):
    entity_set: ClassVar[str] = "customerPaymentJournals"

    code: str | None = None
    displayName: str | None = None
    balancingAccountId: str | None = None
    balancingAccountNumber: str | None = None
    customerPayments: list[CustomerPayment] | None = None  # $expand=customerPayments


class CustomRecord(BCRecord):
    """A record from a custom API page (e.g. vendor bank accounts): fields are whatever the page has."""


class Subscription(BaseModel):
    """A webhook subscription (`/api/v2.0/subscriptions`)."""

    model_config = ConfigDict(extra="allow", populate_by_name=True, frozen=True)

    odata_etag: str | None = Field(default=None, alias="@odata.etag")
    subscriptionId: str
    notificationUrl: str
    resource: str
    timestamp: int | None = None
    userId: str | None = None
    lastModifiedDateTime: Timestamp | None = None
    clientState: str | None = None
    expirationDateTime: Timestamp
    systemCreatedAt: Timestamp | None = None
    systemCreatedBy: str | None = None
    systemModifiedAt: Timestamp | None = None
    systemModifiedBy: str | None = None

    def to_json(self) -> dict[str, Any]:
        data: dict[str, Any] = self.model_dump(mode="json", by_alias=True, exclude_unset=True)
        return data


ChangeType = Literal["created", "updated", "deleted", "collection"]


class NotificationItem(BaseModel):
    """One change in a webhook POST. No entity data: `resource` says what to fetch."""

    model_config = ConfigDict(extra="allow", frozen=True)

    subscriptionId: str
    clientState: str | None = None
    expirationDateTime: Timestamp
    resource: str
    changeType: ChangeType
    lastModifiedDateTime: Timestamp


class NotificationBatch(BaseModel):
    model_config = ConfigDict(extra="allow", frozen=True)

    value: list[NotificationItem]


ENTITY_MODELS: dict[str, type[BCRecord]] = {
    model.entity_set: model
    for model in (
        Company,
        Customer,
        Vendor,
        SalesInvoice,
        PurchaseInvoice,
        PurchaseOrder,
        CustomerPayment,
        CustomerPaymentJournal,
    )
}


def record_json(record: BCRecord) -> dict[str, Any]:
    """A BC record as the engine and the snapshot table see it: BC's JSON shape, no OData annotations."""
    return {k: v for k, v in record.to_json().items() if not k.startswith("@")}
