"""The Twilio simulator as an outsider sees it: HTTP answers, signed callbacks, inbound, faults, control."""

from __future__ import annotations

import time
from datetime import timedelta
from urllib.parse import parse_qsl

import httpx
import jsonschema
import pytest

from server.runtime.clock import ManualClock
from server.twilio.signatures import validate_request
from simulators.twilio.simulator import TwilioSimulator
from tests.openapi_contract import TwilioContract, _nullable_to_jsonschema
from tests.simulators.twilio.conftest import WebhookReceiver

TO = "+447700900123"


def api(sim: TwilioSimulator, *, auth: tuple[str, str] | None = None) -> httpx.Client:
    return httpx.Client(base_url=sim.base_url, auth=auth or (sim.api_key_sid, sim.api_key_secret), timeout=5)


def form(body: bytes) -> dict[str, str]:
    return dict(parse_qsl(body.decode(), keep_blank_values=True))


def messages_path(sim: TwilioSimulator) -> str:
    return f"/2010-04-01/Accounts/{sim.account_sid}/Messages.json"


def test_status_callbacks_are_signed_like_twilio_and_forgeries_fail(
    sim: TwilioSimulator, receiver: WebhookReceiver
) -> None:
    callback = receiver.url("/twilio/status?job=j-1")
    with api(sim) as http:
        created = http.post(
            messages_path(sim),
            data={"To": TO, "From": sim.from_number, "Body": "hi", "StatusCallback": callback},
        )
    assert created.status_code == 201 and created.json()["status"] == "queued"
    assert receiver.snapshot() == []  # no callback for the initial status
    sim.settle()
    hooks = receiver.snapshot()
    assert [form(h.body)["MessageStatus"] for h in hooks] == ["sent", "delivered"]
    for hook in hooks:
        params = form(hook.body)
        assert params["MessageSid"] == created.json()["sid"] and params["To"] == TO
        assert hook.path == "/twilio/status?job=j-1"
        content_type = hook.headers["Content-Type"]
        assert validate_request(
            url=callback,
            headers=hook.headers,
            body=hook.body,
            content_type=content_type,
            auth_token=sim.auth_token,
        )
        assert not validate_request(
            url=callback,
            headers=hook.headers,
            body=hook.body,
            content_type=content_type,
            auth_token="not-the-token",
        )
        tampered = hook.body.replace(b"MessageStatus=", b"MessageStatus=x")
        assert not validate_request(
            url=callback,
            headers=hook.headers,
            body=tampered,
            content_type=content_type,
            auth_token=sim.auth_token,
        )
        other_url = receiver.url("/twilio/status?job=j-2")
        assert not validate_request(
            url=other_url,
            headers=hook.headers,
            body=hook.body,
            content_type=content_type,
            auth_token=sim.auth_token,
        )
    assert "RawDlrDoneDate" in form(hooks[1].body) and "RawDlrDoneDate" not in form(hooks[0].body)


def test_duplicates_and_out_of_order_callbacks(sim: TwilioSimulator, receiver: WebhookReceiver) -> None:
    sim.set_callback_behaviour(duplicates=1, out_of_order=True)
    with api(sim) as http:
        http.post(
            messages_path(sim),
            data={"To": TO, "From": sim.from_number, "Body": "hi", "StatusCallback": receiver.url("/cb")},
        )
    sim.settle()
    hooks = receiver.snapshot()
    assert [form(h.body)["MessageStatus"] for h in hooks] == ["delivered", "delivered", "sent", "sent"]
    tokens = [h.headers["I-Twilio-Idempotency-Token"] for h in hooks]
    assert tokens[0] == tokens[1] and tokens[2] == tokens[3] and tokens[0] != tokens[2]


def test_undelivered_and_failed_outcomes_carry_error_codes(
    sim: TwilioSimulator, receiver: WebhookReceiver
) -> None:
    sim.set_number("+447700900001", "undelivered")
    sim.set_number("+447700900002", "failed", error_code=30007)
    with api(sim) as http:
        for to in ("+447700900001", "+447700900002"):
            http.post(
                messages_path(sim),
                data={"To": to, "From": sim.from_number, "Body": "x", "StatusCallback": receiver.url("/cb")},
            )
        sim.settle()
        final = {form(h.body)["To"]: form(h.body) for h in receiver.snapshot()}
        listed = {m["to"]: m for m in http.get(messages_path(sim)).json()["messages"]}
    assert (final["+447700900001"]["MessageStatus"], final["+447700900001"]["ErrorCode"]) == (
        "undelivered",
        "30003",
    )
    assert (final["+447700900002"]["MessageStatus"], final["+447700900002"]["ErrorCode"]) == (
        "failed",
        "30007",
    )
    assert listed["+447700900001"]["error_code"] == 30003 and listed["+447700900002"]["status"] == "failed"
    assert listed["+447700900002"]["error_message"] == "Message filtered"


def test_the_worker_moves_lifecycles_with_the_clock(sim: TwilioSimulator, clock: ManualClock) -> None:
    with api(sim) as http:
        sid = http.post(messages_path(sim), data={"To": TO, "From": sim.from_number, "Body": "x"}).json()[
            "sid"
        ]
        clock.advance(timedelta(seconds=0.3))  # queued -> sent is due; delivered is not yet
        deadline = time.monotonic() + 5
        status = "queued"
        while status == "queued" and time.monotonic() < deadline:
            time.sleep(0.02)
            status = http.get(f"/2010-04-01/Accounts/{sim.account_sid}/Messages/{sid}.json").json()["status"]
    assert status == "sent"


def test_inbound_stop_opts_out_and_start_opts_back_in(
    sim: TwilioSimulator, receiver: WebhookReceiver
) -> None:
    inbound_url = receiver.url("/twilio/inbound")
    sim.set_inbound_url(inbound_url)
    assert sim.send_inbound(TO, "STOP") == 200
    (hook,) = receiver.snapshot()
    params = form(hook.body)
    assert (params["Body"], params["From"], params["To"], params["OptOutType"]) == (
        "STOP",
        TO,
        sim.from_number,
        "STOP",
    )
    assert validate_request(
        url=inbound_url,
        headers=hook.headers,
        body=hook.body,
        content_type=hook.headers["Content-Type"],
        auth_token=sim.auth_token,
    )
    with api(sim) as http:
        refused = http.post(messages_path(sim), data={"To": TO, "From": sim.from_number, "Body": "x"})
        assert (refused.status_code, refused.json()["code"]) == (400, 21610)
        via_service = http.post(
            messages_path(sim), data={"To": TO, "MessagingServiceSid": sim.messaging_service_sid, "Body": "x"}
        )
        assert via_service.json()["code"] == 21610
        assert sim.send_inbound(TO, "stop please") == 200  # not a keyword: only single words count
        sim.send_inbound(TO, " start ")
        accepted = http.post(messages_path(sim), data={"To": TO, "From": sim.from_number, "Body": "x"})
    assert accepted.status_code == 201
    assert [form(h.body).get("OptOutType") for h in receiver.snapshot()] == ["STOP", None, "START"]


def test_json_bodies_are_not_read_and_bad_auth_is_refused(sim: TwilioSimulator) -> None:
    with api(sim) as http:
        as_json = http.post(messages_path(sim), json={"To": TO, "From": sim.from_number, "Body": "x"})
    assert as_json.status_code == 400
    assert as_json.json() == {
        "code": 21604,
        "message": "A 'To' phone number is required.",
        "more_info": "https://www.twilio.com/docs/errors/21604",
        "status": 400,
    }
    with api(sim, auth=(sim.account_sid, "wrong")) as http:
        denied = http.get(f"/2010-04-01/Accounts/{sim.account_sid}.json")
    assert denied.status_code == 401 and denied.json()["code"] == 20003
    assert denied.headers["WWW-Authenticate"].startswith("Basic")
    with api(sim, auth=(sim.account_sid, sim.auth_token)) as http:  # the auth token works too
        assert http.get(f"/2010-04-01/Accounts/{sim.account_sid}.json").json()["status"] == "active"
    assert sim.messages() == []


def test_per_sender_rate_limit_answers_20429(sim: TwilioSimulator) -> None:
    sim.set_rate_limit(0.001, retry_after=2)  # one message, then the budget is spent
    with api(sim) as http:
        first = http.post(messages_path(sim), data={"To": TO, "From": sim.from_number, "Body": "1"})
        second = http.post(messages_path(sim), data={"To": TO, "From": sim.from_number, "Body": "2"})
    assert first.status_code == 201
    assert (second.status_code, second.json()["code"], second.headers["Retry-After"]) == (429, 20429, "2")
    assert len(sim.messages()) == 1


def test_call_status_callbacks_follow_the_requested_events(
    sim: TwilioSimulator, receiver: WebhookReceiver
) -> None:
    calls = f"/2010-04-01/Accounts/{sim.account_sid}/Calls.json"
    with api(sim) as http:
        http.post(
            calls,
            data={
                "To": TO,
                "From": sim.from_number,
                "Twiml": "<Response><Say>Hi</Say></Response>",
                "StatusCallback": receiver.url("/call/all"),
                "StatusCallbackEvent": ["initiated", "ringing", "answered", "completed"],
            },
        )
        http.post(
            calls,
            data={
                "To": TO,
                "From": sim.from_number,
                "Url": "https://x.example/t",
                "StatusCallback": receiver.url("/call/default"),
            },
        )
        sim.set_number("+447700900777", call_outcome="busy")
        http.post(
            calls,
            data={
                "To": "+447700900777",
                "From": sim.from_number,
                "Url": "https://x.example/t",
                "StatusCallback": receiver.url("/call/busy"),
            },
        )
        sim.settle()
    hooks = receiver.snapshot()
    every = [form(h.body) for h in hooks if h.path == "/call/all"]
    assert [(p["CallStatus"], p["SequenceNumber"]) for p in every] == [
        ("initiated", "0"),
        ("ringing", "1"),
        ("in-progress", "2"),
        ("completed", "3"),
    ]
    assert "CallDuration" in every[-1]
    assert [form(h.body)["CallStatus"] for h in hooks if h.path == "/call/default"] == ["completed"]
    assert [form(h.body)["CallStatus"] for h in hooks if h.path == "/call/busy"] == ["busy"]


def test_responses_fit_the_openapi_contract(sim: TwilioSimulator, contract: TwilioContract) -> None:
    base = f"/2010-04-01/Accounts/{sim.account_sid}"
    service = f"/v2/Services/{sim.verify_service_sid}"
    with api(sim) as http:
        checks: list[tuple[str, str, httpx.Response]] = []

        def call(method: str, path: str, **kwargs: object) -> httpx.Response:
            response = http.request(method, path, **kwargs)  # type: ignore[arg-type]
            checks.append((method, path, response))
            return response

        sid = call(
            "POST",
            f"{base}/Messages.json",
            data={"To": TO, "MessagingServiceSid": sim.messaging_service_sid, "Body": "x"},
        ).json()["sid"]
        sim.settle()
        call("GET", f"{base}/Messages/{sid}.json")
        call("GET", f"{base}/Messages.json", params={"To": TO, "PageSize": "1"})
        call_sid = call(
            "POST",
            f"{base}/Calls.json",
            data={"To": TO, "From": sim.from_number, "Url": "https://x.example/t"},
        ).json()["sid"]
        call("GET", f"{base}/Calls/{call_sid}.json")
        call("GET", f"{base}.json")
        new_service = call("POST", "/v2/Services", data={"FriendlyName": "mlc"}).json()["sid"]
        call("GET", f"/v2/Services/{new_service}")
        ve = call("POST", f"{service}/Verifications", data={"To": TO, "Channel": "sms"}).json()["sid"]
        call("GET", f"{service}/Verifications/{ve}")
        call("POST", f"{service}/VerificationCheck", data={"To": TO, "Code": "0000"})
        call("POST", f"{service}/Verifications/{ve}", data={"Status": "canceled"})
    assert len(checks) == 12
    for method, path, response in checks:
        assert contract.response_problems(method, path, response.status_code, response.json()) == [], path


def test_control_surface_over_http(sim: TwilioSimulator, receiver: WebhookReceiver) -> None:
    with httpx.Client(base_url=f"{sim.base_url}/_sim", timeout=5) as control, api(sim) as http:
        assert control.get("/info").json()["account_sid"] == sim.account_sid
        assert control.post("/faults", json={"error_next": 1, "status": 503}).status_code == 200
        failed = http.post(messages_path(sim), data={"To": TO, "From": sim.from_number, "Body": "x"})
        assert (failed.status_code, failed.json()["code"]) == (503, 20500)
        http.post(
            messages_path(sim),
            data={"To": TO, "From": sim.from_number, "Body": "x", "StatusCallback": receiver.url("/cb")},
        )
        assert control.post("/settle").json() == {"steps": 2, "callbacks": 2}
        assert [m["status"] for m in control.get("/messages").json()["items"]] == ["delivered"]
        control.post("/inbound-url", json={"url": receiver.url("/in")})
        assert control.post("/inbound", json={"from": TO, "body": "HELP"}).json() == {"webhook_status": 200}
        http.post(f"/v2/Services/{sim.verify_service_sid}/Verifications", data={"To": TO, "Channel": "sms"})
        (verification,) = control.get("/verifications").json()["items"]
        assert verification["to"] == TO and len(verification["code"]) == 6
        recorded = control.get("/requests").json()["items"]
        assert [r["status"] for r in recorded] == [503, 201, 201]
        assert all("authorization" not in r["headers"] for r in recorded)
        kinds = [c["kind"] for c in control.get("/callbacks").json()["items"]]
        assert kinds == ["status", "status", "inbound"]
        assert control.post("/clock/advance", json={"seconds": 60}).status_code == 200
        assert control.post("/numbers", json={"number": TO, "outcome": "nonsense"}).status_code == 400
        assert control.post("/nope").status_code == 404


@pytest.mark.parametrize(
    ("data", "code"),
    [
        ({"From": "+15005550006", "Body": "x"}, 21604),
        ({"To": TO, "Body": "x"}, 21603),
        ({"To": TO, "From": "+15005550006"}, 21602),
        ({"To": TO, "From": "+15005550006", "Body": "x" * 1601}, 21617),
        (
            {"To": TO, "From": "+15005550006", "Body": "x", "StatusCallback": "http://bad_host.example/cb"},
            21609,
        ),
        ({"To": TO, "From": "not a number!", "Body": "x"}, 21212),
    ],
)
def test_message_validation_errors(sim: TwilioSimulator, data: dict[str, str], code: int) -> None:
    with api(sim) as http:
        response = http.post(messages_path(sim), data=data)
    assert (response.status_code, response.json()["code"]) == (400, code)


def incoming_path(sim: TwilioSimulator) -> str:
    return f"/2010-04-01/Accounts/{sim.account_sid}/IncomingPhoneNumbers.json"


def test_incoming_phone_numbers_filter_page_and_capabilities(
    sim: TwilioSimulator, contract: TwilioContract
) -> None:
    sim.set_incoming_number("+447700900101", sms=False)
    sim.set_incoming_number("+447700900102", voice=False, mms=False)
    with api(sim) as http:
        exact = http.get(incoming_path(sim), params={"PhoneNumber": sim.from_number})
        assert exact.status_code == 200
        (seeded,) = exact.json()["incoming_phone_numbers"]
        assert seeded["phone_number"] == sim.from_number and seeded["sid"].startswith("PN")
        assert seeded["capabilities"] == {"fax": False, "mms": True, "sms": True, "voice": True}
        assert seeded["account_sid"] == sim.account_sid

        # PhoneNumber matches partial numbers, '*' standing for one digit.
        partial = http.get(incoming_path(sim), params={"PhoneNumber": "+4477009001*"}).json()
        assert [n["phone_number"] for n in partial["incoming_phone_numbers"]] == [
            "+447700900101",
            "+447700900102",
        ]
        assert [n["capabilities"]["sms"] for n in partial["incoming_phone_numbers"]] == [False, True]
        none = http.get(incoming_path(sim), params={"PhoneNumber": "+447700900999"}).json()
        assert none["incoming_phone_numbers"] == [] and none["next_page_uri"] is None

        # Paging: next_page_uri keeps the filter and carries a PageToken.
        first = http.get(incoming_path(sim), params={"PhoneNumber": "+4477009001", "PageSize": "1"}).json()
        assert [n["phone_number"] for n in first["incoming_phone_numbers"]] == ["+447700900101"]
        assert (
            "PhoneNumber=%2B4477009001" in first["next_page_uri"] and "PageToken=PA" in first["next_page_uri"]
        )
        second = http.get(first["next_page_uri"]).json()
        assert [n["phone_number"] for n in second["incoming_phone_numbers"]] == ["+447700900102"]
        assert second["next_page_uri"] is None and second["page"] == 1

        # The envelope is the one the contract gives every 2010-04-01 list (ListMessageResponse); the
        # resource is not in the OpenAPI subset, so its capabilities are checked against the SDK's model.
        envelope = contract.find("GET", messages_path(sim)).spec["responses"]["200"]["content"]
        schema = dict(envelope["application/json"]["schema"])
        properties = dict(schema["properties"])
        del properties["messages"]
        flag = {"type": "boolean"}
        properties["incoming_phone_numbers"] = {
            "type": "array",
            "items": {
                "type": "object",
                "required": ["sid", "account_sid", "phone_number", "capabilities"],
                "properties": {
                    "sid": {"type": "string", "pattern": "^PN[0-9a-fA-F]{32}$"},
                    "phone_number": {"type": "string", "pattern": r"^\+[1-9]\d{1,14}$"},
                    "capabilities": {
                        "type": "object",
                        "properties": {"sms": flag, "voice": flag, "mms": flag, "fax": flag},
                        "required": ["sms", "voice", "mms", "fax"],
                        "additionalProperties": False,
                    },
                },
            },
        }
        schema.update(properties=properties, required=sorted(properties), additionalProperties=False)
        validator = jsonschema.Draft7Validator(_nullable_to_jsonschema(schema))
        for body in (exact.json(), partial, none, first, second):
            assert [e.message for e in validator.iter_errors(body)] == []

        # Authentication and account as for every other resource.
        wrong = http.get(incoming_path(sim), auth=(sim.api_key_sid, "not-the-secret"))
        assert (wrong.status_code, wrong.json()["code"]) == (401, 20003)
        other = http.get(incoming_path(sim).replace(sim.account_sid, "AC" + "0" * 32))
        assert (other.status_code, other.json()["code"]) == (401, 20003)
        assert http.post(incoming_path(sim), data={"PhoneNumber": TO}).status_code == 404  # not served


def test_sender_numbers_follow_the_account(sim: TwilioSimulator) -> None:
    """A number without SMS, or one the account released, is refused as From (21606); calls need an
    owned number (21210)."""
    with api(sim) as http:
        sim.set_incoming_number(sim.from_number, sms=False)
        no_sms = http.post(messages_path(sim), data={"To": TO, "From": sim.from_number, "Body": "x"})
        assert (no_sms.status_code, no_sms.json()["code"]) == (400, 21606)
        sim.set_incoming_number(sim.from_number)
        assert (
            http.post(messages_path(sim), data={"To": TO, "From": sim.from_number, "Body": "x"}).status_code
            == 201
        )
        assert sim.remove_incoming_number(sim.from_number) is True
        assert sim.remove_incoming_number(sim.from_number) is False
        gone = http.post(messages_path(sim), data={"To": TO, "From": sim.from_number, "Body": "x"})
        assert (gone.status_code, gone.json()["code"]) == (400, 21606)
        call = http.post(
            f"/2010-04-01/Accounts/{sim.account_sid}/Calls.json",
            data={"To": TO, "From": sim.from_number, "Url": "https://x.example/t"},
        )
        assert (call.status_code, call.json()["code"]) == (400, 21210)
        listed = http.get(incoming_path(sim), params={"PhoneNumber": sim.from_number}).json()
        assert listed["incoming_phone_numbers"] == []


def test_incoming_numbers_over_the_control_surface(sim: TwilioSimulator) -> None:
    with httpx.Client(base_url=f"{sim.base_url}/_sim", timeout=5) as control, api(sim) as http:
        added = control.post("/incoming-numbers", json={"number": "+447700900200", "sms": False})
        assert added.status_code == 200 and added.json()["sid"].startswith("PN")
        items = {n["phone_number"]: n for n in control.get("/incoming-numbers").json()["items"]}
        assert items["+447700900200"]["capabilities"] == {
            "fax": False,
            "mms": True,
            "sms": False,
            "voice": True,
        }
        assert sim.from_number in items
        assert control.post("/incoming-numbers", json={"number": "447700900200"}).status_code == 400
        removed = control.post("/incoming-numbers", json={"number": "+447700900200", "remove": True})
        assert removed.json() == {"removed": True}
        listed = http.get(incoming_path(sim), params={"PhoneNumber": "+447700900200"}).json()
        assert listed["incoming_phone_numbers"] == []
