"""What the BC simulator serves: entity sets, their full field sets (BC's names, JSON types and
default values, in BC's order), navigation properties and which sets are webhook-enabled.

Field sets follow the v2.0 resource property tables of the v2.0 API reference
(BC docs api-reference/v2.0/resources/dynamics_<entity>); a
record created with only a few fields is completed from these defaults, so every answer has BC's
full shape.

BC docs pages are cited by their path under
https://learn.microsoft.com/dynamics365/business-central/dev-itpro/.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

NULL_GUID = "00000000-0000-0000-0000-000000000000"
NO_DATE = "0001-01-01"
NO_DATETIME = "0001-01-01T00:00:00Z"

_ADDRESS = {"addressLine1": "", "addressLine2": "", "city": "", "state": "", "country": "", "postalCode": ""}

CUSTOMER: dict[str, Any] = {
    "id": NULL_GUID,
    "number": "",
    "displayName": "",
    "type": "Company",
    **_ADDRESS,
    "phoneNumber": "",
    "email": "",
    "website": "",
    "salespersonCode": "",
    "balanceDue": 0,
    "creditLimit": 0,
    "taxLiable": False,
    "taxAreaId": NULL_GUID,
    "taxAreaDisplayName": "",
    "taxRegistrationNumber": "",
    "currencyId": NULL_GUID,
    "currencyCode": "",
    "paymentTermsId": NULL_GUID,
    "shipmentMethodId": NULL_GUID,
    "paymentMethodId": NULL_GUID,
    "blocked": " ",
    "lastModifiedDateTime": NO_DATETIME,
}

VENDOR: dict[str, Any] = {
    "id": NULL_GUID,
    "number": "",
    "displayName": "",
    **_ADDRESS,
    "phoneNumber": "",
    "email": "",
    "website": "",
    "taxRegistrationNumber": "",
    "currencyId": NULL_GUID,
    "currencyCode": "",
    "irs1099Code": "",
    "paymentTermsId": NULL_GUID,
    "paymentMethodId": NULL_GUID,
    "taxLiable": False,
    "blocked": " ",
    "balance": 0,
    "lastModifiedDateTime": NO_DATETIME,
}


def _addresses(*prefixes: str) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for p in prefixes:
        out.update(
            {
                f"{p}AddressLine1": "",
                f"{p}AddressLine2": "",
                f"{p}City": "",
                f"{p}Country": "",
                f"{p}State": "",
                f"{p}PostCode": "",
            }
        )
    return out


_TOTALS: dict[str, Any] = {
    "discountAmount": 0,
    "discountAppliedBeforeTax": True,
    "totalAmountExcludingTax": 0,
    "totalTaxAmount": 0,
    "totalAmountIncludingTax": 0,
}

SALES_INVOICE: dict[str, Any] = {
    "id": NULL_GUID,
    "number": "",
    "externalDocumentNumber": "",
    "invoiceDate": NO_DATE,
    "postingDate": NO_DATE,
    "dueDate": NO_DATE,
    "promisedPayDate": NO_DATE,
    "customerPurchaseOrderReference": "",
    "customerId": NULL_GUID,
    "customerNumber": "",
    "customerName": "",
    "billToName": "",
    "billToCustomerId": NULL_GUID,
    "billToCustomerNumber": "",
    "shipToName": "",
    "shipToContact": "",
    **_addresses("sellTo", "billTo", "shipTo"),
    "currencyId": NULL_GUID,
    "shortcutDimension1Code": "",
    "shortcutDimension2Code": "",
    "currencyCode": "",
    "orderId": NULL_GUID,
    "orderNumber": "",
    "paymentTermsId": NULL_GUID,
    "shipmentMethodId": NULL_GUID,
    "salesperson": "",
    "disputeStatusId": NULL_GUID,
    "disputeStatus": "",
    "pricesIncludeTax": False,
    "remainingAmount": 0,
    **_TOTALS,
    "status": "Draft",
    "lastModifiedDateTime": NO_DATETIME,
    "phoneNumber": "",
    "email": "",
}

PURCHASE_INVOICE: dict[str, Any] = {
    "id": NULL_GUID,
    "number": "",
    "postingDate": NO_DATE,
    "invoiceDate": NO_DATE,
    "dueDate": NO_DATE,
    "vendorInvoiceNumber": "",
    "vendorId": NULL_GUID,
    "vendorNumber": "",
    "vendorName": "",
    "payToName": "",
    "payToContact": "",
    "payToVendorId": NULL_GUID,
    "payToVendorNumber": "",
    "shipToName": "",
    "shipToContact": "",
    **_addresses("buyFrom", "shipTo", "payTo"),
    "shortcutDimension1Code": "",
    "shortcutDimension2Code": "",
    "currencyId": NULL_GUID,
    "currencyCode": "",
    "orderId": NULL_GUID,
    "orderNumber": "",
    "purchaser": "",
    "pricesIncludeTax": False,
    **_TOTALS,
    "status": "Draft",
    "lastModifiedDateTime": NO_DATETIME,
}

PURCHASE_ORDER: dict[str, Any] = {
    "id": NULL_GUID,
    "number": "",
    "orderDate": NO_DATE,
    "postingDate": NO_DATE,
    "vendorId": NULL_GUID,
    "vendorNumber": "",
    "vendorName": "",
    "payToName": "",
    "payToVendorId": NULL_GUID,
    "payToVendorNumber": "",
    "shipToName": "",
    "shipToContact": "",
    **_addresses("buyFrom", "payTo", "shipTo"),
    "shortcutDimension1Code": "",
    "shortcutDimension2Code": "",
    "currencyId": NULL_GUID,
    "currencyCode": "",
    "pricesIncludeTax": False,
    "paymentTermsId": NULL_GUID,
    "shipmentMethodId": NULL_GUID,
    "purchaser": "",
    "requestedReceiptDate": NO_DATE,
    **_TOTALS,
    "fullyReceived": False,
    "status": "Draft",
    "lastModifiedDateTime": NO_DATETIME,
}

CUSTOMER_PAYMENT_JOURNAL: dict[str, Any] = {
    "id": NULL_GUID,
    "code": "",
    "displayName": "",
    "lastModifiedDateTime": NO_DATETIME,
    "balancingAccountId": NULL_GUID,
    "balancingAccountNumber": "",
}

CUSTOMER_PAYMENT: dict[str, Any] = {
    "id": NULL_GUID,
    "journalId": NULL_GUID,
    "journalDisplayName": "",
    "lineNumber": 0,
    "customerId": NULL_GUID,
    "customerNumber": "",
    "postingDate": NO_DATE,
    "documentNumber": "",
    "externalDocumentNumber": "",
    "amount": 0,
    "appliesToInvoiceId": NULL_GUID,
    "appliesToInvoiceNumber": "",
    "description": "",
    "comment": "",
    "lastModifiedDateTime": NO_DATETIME,
}

# Custom API page (the v2.0 API reference has no vendor bank entity, see
# BC docs api-reference/v2.0/resources/dynamics_vendor). Publisher "contoso".
VENDOR_BANK_ACCOUNT: dict[str, Any] = {
    "id": NULL_GUID,
    "vendorId": NULL_GUID,
    "vendorNumber": "",
    "code": "",
    "name": "",
    "bankAccountNumber": "",
    "bankBranchNumber": "",
    "iban": "",
    "swiftCode": "",
    "currencyCode": "",
    "lastModifiedDateTime": NO_DATETIME,
}

CUSTOM_API = "api/contoso/finance/v1.0"
STANDARD_API = "api/v2.0"


@dataclass(frozen=True)
class Navigation:
    target: str  # entity set holding the related records
    local_key: str  # field on this record
    remote_key: str = "id"  # field on the related record
    many: bool = False


@dataclass(frozen=True)
class EntityKind:
    name: str
    api: str
    template: dict[str, Any]
    odata_type: str
    number_prefix: str = ""
    webhooks: bool = False
    navigation: dict[str, Navigation] = field(default_factory=dict)
    # Fields a PATCH may not set (BC computes them).
    read_only: frozenset[str] = frozenset({"id", "lastModifiedDateTime"})


_DOC_READ_ONLY = frozenset(
    {"id", "lastModifiedDateTime", "totalAmountExcludingTax", "totalTaxAmount", "totalAmountIncludingTax"}
)

ENTITIES: dict[str, EntityKind] = {
    kind.name: kind
    for kind in (
        EntityKind("customers", STANDARD_API, CUSTOMER, "customer", "C", webhooks=True),
        EntityKind("vendors", STANDARD_API, VENDOR, "vendor", "V", webhooks=True),
        EntityKind(
            "salesInvoices",
            STANDARD_API,
            SALES_INVOICE,
            "salesInvoice",
            "PS-INV",
            webhooks=True,
            navigation={"customer": Navigation("customers", "customerId")},
            read_only=_DOC_READ_ONLY | {"remainingAmount"},
        ),
        EntityKind(
            "purchaseInvoices",
            STANDARD_API,
            PURCHASE_INVOICE,
            "purchaseInvoice",
            "PI",
            webhooks=True,
            navigation={"vendor": Navigation("vendors", "vendorId")},
            read_only=_DOC_READ_ONLY,
        ),
        # Not webhook-enabled in v2.0 (BC docs api-reference/v2.0/dynamics-subscriptions): poll it.
        EntityKind(
            "purchaseOrders",
            STANDARD_API,
            PURCHASE_ORDER,
            "purchaseOrder",
            "PO",
            navigation={"vendor": Navigation("vendors", "vendorId")},
            read_only=_DOC_READ_ONLY,
        ),
        EntityKind(
            "customerPaymentJournals",
            STANDARD_API,
            CUSTOMER_PAYMENT_JOURNAL,
            "customerPaymentJournal",
            webhooks=True,
            navigation={"customerPayments": Navigation("customerPayments", "id", "journalId", many=True)},
        ),
        # Not webhook-enabled either; a change to a line notifies its journal (the header).
        EntityKind(
            "customerPayments",
            STANDARD_API,
            CUSTOMER_PAYMENT,
            "customerPayment",
            "G",
            navigation={"customer": Navigation("customers", "customerId")},
        ),
        EntityKind("vendorBankAccounts", CUSTOM_API, VENDOR_BANK_ACCOUNT, "vendorBankAccount"),
    )
}

COMPANY_FIELDS: tuple[str, ...] = (
    "id",
    "systemVersion",
    "timestamp",
    "name",
    "displayName",
    "businessProfileId",
    "systemCreatedAt",
    "systemCreatedBy",
    "systemModifiedAt",
    "systemModifiedBy",
)
