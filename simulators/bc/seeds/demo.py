"""The "demo" data set: two companies (GB and US) with customers whose phone numbers come in the
formats finance teams really type (E.164, national, US with brackets, with an extension, invalid),
sales invoices overdue / due soon / paid / draft relative to today, one customer near its credit
limit, purchase invoices above and below 10,000, purchase orders, and a payment journal with lines.

Ids are fixed (uuid5 of company + number) so a sandbox run is reproducible.
"""

from __future__ import annotations

import uuid
from datetime import date, timedelta
from typing import Any

from simulators.bc.state import BCState
from simulators.bc.wire import format_bc_datetime

_NS = uuid.UUID("5b1e2c3d-0a4f-4c6e-9d7a-8b9c0d1e2f30")
GB_COMPANY_ID = str(uuid.uuid5(_NS, "company/CRONUS UK Ltd."))
US_COMPANY_ID = str(uuid.uuid5(_NS, "company/CRONUS USA, Inc."))
GB_PAYMENT_TERMS = str(uuid.uuid5(_NS, "paymentTerms/30 DAYS"))
GB_TAX_AREA = str(uuid.uuid5(_NS, "taxArea/UK"))


def _id(company: str, key: str) -> str:
    return str(uuid.uuid5(_NS, f"{company}/{key}"))


def _money(value: float) -> float:
    return round(value, 2)


class _Builder:
    def __init__(self, state: BCState, company_id: str, tax_rate: float, currency: str) -> None:
        self.state = state
        self.company_id = company_id
        self.tax_rate = tax_rate
        self.currency = currency
        self.now = state.now()
        self.today: date = self.now.date()
        self._minutes = 0

    def stamp(self, days_ago: float) -> str:
        """A lastModifiedDateTime in the past, distinct per record so watermark order is stable."""
        self._minutes += 1
        return format_bc_datetime(self.now - timedelta(days=days_ago, minutes=self._minutes))

    def day(self, offset: int) -> str:
        return (self.today + timedelta(days=offset)).isoformat()

    def add(self, entity: str, key: str, **fields: Any) -> dict[str, Any]:
        fields.setdefault("id", _id(self.company_id, f"{entity}/{key}"))
        fields.setdefault("lastModifiedDateTime", self.stamp(fields.pop("_days_ago", 2)))
        return self.state.create_record(self.company_id, entity, fields)

    def customer(self, number: str, name: str, phone: str, **extra: Any) -> dict[str, Any]:
        return self.add(
            "customers",
            number,
            number=number,
            displayName=name,
            phoneNumber=phone,
            email=extra.pop("email", f"accounts@{name.split()[0].lower()}.example"),
            currencyCode=self.currency,
            **extra,
        )

    def sales_invoice(
        self,
        number: str,
        customer: dict[str, Any],
        *,
        net: float,
        invoice_offset: int,
        terms_days: int = 30,
        status: str = "Open",
        paid: float = 0.0,
    ) -> dict[str, Any]:
        tax = _money(net * self.tax_rate)
        gross = _money(net + tax)
        remaining = 0.0 if status in ("Paid", "Draft") else _money(gross - paid)
        return self.add(
            "salesInvoices",
            number,
            number=number,
            invoiceDate=self.day(invoice_offset),
            postingDate=self.day(invoice_offset),
            dueDate=self.day(invoice_offset + terms_days),
            customerId=customer["id"],
            customerPurchaseOrderReference=f"PO-{number[-4:]}",
            totalAmountExcludingTax=_money(net),
            totalTaxAmount=tax,
            totalAmountIncludingTax=gross,
            remainingAmount=remaining,
            status=status,
        )

    def purchase_invoice(
        self, number: str, vendor: dict[str, Any], *, net: float, invoice_offset: int, status: str
    ) -> dict[str, Any]:
        tax = _money(net * self.tax_rate)
        return self.add(
            "purchaseInvoices",
            number,
            number=number,
            invoiceDate=self.day(invoice_offset),
            postingDate=self.day(invoice_offset),
            dueDate=self.day(invoice_offset + 30),
            vendorId=vendor["id"],
            vendorInvoiceNumber=f"VI-{number}",
            totalAmountExcludingTax=_money(net),
            totalTaxAmount=tax,
            totalAmountIncludingTax=_money(net + tax),
            status=status,
        )


def seed_empty(state: BCState) -> list[str]:
    """One company, no records: for tests that arrange their own data."""
    return [state.add_company("CRONUS UK Ltd.", company_id=GB_COMPANY_ID)]


def seed_demo(state: BCState) -> list[str]:
    gb = state.add_company("CRONUS UK Ltd.", company_id=GB_COMPANY_ID)
    us = state.add_company("CRONUS USA, Inc.", company_id=US_COMPANY_ID)
    _seed_gb(_Builder(state, gb, 0.20, "GBP"))
    _seed_us(_Builder(state, us, 0.07, "USD"))
    return [gb, us]


def _seed_gb(b: _Builder) -> None:
    address = {"city": "London", "country": "GB", "postalCode": "EC1A 1BB", "taxAreaId": GB_TAX_AREA}
    adatum = b.customer("C10000", "Adatum Corporation", "+44 20 7946 0018", creditLimit=25000, **address)
    trey = b.customer("C10010", "Trey Research", "020 7946 0123", creditLimit=15000, **address)
    fine_art = b.customer("C10020", "School of Fine Art", "+442079460456", **address)
    alpine = b.customer("C10030", "Alpine Ski House", "(415) 555-2671", country="US", city="San Francisco")
    relecloud = b.customer("C10040", "Relecloud", "0161 496 0753 ext. 12", city="Manchester", country="GB")
    coho = b.customer("C10050", "Coho Winery", "12345", city="Leeds", country="GB")  # too short: invalid
    fabrikam = b.customer("C10060", "Fabrikam Ltd", "", city="Bristol", country="GB")  # no number at all
    wide_world = b.customer("C10070", "Wide World Importers", "07700 900123", city="Glasgow", country="GB")
    # Near its limit: the next invoice or a small balance change crosses it.
    tailspin = b.customer(
        "C10080",
        "Tailspin Toys",
        "+44 7700 900456",
        creditLimit=10000,
        balanceDue=9650.0,
        city="Leeds",
        country="GB",
    )
    b.customer("C10090", "Litware Inc", "N/A", city="Reading", country="GB")  # not a number
    b.customer("C10100", "Proseware Ltd", "+44 113 496 0000", blocked="All", city="Leeds", country="GB")

    # Sales invoices relative to today (30-day terms unless stated).
    b.sales_invoice("PS-INV103001", adatum, net=4980.0, invoice_offset=-40)  # 10 days overdue
    b.sales_invoice("PS-INV103002", trey, net=1250.0, invoice_offset=-33)  # 3 days overdue
    b.sales_invoice(
        "PS-INV103003", fine_art, net=8200.0, invoice_offset=-65, paid=3000.0
    )  # 35 days, part paid
    b.sales_invoice("PS-INV103004", alpine, net=640.0, invoice_offset=-27)  # due in 3 days
    b.sales_invoice("PS-INV103005", relecloud, net=2100.0, invoice_offset=-29)  # due tomorrow
    b.sales_invoice("PS-INV103006", wide_world, net=975.5, invoice_offset=-30)  # due today
    b.sales_invoice("PS-INV103007", coho, net=310.0, invoice_offset=-45)  # overdue, invalid phone
    b.sales_invoice("PS-INV103008", fabrikam, net=1500.0, invoice_offset=-50)  # overdue, no phone
    b.sales_invoice("PS-INV103009", tailspin, net=1200.0, invoice_offset=-10)  # not yet due
    b.sales_invoice("PS-INV103010", adatum, net=730.0, invoice_offset=-20, status="Paid")
    b.sales_invoice("PS-INV103011", trey, net=5600.0, invoice_offset=-60, status="Paid")
    b.sales_invoice("PS-INV103012", adatum, net=2200.0, invoice_offset=0, status="Draft")
    b.sales_invoice("PS-INV103013", relecloud, net=410.0, invoice_offset=-1, status="Draft")

    cascade = b.add(
        "vendors",
        "V01050",
        number="V01050",
        displayName="Cascade Packaging Ltd.",
        phoneNumber="+44 20 7946 0999",
        email="billing@cascadepack.example",
        city="London",
        country="GB",
        currencyCode="GBP",
        balance=7260.4,
    )
    northwind = b.add(
        "vendors",
        "V01060",
        number="V01060",
        displayName="Northwind Traders",
        phoneNumber="0113 496 0451",
        email="ar@northwind.example",
        city="Leeds",
        country="GB",
        currencyCode="GBP",
    )
    b.add(
        "vendors",
        "V01070",
        number="V01070",
        displayName="Graphic Design Institute",
        phoneNumber="(206) 555-0188",
        city="Seattle",
        country="US",
        currencyCode="USD",
    )
    for vendor, account in ((cascade, "41234567"), (northwind, "55501234")):
        b.add(
            "vendorBankAccounts",
            f"{vendor['number']}/MAIN",
            vendorId=vendor["id"],
            code="MAIN",
            name=f"{vendor['displayName']} main account",
            bankAccountNumber=account,
            bankBranchNumber="20-00-00",
            iban=f"GB29NWBK600000{account}",
            swiftCode="NWBKGB2L",
            currencyCode="GBP",
        )

    b.purchase_invoice("PI108340", cascade, net=14500.0, invoice_offset=-2, status="Draft")  # above 10,000
    b.purchase_invoice("PI108341", northwind, net=820.0, invoice_offset=-1, status="Draft")  # below
    b.purchase_invoice("PI108342", cascade, net=6820.0, invoice_offset=-15, status="Open")
    b.purchase_invoice("PI108343", northwind, net=12750.0, invoice_offset=-8, status="Open")

    for number, vendor, net, status, received in (
        ("PO106070", cascade, 3410.0, "Open", False),
        ("PO106071", northwind, 18900.0, "Open", False),
        ("PO106072", cascade, 540.0, "Draft", False),
        ("PO106073", northwind, 2200.0, "Open", True),
    ):
        tax = _money(net * b.tax_rate)
        b.add(
            "purchaseOrders",
            number,
            number=number,
            orderDate=b.day(-5),
            postingDate=b.day(-5),
            vendorId=vendor["id"],
            requestedReceiptDate=b.day(7),
            totalAmountExcludingTax=net,
            totalTaxAmount=tax,
            totalAmountIncludingTax=_money(net + tax),
            fullyReceived=received,
            status=status,
        )

    journal = b.add(
        "customerPaymentJournals",
        "GENERAL",
        code="GENERAL",
        displayName="Customer payments",
        balancingAccountNumber="2910",
    )
    invoices = {r["number"]: r for r in b.state.list_records(b.company_id, "salesInvoices")}
    for doc, customer, invoice, amount in (
        ("G02318", fine_art, invoices["PS-INV103003"], 3000.0),
        ("G02319", adatum, invoices["PS-INV103010"], invoices["PS-INV103010"]["totalAmountIncludingTax"]),
    ):
        b.add(
            "customerPayments",
            doc,
            journalId=journal["id"],
            customerId=customer["id"],
            postingDate=b.day(-1),
            documentNumber=doc,
            externalDocumentNumber=f"BACS-{doc}",
            amount=amount,
            appliesToInvoiceId=invoice["id"],
            appliesToInvoiceNumber=invoice["number"],
            description=f"Payment, {customer['displayName']}",
        )


def _seed_us(b: _Builder) -> None:
    northwind = b.customer(
        "C00420",
        "Northwind Outdoor Supply",
        "503-555-0142",
        creditLimit=50000,
        balanceDue=18432.75,
        city="Portland",
        state="OR",
        country="US",
    )
    contoso = b.customer(
        "C00430", "Contoso Pharmaceuticals", "+1 (212) 555-0199", city="New York", country="US"
    )
    b.sales_invoice("PS-INV104187", northwind, net=4980.0, invoice_offset=-37)
    b.sales_invoice("PS-INV104188", northwind, net=1250.0, invoice_offset=-25, status="Paid")
    b.sales_invoice("PS-INV104189", contoso, net=3300.0, invoice_offset=-28)
    vendor = b.add(
        "vendors",
        "V02010",
        number="V02010",
        displayName="Fabrikam Supplies",
        phoneNumber="253-555-0177",
        city="Tacoma",
        state="WA",
        country="US",
        currencyCode="USD",
    )
    b.purchase_invoice("108400", vendor, net=11200.0, invoice_offset=-3, status="Draft")
    b.add(
        "customerPaymentJournals",
        "GENERAL",
        code="GENERAL",
        displayName="Customer payments",
        balancingAccountNumber="10400",
    )


__all__ = ["GB_COMPANY_ID", "US_COMPANY_ID", "seed_demo", "seed_empty"]
