"""The BC client against the simulator over loopback HTTPS: auth, reads, paging, writes, retries."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Awaitable, Callable
from datetime import timedelta
from typing import Any

import httpx
import pytest

from server.bc.client import BCClient
from server.bc.entities import (
    CUSTOMER_PAYMENT_JOURNALS,
    CUSTOMER_PAYMENTS,
    CUSTOMERS,
    PURCHASE_ORDERS,
    SALES_INVOICES,
    VENDORS,
    custom_page,
    journal_payments,
)
from server.bc.errors import (
    AuthenticationError,
    BadRequestError,
    EntityChangedError,
    MissingETagError,
    NotFoundError,
    ServiceUnavailableError,
    UnsafeNextLinkError,
)
from server.bc.models import Customer, SalesInvoice
from server.bc.settings import BCConfig
from server.runtime.clock import ManualClock
from server.runtime.retry import RetryPolicy
from simulators.bc.simulator import BCSimulator
from tests.bc_client_config import client_config

Wait = Callable[..., Awaitable[None]]


def api_gets(sim: BCSimulator, entity: str) -> list[dict[str, Any]]:
    return [r for r in sim.requests(method="GET") if r["path"].endswith(f"/{entity}")]


async def test_many_calls_cost_one_token_request(sim: BCSimulator, client: BCClient, company: str) -> None:
    for _ in range(5):
        await client.list_records(VENDORS, company)
    await asyncio.gather(*(client.list_records(CUSTOMERS, company) for _ in range(5)))
    assert sim.token_requests == 1
    api = sim.requests(path_contains="/api/v2.0/")
    assert len(api) == 10
    assert all(r["headers"]["authorization"] == "***" for r in api)  # the log never keeps the token


async def test_expired_token_gets_one_refresh_and_a_retry(
    sim: BCSimulator, client: BCClient, company: str
) -> None:
    await client.list_records(VENDORS, company)
    sim.expire_tokens()
    vendors = await client.list_records(VENDORS, company)
    assert len(vendors) == 3
    assert sim.token_requests == 2
    assert [r["status"] for r in api_gets(sim, "vendors")] == [200, 401, 200]


async def test_wrong_secret_is_a_permanent_authentication_error(sim: BCSimulator, company: str) -> None:
    async with BCClient(client_config(sim, client_secret="wrong")) as bad:
        with pytest.raises(AuthenticationError, match="AADSTS7000215"):
            await bad.list_records(VENDORS, company)
    assert sim.requests(path_contains="/api/") == []


async def test_paging_streams_more_than_three_pages(sim: BCSimulator, client: BCClient) -> None:
    sim.seed("empty")
    company = sim.companies[0]
    created = [
        sim.create_record(company, "customers", {"displayName": f"Customer {i:02d}"}) for i in range(25)
    ]
    seen = [c.id async for c in client.iter_records(CUSTOMERS, company, page_size=7)]
    assert seen == [c["id"] for c in created]
    gets = api_gets(sim, "customers")
    assert len(gets) == 4  # 7 + 7 + 7 + 4
    assert all(r["headers"]["prefer"] == "odata.maxpagesize=7" for r in gets)
    assert "$skiptoken" not in gets[0]["query"]
    assert [r["query"]["$skiptoken"] for r in gets[1:]] == [
        created[6]["id"],
        created[13]["id"],
        created[20]["id"],
    ]


async def test_filter_select_expand_and_top(sim: BCSimulator, client: BCClient, company: str) -> None:
    open_invoices = await client.list_records(
        SALES_INVOICES,
        company,
        filter="status eq 'Open' and remainingAmount gt 0",
        select=["id", "number", "dueDate", "remainingAmount", "customerId"],
        expand=["customer($select=phoneNumber,displayName)"],
    )
    expected = [
        r["number"]
        for r in sim.records(company, "salesInvoices")
        if r["status"] == "Open" and r["remainingAmount"] > 0
    ]
    assert [i.number for i in open_invoices] == expected
    assert len(expected) == 9
    first = open_invoices[0]
    assert isinstance(first, SalesInvoice)
    assert first.status is None  # not selected
    assert first.customer is not None and first.customer.displayName == "Adatum Corporation"
    assert first.customer.phoneNumber == "+44 20 7946 0018"
    top = await client.list_records(SALES_INVOICES, company, top=2)
    assert len(top) == 2


async def test_or_across_fields_is_refused_like_bc(sim: BCSimulator, client: BCClient, company: str) -> None:
    with pytest.raises(BadRequestError) as caught:
        await client.list_records(
            CUSTOMERS, company, filter="number eq 'C10000' or displayName eq 'Relecloud'"
        )
    assert caught.value.code == "BadRequest_NotSupported"
    assert caught.value.correlation_id is not None
    assert len(api_gets(sim, "customers")) == 1  # permanent: not retried


async def test_get_by_id_and_missing_id(sim: BCSimulator, client: BCClient, company: str) -> None:
    record = sim.records(company, "customers")[3]
    customer = await client.get_record(CUSTOMERS, company, record["id"])
    assert isinstance(customer, Customer)
    assert customer.phoneNumber == "(415) 555-2671"
    assert customer.odata_etag == record["@odata.etag"]
    with pytest.raises(NotFoundError) as caught:
        await client.get_record(CUSTOMERS, company, "00000000-0000-0000-0000-0000000000ab")
    assert caught.value.status == 404
    assert len(sim.requests(path_contains="0000000000ab")) == 1


async def test_get_many_by_ids_in_as_few_requests_as_the_url_allows(sim: BCSimulator) -> None:
    sim.seed("empty")
    company = sim.companies[0]
    ids = [sim.create_record(company, "customers", {"displayName": f"C{i}"})["id"] for i in range(60)]
    async with BCClient(client_config(sim, max_url_length=1000)) as client:
        groups = client.split_ids(CUSTOMERS, company, [*ids, ids[0]])
        records = await client.get_by_ids(CUSTOMERS, company, [*ids, ids[0]])
    assert sorted((r.id for r in records), key=str) == sorted(ids)
    gets = api_gets(sim, "customers")
    assert len(gets) == len(groups)
    assert 3 <= len(groups) < 10
    assert sum(len(g) for g in groups) == 60  # the duplicate id was asked for once
    for request, group in zip(gets, groups, strict=True):
        assert request["query"]["$filter"] == " or ".join(f"id eq {i}" for i in group)
        url = str(
            httpx.URL(f"{sim.base_url}/api/v2.0/companies({company})/customers", params=request["query"])
        )
        assert len(url) <= 1000
    # Greedy packing: one more id in any full group would have crossed the limit.
    base = f"{sim.base_url}/api/v2.0/companies({company})/customers"
    for group, following in itertools.pairwise(groups):
        longer = " or ".join(f"id eq {i}" for i in [*group, following[0]])
        assert len(str(httpx.URL(base, params={"$filter": longer}))) > 1000


@pytest.mark.parametrize("limit", [256, 700, 2048])
async def test_id_groups_with_select_and_expand_fill_the_url_exactly(sim: BCSimulator, limit: int) -> None:
    # The packing adds each id's encoded length instead of rebuilding the URL: the URL that is
    # finally built must agree with that count, whatever else the query carries.
    company = sim.companies[0]
    ids = [f"{n:08x}-0000-4000-8000-{n:012x}" for n in range(1, 301)]
    options: dict[str, Any] = {
        "select": ["id", "number", "displayName"],
        "expand": ["customerFinancialDetails"],
    }
    async with BCClient(client_config(sim, max_url_length=limit)) as client:
        groups = client.split_ids(CUSTOMERS, company, ids, **options)
        base = client.url(CUSTOMERS.collection_path(company))

    def url_length(group: list[str]) -> int:
        query = {
            "$filter": " or ".join(f"id eq {i}" for i in group),
            "$select": ",".join(options["select"]),
            "$expand": ",".join(options["expand"]),
        }
        return len(str(httpx.URL(base, params=query)))

    assert [i for g in groups for i in g] == ids  # every id once, in order
    assert all(url_length(g) <= limit or len(g) == 1 for g in groups)
    for group, following in itertools.pairwise(groups):
        assert url_length([*group, following[0]]) > limit


async def test_watermark_polling_returns_only_changes_since(
    sim: BCSimulator, client: BCClient, company: str, clock: ManualClock
) -> None:
    watermark = clock.now()
    orders = sim.records(company, "purchaseOrders")
    assert [o async for o in client.iter_changed_since(PURCHASE_ORDERS, company, watermark)] == []
    clock.advance(timedelta(minutes=5))
    sim.update_record(company, "purchaseOrders", orders[1]["id"], {"status": "Draft"})
    clock.advance(timedelta(seconds=1))
    created = sim.create_record(
        company, "purchaseOrders", {"vendorId": orders[0]["vendorId"], "status": "Open"}
    )
    changed = [o async for o in client.iter_changed_since(PURCHASE_ORDERS, company, watermark)]
    assert [o.id for o in changed] == [orders[1]["id"], created["id"]]
    assert changed[0].status == "Draft"
    assert (
        api_gets(sim, "purchaseOrders")[-1]["query"]["$filter"]
        == "lastModifiedDateTime gt 2026-03-05T09:00:00Z"
    )
    later = [o async for o in client.iter_changed_since(PURCHASE_ORDERS, company, clock.now())]
    assert later == []


async def test_patch_with_current_etag_then_stale_etag(
    sim: BCSimulator, client: BCClient, company: str
) -> None:
    customer = (await client.list_records(CUSTOMERS, company, top=1))[0]
    assert customer.id is not None and customer.odata_etag is not None
    updated = await client.patch_record(
        CUSTOMERS, company, customer.id, {"phoneNumber": "+44 20 7946 0999"}, etag=customer.odata_etag
    )
    assert updated.phoneNumber == "+44 20 7946 0999"
    assert updated.odata_etag != customer.odata_etag
    assert updated.lastModifiedDateTime is not None
    with pytest.raises(EntityChangedError) as caught:
        await client.patch_record(
            CUSTOMERS, company, customer.id, {"phoneNumber": "+1"}, etag=customer.odata_etag
        )
    assert caught.value.status == 409
    assert caught.value.code == "Request_EntityChanged"
    assert sim.get_record(company, "customers", customer.id)["phoneNumber"] == "+44 20 7946 0999"  # type: ignore[index]
    patches = sim.requests(method="PATCH")
    assert [p["headers"]["if-match"] for p in patches] == [customer.odata_etag, customer.odata_etag]
    assert patches[0]["body"] == '{"phoneNumber": "+44 20 7946 0999"}'


async def test_patch_without_if_match_is_refused_by_the_simulator(
    sim: BCSimulator, client: BCClient, company: str
) -> None:
    record = sim.records(company, "customers")[0]
    path = f"api/v2.0/companies({company})/customers({record['id']})"
    with pytest.raises(MissingETagError) as caught:
        await client._send("PATCH", client.url(path), body={"displayName": "x"})
    assert caught.value.code == "BadRequest_InvalidToken"


async def test_429_with_retry_after_is_retried_after_that_wait(
    sim: BCSimulator, company: str, recording_sleep: Any
) -> None:
    sim.inject_fault(status=429, retry_after=2, remaining=1, path_contains="/vendors")
    async with BCClient(client_config(sim), sleep=recording_sleep) as client:
        vendors = await client.list_records(VENDORS, company)
    assert len(vendors) == 3
    assert recording_sleep.delays == [2.0]
    assert [r["status"] for r in api_gets(sim, "vendors")] == [429, 200]


async def test_503_is_retried_with_jittered_backoff_then_gives_up(
    sim: BCSimulator, company: str, recording_sleep: Any
) -> None:
    sim.inject_fault(status=503, remaining=None, path_contains="/vendors")
    policy = RetryPolicy(max_attempts=4, base_delay=1.0, max_delay=3.0)
    async with BCClient(client_config(sim, retry=policy), sleep=recording_sleep) as client:
        with pytest.raises(ServiceUnavailableError) as caught:
            await client.list_records(VENDORS, company)
    assert caught.value.status == 503
    assert len(api_gets(sim, "vendors")) == 4
    ceilings = [1.0, 2.0, 3.0]  # base * 2^n, capped at max_delay; full jitter draws below each
    assert len(recording_sleep.delays) == 3
    assert all(0 <= d <= c for d, c in zip(recording_sleep.delays, ceilings, strict=True))


async def test_429_on_post_is_retried_but_other_5xx_on_post_is_not(
    sim: BCSimulator, company: str, recording_sleep: Any, receiver: Any
) -> None:
    resource = BCClient.subscription_resource(CUSTOMERS, company)
    async with BCClient(client_config(sim), sleep=recording_sleep) as client:
        sim.inject_fault(status=429, remaining=1, method="POST")
        created = await client.create_subscription(receiver.url, resource, "s1")
        assert created.resource == resource
        sim.inject_fault(status=500, remaining=1, method="POST")
        with pytest.raises(ServiceUnavailableError):
            await client.create_subscription(receiver.url, resource, "s2")
    assert [r["status"] for r in sim.requests(method="POST", path_contains="subscriptions")] == [
        429,
        201,
        500,
    ]


async def test_permanent_errors_are_not_retried(sim: BCSimulator, company: str, recording_sleep: Any) -> None:
    sim.inject_fault(status=403, code="Authorization_InsufficientPermissions", remaining=None)
    async with BCClient(client_config(sim), sleep=recording_sleep) as client:
        with pytest.raises(Exception) as caught:
            await client.list_records(VENDORS, company)
    assert type(caught.value).__name__ == "AuthorizationError"
    assert recording_sleep.delays == []
    assert len(api_gets(sim, "vendors")) == 1


async def test_concurrency_cap_is_respected(sim: BCSimulator, company: str) -> None:
    ids = [r["id"] for r in sim.records(company, "customers")][:8]
    sim.inject_fault(kind="delay", delay_seconds=0.25, remaining=None)
    async with BCClient(client_config(sim, max_concurrency=2)) as client:
        await client.list_records(VENDORS, company)  # token first, so all 8 start together
        sim.clear_requests()
        got = await asyncio.gather(*(client.get_record(CUSTOMERS, company, i) for i in ids))
    assert [c.id for c in got] == ids
    assert sim.max_in_flight == 2


async def test_default_cap_stays_below_bcs_five(sim: BCSimulator, company: str) -> None:
    ids = [r["id"] for r in sim.records(company, "customers")][:10]
    sim.inject_fault(kind="delay", delay_seconds=0.25, remaining=None)
    async with BCClient(client_config(sim)) as client:
        await client.list_records(VENDORS, company)
        sim.clear_requests()
        await asyncio.gather(*(client.get_record(CUSTOMERS, company, i) for i in ids))
    assert client.config.max_concurrency == 4
    assert sim.max_in_flight == 4


async def test_companies_and_several_companies_per_environment(sim: BCSimulator, client: BCClient) -> None:
    companies = await client.list_companies()
    assert [c.id for c in companies] == sim.companies
    assert [c.name for c in companies] == ["CRONUS UK Ltd.", "CRONUS USA, Inc."]
    us = sim.companies[1]
    us_customers = await client.list_records(CUSTOMERS, us)
    assert [c.phoneNumber for c in us_customers] == ["503-555-0142", "+1 (212) 555-0199"]


async def test_payment_lines_under_a_journal_and_at_company_level(
    sim: BCSimulator, client: BCClient, company: str
) -> None:
    journals = await client.list_records(CUSTOMER_PAYMENT_JOURNALS, company, expand=["customerPayments"])
    assert [j.code for j in journals] == ["GENERAL"]
    journal = journals[0]
    assert journal.id is not None and journal.customerPayments is not None
    lines = await client.list_records(journal_payments(journal.id), company)
    assert [p.lineNumber for p in lines] == [10000, 20000]
    assert [p.id for p in journal.customerPayments] == [p.id for p in lines]
    everywhere = await client.list_records(CUSTOMER_PAYMENTS, company, filter="amount gt 0")
    assert {p.id for p in everywhere} == {p.id for p in lines}
    assert lines[0].journalDisplayName == "GENERAL"


async def test_custom_api_page_for_vendor_bank_accounts(
    sim: BCSimulator, client: BCClient, company: str
) -> None:
    bank_accounts = custom_page("contoso", "finance", "v1.0", "vendorBankAccounts")
    accounts = await client.list_records(bank_accounts, company)
    assert len(accounts) == 2
    account = accounts[0]
    assert account.id is not None and account.odata_etag is not None
    assert account.model_extra is not None and account.model_extra["code"] == "MAIN"
    changed = await client.patch_record(
        bank_accounts, company, account.id, {"iban": "GB82WEST12345698765432"}, etag=account.odata_etag
    )
    assert changed.model_extra is not None and changed.model_extra["iban"] == "GB82WEST12345698765432"
    assert sim.requests(method="PATCH")[0]["path"].endswith(
        f"/api/contoso/finance/v1.0/companies({company})/vendorBankAccounts({account.id})"
    )
    with pytest.raises(EntityChangedError):
        await client.patch_record(bank_accounts, company, account.id, {"iban": "x"}, etag=account.odata_etag)


async def test_collection_url_is_fetched_as_given(sim: BCSimulator, client: BCClient, company: str) -> None:
    resource = f"api/v2.0/companies({company})/salesInvoices?$filter=lastModifiedDateTime%20gt%202026-03-05T08:00:00.000Z"
    recent = [i async for i in client.iter_url(resource, SalesInvoice)]
    assert recent == []
    sim.update_record(
        company, "salesInvoices", sim.records(company, "salesInvoices")[0]["id"], {"disputeStatus": "x"}
    )
    recent = [i async for i in client.iter_url(resource, SalesInvoice)]
    assert [i.disputeStatus for i in recent] == ["x"]
    single = sim.records(company, "salesInvoices")[1]
    one = [
        i
        async for i in client.iter_url(
            f"api/v2.0/companies({company})/salesInvoices({single['id']})", SalesInvoice
        )
    ]
    assert [i.number for i in one] == [single["number"]]


async def test_links_to_another_host_are_refused(client: BCClient) -> None:
    with pytest.raises(UnsafeNextLinkError):
        client.resolve("https://evil.example/v2.0/x/production/api/v2.0/companies")
    assert client.resolve("api/v2.0/companies").startswith(client.config.base_url + "/api/v2.0/")


def test_bad_ids_never_reach_a_url() -> None:
    config = BCConfig(tenant_id="t", environment="production", client_id="c", client_secret="s")
    with pytest.raises(ValueError, match="company_id: 'nope' is not a GUID"):
        CUSTOMERS.collection_path("nope")
    with pytest.raises(ValueError, match='id: "x\' or 1 eq 1" is not a GUID'):
        CUSTOMERS.record_path("3d6f4c21-8e1a-4b7c-9f02-5a6b7c8d9e10", "x' or 1 eq 1")
    assert config.base_url == "https://api.businesscentral.dynamics.com/v2.0/t/production"
    assert config.authority == "https://login.microsoftonline.com/t"
    assert "client_secret" not in repr(config)


def test_config_from_service_settings() -> None:
    from pydantic import SecretStr

    from server.settings import BCSettings

    settings = BCSettings(
        tenant_id="7c1f2b3a-4d5e-4f60-8a9b-0c1d2e3f4a5b",
        environment="sandbox",
        client_id="app",
        client_secret=SecretStr("s3cret"),
        companies=["3d6f4c21-8e1a-4b7c-9f02-5a6b7c8d9e10"],
        max_concurrency=3,
    )
    config = BCConfig.from_settings(settings)
    assert config.base_url.endswith("/v2.0/7c1f2b3a-4d5e-4f60-8a9b-0c1d2e3f4a5b/sandbox")
    assert config.client_secret == "s3cret"
    assert "s3cret" not in repr(config)
    assert config.company_ids == ("3d6f4c21-8e1a-4b7c-9f02-5a6b7c8d9e10",)
    assert config.max_concurrency == 3
    assert BCConfig.from_settings(settings, client_secret="from-store").client_secret == "from-store"


async def test_unreachable_entra_is_retried_then_reported(recording_sleep: Any) -> None:
    import socket

    from server.bc.errors import TransportError

    with socket.socket() as sock:  # a port with nobody listening
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    config = BCConfig(
        tenant_id="7c1f2b3a-4d5e-4f60-8a9b-0c1d2e3f4a5b",
        environment="production",
        client_id="app",
        client_secret="secret",
        api_host=f"https://127.0.0.1:{port}",
        authority_host=f"https://127.0.0.1:{port}",
        retry=RetryPolicy(max_attempts=3, base_delay=0.01, max_delay=0.01),
    )
    async with BCClient(config, sleep=recording_sleep) as client:
        with pytest.raises(TransportError) as caught:
            await client.list_companies()
    assert "unreachable" in caught.value.message
    assert "secret" not in str(caught.value)
    assert len(recording_sleep.delays) == 2
