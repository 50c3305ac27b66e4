"""Webhook subscriptions and notifications as BC does them (https://learn.microsoft.com/en-us/dynamics365/
business-central/dev-itpro/api-reference/v2.0/dynamic-api-webhooks), client against simulator."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import timedelta
from typing import Any

import pytest

from server.bc.client import BCClient
from server.bc.entities import (
    CUSTOMER_PAYMENT_JOURNALS,
    CUSTOMER_PAYMENTS,
    CUSTOMERS,
    PURCHASE_ORDERS,
    SALES_INVOICES,
)
from server.bc.errors import BadRequestError, EntityChangedError
from server.bc.models import NotificationBatch, SalesInvoice
from server.runtime.clock import ManualClock
from simulators.bc.simulator import BCSimulator

Wait = Callable[..., Awaitable[None]]


async def subscribe(
    client: BCClient, receiver: Any, company: str, entity: Any = CUSTOMERS, state: str = "s3cr3t"
) -> Any:
    return await client.create_subscription(
        receiver.url, BCClient.subscription_resource(entity, company), state
    )


async def test_create_runs_the_handshake_and_lasts_three_days(
    sim: BCSimulator, client: BCClient, company: str, receiver: Any, clock: ManualClock
) -> None:
    sub = await subscribe(client, receiver, company)
    assert len(receiver.handshakes) == 1
    assert len(sub.subscriptionId) == 32
    assert sub.clientState == "s3cr3t"
    assert sub.notificationUrl == receiver.url
    assert sub.expirationDateTime == clock.now() + timedelta(days=3)
    assert [s.subscriptionId for s in await client.list_subscriptions()] == [sub.subscriptionId]
    clock.advance(timedelta(days=3, seconds=1))
    assert await client.list_subscriptions() == []


@pytest.mark.parametrize("mode", ["wrong", "status:404", "status:500"])
async def test_no_echo_no_subscription(
    sim: BCSimulator, client: BCClient, company: str, receiver: Any, mode: str
) -> None:
    receiver.handshake_mode = mode
    with pytest.raises(BadRequestError, match="could not be validated"):
        await subscribe(client, receiver, company)
    assert len(receiver.handshakes) == 1
    assert sim.subscriptions() == []


@pytest.mark.parametrize("entity", [PURCHASE_ORDERS, CUSTOMER_PAYMENTS])
async def test_entities_bc_does_not_webhook_enable_are_refused(
    sim: BCSimulator, client: BCClient, company: str, receiver: Any, entity: Any
) -> None:
    with pytest.raises(BadRequestError) as caught:
        await subscribe(client, receiver, company, entity)
    assert caught.value.status == 400
    assert entity.path in caught.value.message
    assert receiver.handshakes == []
    assert sim.subscriptions() == []


async def test_renew_repeats_the_handshake_and_extends_expiry(
    sim: BCSimulator, client: BCClient, company: str, receiver: Any, clock: ManualClock
) -> None:
    sub = await subscribe(client, receiver, company)
    clock.advance(timedelta(days=2))
    renewed = await client.renew_subscription(sub.subscriptionId, etag=sub.odata_etag or "*")
    assert len(receiver.handshakes) == 2
    assert renewed.expirationDateTime == clock.now() + timedelta(days=3)
    assert renewed.odata_etag != sub.odata_etag
    with pytest.raises(EntityChangedError):
        await client.renew_subscription(sub.subscriptionId, etag=sub.odata_etag or "")
    receiver.handshake_mode = "wrong"
    with pytest.raises(BadRequestError):
        await client.renew_subscription(sub.subscriptionId)
    assert sim.subscriptions()[0]["expirationDateTime"] == renewed.to_json()["expirationDateTime"]
    patch = sim.requests(method="PATCH")[0]
    assert patch["path"].endswith(f"/api/v2.0/subscriptions('{sub.subscriptionId}')")
    assert patch["headers"]["if-match"] == sub.odata_etag


async def test_delete(sim: BCSimulator, client: BCClient, company: str, receiver: Any) -> None:
    sub = await subscribe(client, receiver, company)
    await client.delete_subscription(sub.subscriptionId, etag=sub.odata_etag or "*")
    assert sim.subscriptions() == []
    assert sim.requests(method="DELETE")[0]["status"] == 204


async def test_changes_are_batched_and_delivered_after_the_window(
    sim: BCSimulator, client: BCClient, company: str, receiver: Any, clock: ManualClock, wait: Wait
) -> None:
    sub = await subscribe(client, receiver, company)
    customers = sim.records(company, "customers")
    for balance in (100.0, 200.0, 300.0):  # three changes to one record: one notification
        sim.update_record(company, "customers", customers[0]["id"], {"balanceDue": balance})
    created = sim.create_record(company, "customers", {"displayName": "New Co"})
    sim.update_record(company, "customers", created["id"], {"phoneNumber": "+44 20 7946 0000"})
    sim.delete_record(company, "customers", customers[1]["id"])
    sim.update_record(
        company, "vendors", sim.records(company, "vendors")[0]["id"], {"balance": 1.0}
    )  # not subscribed
    clock.advance(timedelta(seconds=29))
    assert receiver.batches == []
    clock.advance(timedelta(seconds=1))
    await wait(lambda: len(sim.deliveries()) == 1)
    batch = NotificationBatch.model_validate(receiver.batches[0])
    assert [(i.changeType, i.resource) for i in batch.value] == [
        ("updated", f"api/v2.0/companies({company})/customers({customers[0]['id']})"),
        ("created", f"api/v2.0/companies({company})/customers({created['id']})"),
        ("deleted", f"api/v2.0/companies({company})/customers({customers[1]['id']})"),
    ]
    assert {i.clientState for i in batch.value} == {"s3cr3t"}
    assert {i.subscriptionId for i in batch.value} == {sub.subscriptionId}
    assert sim.deliveries()[-1]["outcome"] == "delivered"


async def test_subscriptions_sharing_a_url_share_one_post(
    sim: BCSimulator, client: BCClient, company: str, receiver: Any
) -> None:
    a = await subscribe(client, receiver, company, CUSTOMERS, "a")
    b = await subscribe(client, receiver, company, SALES_INVOICES, "b")
    sim.update_record(
        company, "customers", sim.records(company, "customers")[0]["id"], {"email": "x@y.example"}
    )
    sim.update_record(
        company, "salesInvoices", sim.records(company, "salesInvoices")[0]["id"], {"disputeStatus": "x"}
    )
    assert await sim.aflush_notifications() == ["delivered"]
    assert len(receiver.batches) == 1
    assert sorted((i["subscriptionId"], i["clientState"]) for i in receiver.items()) == sorted(
        [(a.subscriptionId, "a"), (b.subscriptionId, "b")]
    )


async def test_more_than_the_threshold_becomes_one_collection_item(
    sim: BCSimulator, client: BCClient, company: str, receiver: Any, clock: ManualClock
) -> None:
    await subscribe(client, receiver, company, SALES_INVOICES)
    sim.set_collection_threshold(3)
    invoices = sim.records(company, "salesInvoices")[:5]
    for invoice in invoices:
        clock.advance(timedelta(seconds=1))
        sim.update_record(company, "salesInvoices", invoice["id"], {"disputeStatus": "Under review"})
    assert await sim.aflush_notifications() == ["delivered"]
    (item,) = receiver.items()
    assert item["changeType"] == "collection"
    # First change (09:00:01) minus 50 ms, as BC's AL source builds it.
    assert item["resource"] == (
        f"api/v2.0/companies({company})/salesInvoices?$filter=lastModifiedDateTime%20gt%202026-03-05T09:00:00.95Z"
    )
    changed = [i async for i in client.iter_url(item["resource"], SalesInvoice)]
    assert sorted((i.id for i in changed), key=str) == sorted(i["id"] for i in invoices)


async def test_a_4xx_answer_deletes_the_subscription(
    sim: BCSimulator, client: BCClient, company: str, receiver: Any
) -> None:
    await subscribe(client, receiver, company)
    receiver.statuses.append(410)
    sim.update_record(
        company, "customers", sim.records(company, "customers")[0]["id"], {"email": "a@b.example"}
    )
    assert await sim.aflush_notifications() == ["subscription_deleted"]
    assert sim.subscriptions() == []
    sim.update_record(
        company, "customers", sim.records(company, "customers")[0]["id"], {"email": "c@d.example"}
    )
    assert await sim.aflush_notifications() == []
    assert len(receiver.batches) == 1


@pytest.mark.parametrize("status", [408, 429, 500, 503])
async def test_408_429_and_5xx_are_retried(
    sim: BCSimulator,
    client: BCClient,
    company: str,
    receiver: Any,
    clock: ManualClock,
    wait: Wait,
    status: int,
) -> None:
    await subscribe(client, receiver, company)
    receiver.statuses.append(status)
    sim.update_record(
        company, "customers", sim.records(company, "customers")[0]["id"], {"email": "a@b.example"}
    )
    assert await sim.aflush_notifications() == ["retry"]
    assert len(sim.subscriptions()) == 1
    clock.advance(timedelta(seconds=60))  # the first retry is due a minute later
    await wait(lambda: len(sim.deliveries()) == 2)
    assert [d["outcome"] for d in sim.deliveries()] == ["retry", "delivered"]
    assert len(receiver.batches) == 2
    assert receiver.batches[0] == receiver.batches[1]


async def test_delivery_gives_up_after_36_hours(
    sim: BCSimulator, client: BCClient, company: str, receiver: Any, clock: ManualClock, wait: Wait
) -> None:
    sub = await subscribe(client, receiver, company)
    receiver.default_status = 503
    sim.update_record(
        company, "customers", sim.records(company, "customers")[0]["id"], {"email": "a@b.example"}
    )
    assert await sim.aflush_notifications() == ["retry"]
    await client.renew_subscription(sub.subscriptionId)
    clock.advance(timedelta(hours=35, minutes=59))  # inside the 36 hours: retried again
    await wait(lambda: sim.deliveries()[-1]["attempt"] == 2)
    assert [d["outcome"] for d in sim.deliveries()] == ["retry", "retry"]
    clock.advance(timedelta(minutes=2))  # the next retry (2 minutes later) falls past 36 hours
    await client.renew_subscription(sub.subscriptionId)  # keep the subscription itself alive
    await wait(lambda: sim.deliveries()[-1]["outcome"] == "gave_up")
    assert await sim.aflush_notifications() == []
    attempts = len(sim.deliveries())
    clock.advance(timedelta(hours=2))
    assert await sim.aflush_notifications() == []
    assert len(sim.deliveries()) == attempts


async def test_dropped_notifications_fault(
    sim: BCSimulator, client: BCClient, company: str, receiver: Any
) -> None:
    await subscribe(client, receiver, company)
    sim.drop_notifications(1)
    sim.update_record(
        company, "customers", sim.records(company, "customers")[0]["id"], {"email": "a@b.example"}
    )
    assert await sim.aflush_notifications() == ["dropped"]
    assert receiver.batches == []


async def test_a_payment_line_change_notifies_its_journal(
    sim: BCSimulator, client: BCClient, company: str, receiver: Any
) -> None:
    await subscribe(client, receiver, company, CUSTOMER_PAYMENT_JOURNALS)
    journal = sim.records(company, "customerPaymentJournals")[0]
    customer = sim.records(company, "customers")[0]
    sim.create_record(
        company,
        "customerPayments",
        {"journalId": journal["id"], "customerId": customer["id"], "amount": 10.0},
    )
    assert await sim.aflush_notifications() == ["delivered"]
    assert [(i["changeType"], i["resource"]) for i in receiver.items()] == [
        ("updated", f"api/v2.0/companies({company})/customerPaymentJournals({journal['id']})")
    ]


async def test_api_patch_fires_a_notification(
    sim: BCSimulator, client: BCClient, company: str, receiver: Any
) -> None:
    await subscribe(client, receiver, company)
    customer = (await client.list_records(CUSTOMERS, company, top=1))[0]
    assert customer.id and customer.odata_etag
    await client.patch_record(CUSTOMERS, company, customer.id, {"creditLimit": 1}, etag=customer.odata_etag)
    assert await sim.aflush_notifications() == ["delivered"]
    assert [i["changeType"] for i in receiver.items()] == ["updated"]
