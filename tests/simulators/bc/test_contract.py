"""Every example payload in ../shared/reference/data/bc/ is read by the client's models and produced
in the same shape (field names + JSON types) by the simulator. The files are read in place."""

from __future__ import annotations

import json
import re
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from server.bc.client import BCClient
from server.bc.entities import CUSTOMERS, SALES_INVOICES
from server.bc.errors import EntityChangedError, error_from_response
from server.bc.models import (
    BCRecord,
    Customer,
    CustomerPayment,
    NotificationBatch,
    PurchaseInvoice,
    PurchaseOrder,
    SalesInvoice,
    Subscription,
    Vendor,
)
from simulators.bc.simulator import BCSimulator

ENTITY_EXAMPLES: dict[str, tuple[type[BCRecord], str]] = {
    "customer.json": (Customer, "customers"),
    "vendor.json": (Vendor, "vendors"),
    "salesInvoice.json": (SalesInvoice, "salesInvoices"),
    "purchaseInvoice.json": (PurchaseInvoice, "purchaseInvoices"),
    "purchaseOrder.json": (PurchaseOrder, "purchaseOrders"),
    "customerPayment.json": (CustomerPayment, "customerPayments"),
}


def load(shared_reference: Path, name: str) -> Any:
    return json.loads((shared_reference / "data" / "bc" / name).read_text(), parse_float=Decimal)


def json_type(value: Any) -> str:
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int | float | Decimal):
        return "number"
    if value is None:
        return "null"
    if isinstance(value, dict):
        return "object"
    if isinstance(value, list):
        return "array"
    return "string"


def shape(payload: dict[str, Any]) -> dict[str, str]:
    return {key: json_type(value) for key, value in payload.items()}


def test_every_example_file_is_covered(shared_reference: Path) -> None:
    names = {p.name for p in (shared_reference / "data" / "bc").glob("*.json")}
    covered = set(ENTITY_EXAMPLES) | {
        "salesInvoices_page.json",
        "subscription_create_request.json",
        "subscription_response.json",
        "notification.json",
        "error.json",
    }
    assert names == covered


@pytest.mark.parametrize("name", sorted(ENTITY_EXAMPLES))
def test_models_read_and_write_back_the_examples(shared_reference: Path, name: str) -> None:
    model, _ = ENTITY_EXAMPLES[name]
    example = load(shared_reference, name)
    record = model.model_validate(example)
    assert record.id == example["id"]
    assert record.model_extra is not None and set(record.model_extra) <= {"@odata.context"}
    written = record.to_json()
    assert shape(written) == shape(example)
    for key, value in example.items():
        if isinstance(value, str):
            assert written[key] == value, key
        elif not isinstance(value, bool):
            assert Decimal(str(written[key])) == value, key


@pytest.mark.parametrize("name", sorted(ENTITY_EXAMPLES))
async def test_simulator_serves_records_in_the_examples_shape(
    shared_reference: Path, sim: BCSimulator, client: BCClient, company: str, name: str
) -> None:
    _, entity = ENTITY_EXAMPLES[name]
    example = load(shared_reference, name)
    record = sim.records(company, entity)[0]
    served = await client.get_json(f"api/v2.0/companies({company})/{entity}({record['id']})")
    assert list(shape(served)) == list(shape(example)), "field names and order"
    assert shape(served) == shape(example)
    assert re.fullmatch(r'W/"[A-Za-z0-9+/=]+"', served["@odata.etag"])
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d{1,3})?Z", served["lastModifiedDateTime"])


async def test_sales_invoice_page_shape(
    shared_reference: Path, sim: BCSimulator, client: BCClient, company: str
) -> None:
    example = load(shared_reference, "salesInvoices_page.json")
    path = f"api/v2.0/companies({company})/salesInvoices"
    first_page = await client.get_json(path, page_size=2)
    assert sim.requests(path_contains="/salesInvoices")[0]["headers"]["prefer"] == "odata.maxpagesize=2"
    assert shape(first_page) == shape(example)
    for item, example_item in zip(first_page["value"], example["value"], strict=True):
        assert shape(item) == shape(example_item)
        SalesInvoice.model_validate(item)
    assert "$skiptoken=" in first_page["@odata.nextLink"]


async def test_subscription_request_and_response_shapes(
    shared_reference: Path, sim: BCSimulator, client: BCClient, company: str, receiver: Any
) -> None:
    request_example = load(shared_reference, "subscription_create_request.json")
    response_example = load(shared_reference, "subscription_response.json")
    parsed = Subscription.model_validate(response_example)
    assert shape(parsed.to_json()) == shape(response_example)
    assert parsed.to_json()["expirationDateTime"] == response_example["expirationDateTime"]

    created = await client.create_subscription(
        receiver.url, BCClient.subscription_resource(SALES_INVOICES, company), request_example["clientState"]
    )
    sent = json.loads(sim.requests(method="POST", path_contains="/subscriptions")[0]["body"])
    assert shape(sent) == shape(request_example)
    assert sent["resource"] == f"/api/v2.0/companies({company})/salesInvoices"
    served = await client.get_json(f"api/v2.0/subscriptions('{created.subscriptionId}')")
    assert shape(served) == shape(response_example)
    assert re.fullmatch(r"[0-9a-f]{32}", served["subscriptionId"])


async def test_notification_shape(
    shared_reference: Path, sim: BCSimulator, client: BCClient, company: str, receiver: Any
) -> None:
    example = load(shared_reference, "notification.json")
    batch = NotificationBatch.model_validate(example)
    assert [i.changeType for i in batch.value] == ["updated", "created", "deleted", "collection"]

    await client.create_subscription(receiver.url, BCClient.subscription_resource(CUSTOMERS, company), "cs")
    customers = sim.records(company, "customers")
    sim.update_record(company, "customers", customers[0]["id"], {"email": "a@b.example"})
    created = sim.create_record(company, "customers", {"displayName": "New"})
    sim.delete_record(company, "customers", customers[1]["id"])
    await sim.aflush_notifications()
    sim.set_collection_threshold(1)
    sim.update_record(company, "customers", customers[2]["id"], {"email": "c@d.example"})
    sim.update_record(company, "customers", customers[3]["id"], {"email": "e@f.example"})
    await sim.aflush_notifications()
    served = receiver.items()
    assert [i["changeType"] for i in served] == ["updated", "created", "deleted", "collection"]
    assert shape(receiver.batches[0]) == shape(example)
    for item, example_item in zip(served, example["value"], strict=True):
        assert shape(item) == shape(example_item)
    assert served[1]["resource"] == f"api/v2.0/companies({company})/customers({created['id']})"
    pattern = (
        re.escape(f"api/v2.0/companies({company})/customers?$filter=lastModifiedDateTime%20gt%20") + r"\S+Z"
    )
    assert re.fullmatch(pattern, served[3]["resource"])
    assert re.fullmatch(
        pattern.replace(re.escape(company), r"[0-9a-f-]{36}").replace("customers", "salesInvoices"),
        example["value"][3]["resource"],
    )
    NotificationBatch.model_validate({"value": served})


async def test_stale_etag_error_shape(
    shared_reference: Path, sim: BCSimulator, client: BCClient, company: str
) -> None:
    example = load(shared_reference, "error.json")
    mapped = error_from_response(409, example, method="PATCH", url="u", retry_after_header=None)
    assert isinstance(mapped, EntityChangedError)
    assert mapped.correlation_id == "4b8e2f10-6c3a-4d9e-a1b7-0f2c3d4e5a6b"

    record = sim.records(company, "customers")[0]
    sim.update_record(company, "customers", record["id"], {"email": "changed@example.com"})
    with pytest.raises(EntityChangedError) as caught:
        await client.patch_record(
            CUSTOMERS, company, record["id"], {"email": "x"}, etag=record["@odata.etag"]
        )
    assert caught.value.status == 409
    assert caught.value.code == example["error"]["code"]
    assert caught.value.correlation_id is not None
    # The message follows the example: text, two spaces, "CorrelationId:", two spaces, a GUID, a full stop.
    template = re.sub(r"[0-9a-f-]{36}", "GUID", example["error"]["message"])
    assert re.sub(r"[0-9a-f-]{36}", "GUID", caught.value.message) == template
