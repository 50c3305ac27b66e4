"""TwilioClient against the simulator over loopback: wire format, retries, classification, reconcile."""

from __future__ import annotations

import random
import socket
from collections.abc import Callable

import pytest

from server.runtime.clock import ManualClock, monotonic
from server.runtime.retry import RetryPolicy
from server.twilio.client import TwilioClient
from server.twilio.errors import (
    ConfigurationError,
    ErrorKind,
    InvalidRequestError,
    NotFoundError,
    NotSentError,
    OptedOutError,
    OutcomeUnknownError,
    PermanentRecipientError,
    RateLimitedError,
    RetryableError,
    VerificationLimitError,
    callback_error_kind,
    error_from_response,
)
from server.twilio.models import IncomingNumber
from server.twilio.twiml import say_twiml
from simulators.twilio.simulator import TwilioSimulator
from tests.openapi_contract import TwilioContract
from tests.server.twilio.conftest import make_config
from tests.simulators.twilio.conftest import WebhookReceiver

TO = "+447700900123"


class RecordingSleep:
    """Injected sleep: records each backoff and waits a token amount so the loop really yields."""

    def __init__(self) -> None:
        self.delays: list[float] = []

    async def __call__(self, seconds: float) -> None:
        import asyncio

        self.delays.append(seconds)
        await asyncio.sleep(0)


def client_with(
    sim: TwilioSimulator, sleep: RecordingSleep | None = None, **overrides: object
) -> TwilioClient:
    return TwilioClient(make_config(sim, **overrides), sleep=sleep or RecordingSleep(), rng=random.Random(7))


def _posts(sim: TwilioSimulator, suffix: str = "/Messages.json") -> int:
    return len([r for r in sim.requests() if r.method == "POST" and r.path.endswith(suffix)])


async def test_send_is_form_encoded_and_authenticated_with_the_api_key(
    sim: TwilioSimulator, twilio: TwilioClient
) -> None:
    result = await twilio.send_sms(
        TO,
        "Invoice 1001 is 7 days overdue",
        from_=sim.from_number,
        status_callback="https://mlc.example.com/cb?job=j-1",
    )
    assert result.sid.startswith("SM") and result.status == "queued" and result.to == TO
    (request,) = sim.requests()
    assert request.method == "POST"
    assert request.path == f"/2010-04-01/Accounts/{sim.account_sid}/Messages.json"
    assert request.content_type.startswith("application/x-www-form-urlencoded")
    assert request.auth_user == sim.api_key_sid  # API key SID, account SID only in the path
    assert "authorization" not in request.headers
    assert request.form == [
        ("To", TO),
        ("Body", "Invoice 1001 is 7 days overdue"),
        ("From", sim.from_number),
        ("StatusCallback", "https://mlc.example.com/cb?job=j-1"),
    ]


async def test_every_request_the_client_makes_fits_the_openapi_contract(
    sim: TwilioSimulator, twilio: TwilioClient, contract: TwilioContract, clock: ManualClock
) -> None:
    await twilio.send_sms(TO, "one", from_=sim.from_number, status_callback="https://mlc.example.com/cb")
    sent = await twilio.send_sms(
        TO, "two", messaging_service_sid=sim.messaging_service_sid, validity_period=600
    )
    await twilio.fetch_message(sent.sid)
    found = [m async for m in twilio.list_messages(to=TO, date_sent_after=clock.now().date(), page_size=1)]
    assert [m.body for m in found] == ["two", "one"]
    call = await twilio.place_call(
        TO,
        from_=sim.from_number,
        twiml=say_twiml("Your invoice is overdue."),
        status_callback="https://mlc.example.com/call",
        status_callback_events=["initiated", "answered", "completed"],
        ring_timeout=30,
    )
    await twilio.fetch_call(call.sid)
    service = await twilio.create_verify_service("ml-connector", code_length=6)
    started = await twilio.start_verification(TO, channel="call", service_sid=service.sid)
    await twilio.fetch_verification(started.sid, service_sid=service.sid)
    await twilio.check_verification("000000", verification_sid=started.sid, service_sid=service.sid)
    await twilio.cancel_verification(started.sid, service_sid=service.sid)
    await twilio.start_verification(TO)
    await twilio.check_verification(sim.verification_code(TO) or "", to=TO)
    await twilio.fetch_account()

    requests = sim.requests()
    assert len(requests) == 15
    for request in requests:
        problems = contract.request_problems(
            request.method,
            request.path,
            query=request.query,
            form=request.form,
            content_type=request.content_type,
        )
        assert problems == [], f"{request.method} {request.path}"
        assert request.auth_user == sim.api_key_sid
    call_form = next(r for r in requests if r.path.endswith("/Calls.json")).form_dict()
    assert call_form["StatusCallbackEvent"] == ["initiated", "answered", "completed"]  # repeated keys


async def test_a_429_storm_is_ridden_out_with_jittered_exponential_backoff(sim: TwilioSimulator) -> None:
    sim.fail_next(3, status=429)
    sleep = RecordingSleep()
    policy = RetryPolicy(max_attempts=5, base_delay=0.2, max_delay=0.5)
    async with client_with(sim, sleep, retry=policy) as client:
        result = await client.send_sms(TO, "hello", from_=sim.from_number)
    assert result.status == "queued"
    assert _posts(sim) == 4  # three 429s, then accepted
    assert len(sim.messages()) == 1
    ceilings = [0.2, 0.4, 0.5]  # base * 2^n, capped by max_delay
    assert len(sleep.delays) == 3
    assert all(0 <= d <= c for d, c in zip(sleep.delays, ceilings, strict=True))
    assert sleep.delays != ceilings  # full jitter: uniform(0, ceiling), not the ceiling itself


async def test_retry_after_is_honoured(sim: TwilioSimulator) -> None:
    sim.fail_next(1, status=429, retry_after=0.3)
    sleep = RecordingSleep()
    async with client_with(sim, sleep) as client:
        await client.send_sms(TO, "hello", from_=sim.from_number)
    assert len(sleep.delays) == 1 and sleep.delays[0] >= 0.3


async def test_a_retry_after_beyond_the_policy_is_handed_to_the_caller(sim: TwilioSimulator) -> None:
    sim.fail_next(1, status=429, retry_after=120)
    sleep = RecordingSleep()
    async with client_with(sim, sleep) as client:
        with pytest.raises(RateLimitedError) as caught:
            await client.send_sms(TO, "hello", from_=sim.from_number)
    assert caught.value.retry_after == 120 and caught.value.code == 20429
    assert sleep.delays == [] and _posts(sim) == 1


async def test_a_storm_longer_than_the_budget_raises_rate_limited(sim: TwilioSimulator) -> None:
    sim.fail_next(50, status=429)
    async with client_with(sim) as client:
        with pytest.raises(RateLimitedError):
            await client.send_sms(TO, "hello", from_=sim.from_number)
    assert _posts(sim) == 4  # max_attempts in make_config
    assert sim.messages() == []


async def test_no_create_begins_after_the_callers_deadline(sim: TwilioSimulator) -> None:
    """The dispatcher's submit lease: past it the job may be reconciled and sent by another worker."""
    async with client_with(sim) as client:
        with pytest.raises(NotSentError, match="nothing was accepted"):
            await client.send_sms(TO, "hello", from_=sim.from_number, deadline=monotonic() - 0.001)
        with pytest.raises(NotSentError):
            await client.place_call(TO, from_=sim.from_number, twiml=say_twiml("hi"), deadline=monotonic())
    assert _posts(sim) == 0 and _posts(sim, "/Calls.json") == 0 and sim.messages() == []


async def test_a_retry_that_could_not_begin_before_the_deadline_is_not_made(sim: TwilioSimulator) -> None:
    sim.fail_next(1, status=429, retry_after=5)  # within the policy, beyond the caller's time
    sleep = RecordingSleep()
    policy = RetryPolicy(max_attempts=4, base_delay=0.01, max_delay=0.05, max_retry_after=30)
    async with client_with(sim, sleep, retry=policy) as client:
        with pytest.raises(RateLimitedError) as caught:
            await client.send_sms(TO, "hello", from_=sim.from_number, deadline=monotonic() + 2)
        assert caught.value.retry_after == 5
        assert sleep.delays == [] and _posts(sim) == 1
        # With time enough, the same 429 is ridden out in-line.
        sim.fail_next(1, status=429, retry_after=0.2)
        await client.send_sms(TO, "hello", from_=sim.from_number, deadline=monotonic() + 60)
    assert len(sleep.delays) == 1 and _posts(sim) == 3 and len(sim.messages()) == 1


async def test_server_errors_are_retried_until_accepted(sim: TwilioSimulator) -> None:
    sim.fail_next(2, status=500)
    async with client_with(sim) as client:
        result = await client.send_sms(TO, "hello", from_=sim.from_number)
    assert _posts(sim) == 3 and [m["sid"] for m in sim.messages()] == [result.sid]


def _opt_out(sim: TwilioSimulator) -> None:
    sim.send_inbound(TO, "STOP")


def _landline(sim: TwilioSimulator) -> None:
    sim.set_number(TO, "reject", error_code=21614)


@pytest.mark.parametrize(
    ("arrange", "to", "from_", "expected", "code"),
    [
        (None, "07700 900123", None, PermanentRecipientError, 21211),
        (_landline, TO, None, PermanentRecipientError, 21614),
        (_opt_out, TO, None, OptedOutError, 21610),
        (None, TO, "+15005550009", ConfigurationError, 21606),
    ],
    ids=["invalid-to", "not-mobile", "opted-out", "from-not-ours"],
)
async def test_permanent_errors_are_classified_and_not_retried(
    sim: TwilioSimulator,
    arrange: Callable[[TwilioSimulator], None] | None,
    to: str,
    from_: str | None,
    expected: type[Exception],
    code: int,
) -> None:
    if arrange:
        arrange(sim)
    sleep = RecordingSleep()
    async with client_with(sim, sleep) as client:
        with pytest.raises(expected) as caught:
            await client.send_sms(to, "hello", from_=from_ or sim.from_number)
    assert getattr(caught.value, "code", None) == code and getattr(caught.value, "status", None) == 400
    assert _posts(sim) == 1 and sleep.delays == []


async def test_bad_credentials_are_a_configuration_error(sim: TwilioSimulator) -> None:
    async with client_with(sim, api_key_secret="wrong") as client:
        with pytest.raises(ConfigurationError) as caught:
            await client.send_sms(TO, "hello", from_=sim.from_number)
    assert (caught.value.status, caught.value.code) == (401, 20003)
    assert _posts(sim) == 1 and sim.requests()[0].auth_user is None


async def test_a_timeout_after_sending_is_outcome_unknown_and_reconcilable(
    sim: TwilioSimulator, clock: ManualClock
) -> None:
    sim.delay_next(1, 0.8)  # processed now, answered after the client gave up
    async with client_with(sim, read_timeout=0.2) as client:
        with pytest.raises(OutcomeUnknownError):
            await client.send_sms(TO, "Invoice 1001 reminder", from_=sim.from_number)
        assert _posts(sim) == 1  # never resent by the client
        # Reconcile: look the message up instead of resending it.
        matches = [
            m
            async for m in client.list_messages(to=TO, date_sent_after=clock.now().date())
            if m.body == "Invoice 1001 reminder"
        ]
    assert len(matches) == 1 and matches[0].direction == "outbound-api"


async def test_a_dropped_connection_after_acceptance_is_outcome_unknown(sim: TwilioSimulator) -> None:
    sim.drop_after_accept_next(1)
    async with client_with(sim) as client:
        with pytest.raises(OutcomeUnknownError):
            await client.send_sms(TO, "hello", from_=sim.from_number)
    assert _posts(sim) == 1 and len(sim.messages()) == 1  # it exists at 'Twilio'


async def test_a_dropped_connection_on_a_read_is_retried(sim: TwilioSimulator) -> None:
    async with client_with(sim) as client:
        sent = await client.send_sms(TO, "hello", from_=sim.from_number)
        sim.drop_after_accept_next(1)
        fetched = await client.fetch_message(sent.sid)
    assert fetched.sid == sent.sid
    assert len([r for r in sim.requests() if r.method == "GET"]) == 2


async def test_connection_refused_is_retryable_not_unknown(sim: TwilioSimulator) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        closed_port = probe.getsockname()[1]
    sleep = RecordingSleep()
    async with client_with(sim, sleep, api_base_url=f"http://127.0.0.1:{closed_port}") as client:
        with pytest.raises(RetryableError) as caught:
            await client.send_sms(TO, "hello", from_=sim.from_number)
    assert not isinstance(caught.value, OutcomeUnknownError)
    assert len(sleep.delays) == 3  # max_attempts 4


async def test_list_messages_follows_next_page_uri(sim: TwilioSimulator, twilio: TwilioClient) -> None:
    for n in range(5):
        await twilio.send_sms(TO, f"m{n}", from_=sim.from_number)
    await twilio.send_sms("+447700900999", "other", from_=sim.from_number)
    bodies = [m.body async for m in twilio.list_messages(to=TO, page_size=2)]
    assert bodies == ["m4", "m3", "m2", "m1", "m0"]
    gets = [r for r in sim.requests() if r.method == "GET"]
    assert len(gets) == 3
    assert all(("To", TO) in r.query for r in gets)
    assert any(k == "PageToken" for k, _ in gets[1].query)


async def test_verify_errors_are_classified(sim: TwilioSimulator, twilio: TwilioClient) -> None:
    with pytest.raises(InvalidRequestError) as caught:
        await twilio.start_verification("447700900123")  # no '+': 60200
    assert caught.value.code == 60200 and "To" in caught.value.message
    with pytest.raises(NotFoundError):
        await twilio.check_verification("123456", to=TO)


def test_error_table_maps_codes_and_statuses() -> None:
    def kind(status: int, code: int | None) -> type:
        return type(error_from_response(status, {"code": code, "message": "m"}, operation="op"))

    assert kind(400, 21211) is PermanentRecipientError
    assert kind(400, 21610) is OptedOutError
    assert kind(401, 20003) is ConfigurationError
    assert kind(400, 21606) is ConfigurationError
    assert kind(400, 21604) is InvalidRequestError
    assert kind(429, 20429) is RateLimitedError
    assert kind(429, 60202) is VerificationLimitError
    assert kind(404, 20404) is NotFoundError
    assert kind(503, None) is RetryableError
    assert kind(418, 99999) is InvalidRequestError
    rfc9457 = error_from_response(
        400,
        {"type": "https://x", "title": "Bad", "status": 400, "code": 21211, "detail": "nope"},
        operation="op",
    )
    assert isinstance(rfc9457, PermanentRecipientError) and rfc9457.message == "nope"
    assert callback_error_kind(30003) is ErrorKind.RETRYABLE
    assert callback_error_kind(30006) is ErrorKind.RECIPIENT
    assert callback_error_kind(30034) is ErrorKind.CONFIGURATION
    assert callback_error_kind(None) is None


async def test_place_call_checks_its_arguments(sim: TwilioSimulator, twilio: TwilioClient) -> None:
    with pytest.raises(ValueError, match="exactly one of twiml or url"):
        await twilio.place_call(TO, from_=sim.from_number)
    with pytest.raises(ValueError, match="StatusCallbackEvent"):
        await twilio.place_call(
            TO, from_=sim.from_number, url="https://x.example/t", status_callback_events=["answred"]
        )
    assert sim.requests() == []


async def test_status_callback_from_a_real_send_reaches_the_receiver(
    sim: TwilioSimulator, twilio: TwilioClient, receiver: WebhookReceiver
) -> None:
    sent = await twilio.send_sms(
        TO, "hello", from_=sim.from_number, status_callback=receiver.url("/cb?job=j-9")
    )
    await sim.asettle()
    statuses = [dict(_form(w.body))["MessageStatus"] for w in receiver.snapshot()]
    assert statuses == ["sent", "delivered"]
    assert (await twilio.fetch_message(sent.sid)).status == "delivered"


def _form(body: bytes) -> list[tuple[str, str]]:
    from urllib.parse import parse_qsl

    return parse_qsl(body.decode(), keep_blank_values=True)


async def test_find_incoming_number_returns_the_owned_number_with_its_capabilities(
    sim: TwilioSimulator, twilio: TwilioClient
) -> None:
    sim.set_incoming_number("+447700900101", sms=False)
    owned = await twilio.find_incoming_number(sim.from_number)
    assert owned is not None and owned.phone_number == sim.from_number and owned.sid.startswith("PN")
    assert (owned.capabilities.sms, owned.capabilities.voice, owned.capabilities.fax) == (True, True, False)
    no_sms = await twilio.find_incoming_number("+447700900101")
    assert no_sms is not None and (no_sms.capabilities.sms, no_sms.capabilities.voice) == (False, True)
    assert await twilio.find_incoming_number("+447700900999") is None
    (request, *_) = sim.requests(path_contains="/IncomingPhoneNumbers.json")
    assert request.method == "GET" and ("PhoneNumber", sim.from_number) in request.query
    assert request.auth_user == sim.api_key_sid


async def test_find_incoming_number_compares_exactly_across_pages(sim: TwilioSimulator) -> None:
    # Twilio's PhoneNumber filter matches partial numbers: a longer number containing the wanted one
    # comes back first, the wanted one only on the second page.
    sim.set_incoming_number("+4477009001015")
    async with client_with(sim) as client:
        assert await client.find_incoming_number("+447700900101", page_size=1) is None
        sim.set_incoming_number("+447700900101")
        found = await client.find_incoming_number("+447700900101", page_size=1)
    assert found is not None and found.phone_number == "+447700900101"
    pages = sim.requests(path_contains="/IncomingPhoneNumbers.json")
    assert len(pages) == 3  # one page before the number existed, two after
    assert ("PageToken", "PA" + sim.incoming_numbers()[1]["sid"]) in pages[2].query


async def test_find_incoming_number_errors_go_through_the_error_tree(sim: TwilioSimulator) -> None:
    async with client_with(sim, api_key_secret="wrong") as client:
        with pytest.raises(ConfigurationError) as caught:
            await client.find_incoming_number(sim.from_number)
    assert (caught.value.status, caught.value.code, caught.value.operation) == (
        401,
        20003,
        "find_incoming_number",
    )
    sim.fail_next(1, status=503)
    async with client_with(sim) as client:
        assert await client.find_incoming_number(sim.from_number) is not None  # a GET: retried
        sim.fail_next(4, status=503)  # max_attempts in make_config
        with pytest.raises(RetryableError):
            await client.find_incoming_number(sim.from_number)
        with pytest.raises(ValueError, match=r"E\.164"):
            await client.find_incoming_number("07700 900101")


def test_capabilities_are_read_case_insensitively() -> None:
    number = IncomingNumber.model_validate(
        {"sid": "PN" + "0" * 32, "phone_number": TO, "capabilities": {"SMS": True, "voice": False}}
    )
    assert (number.capabilities.sms, number.capabilities.voice, number.capabilities.mms) == (
        True,
        False,
        False,
    )
    unstated = IncomingNumber.model_validate(
        {"sid": "PN" + "0" * 32, "phone_number": TO, "capabilities": None}
    )
    assert unstated.capabilities.sms is False
