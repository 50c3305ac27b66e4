"""The webhooks as Twilio calls them: signatures first, STOP/START from a handset, unknown messages."""

from __future__ import annotations

from urllib.parse import quote, urlencode

import httpx
import pytest

from server.sandbox.stack import Stack
from server.sending.status import OptAction, keyword_action
from server.twilio.signatures import SIGNATURE_HEADER, sign

from .conftest import PHONE, creates, events, insert, make_dispatcher, message, opt_outs, row


def signed_post(
    stack: Stack,
    path: str,
    params: list[tuple[str, str]],
    *,
    sign_params: list[tuple[str, str]] | None = None,
) -> tuple[str, bytes, dict[str, str]]:
    """A request as Twilio would make it (the signature may be computed over other params to forge)."""
    url = f"{stack.url}{path}"
    signature = sign(url, sign_params if sign_params is not None else params, stack.twilio_sim.auth_token)
    headers = {SIGNATURE_HEADER: signature, "Content-Type": "application/x-www-form-urlencoded"}
    return url, urlencode(params).encode(), headers


async def post(url: str, body: bytes, headers: dict[str, str]) -> httpx.Response:
    async with httpx.AsyncClient(timeout=10) as http:
        return await http.post(url, content=body, headers=headers)


async def test_stop_from_a_handset_skips_later_sends_and_start_opts_back_in(any_stack: Stack) -> None:
    stack = any_stack
    sim = stack.twilio_sim
    dispatcher = make_dispatcher(stack)

    assert await sim.asend_inbound(PHONE, "  stop ") == 200
    (inbound,) = sim.callbacks(kind="inbound")
    assert inbound.status == 200
    assert opt_outs(stack) == [
        (PHONE, sim.from_number, True, "inbound-stop"),  # the number texted
        (PHONE, sim.messaging_service_sid, True, "inbound-stop"),  # and its Messaging Service pool
    ]
    (job,) = insert(stack, row(1))
    await dispatcher.run_once()
    skipped = message(stack, job)
    assert (skipped.status, skipped.error_message) == ("opted_out", "recipient opted out (STOP); not sent")
    assert [(e.status, e.source) for e in events(stack, job)][-1] == ("opted_out", "dispatcher")
    assert creates(stack) == []

    assert await sim.asend_inbound(PHONE, "Start") == 200
    assert [active for *_, active, _ in opt_outs(stack)] == [False, False]
    (later,) = insert(stack, row(2))
    await dispatcher.run_once()
    assert message(stack, later).status == "queued"
    assert len(creates(stack)) == 1


async def test_inbound_answers_empty_twiml_and_ignores_non_keywords(stack: Stack) -> None:
    sim = stack.twilio_sim
    for text in ("STOP PLEASE", "HELP", "thanks, paid yesterday"):
        assert await sim.asend_inbound(PHONE, text) == 200
    assert opt_outs(stack) == []
    params = [("From", PHONE), ("To", sim.from_number), ("Body", "hello"), ("MessageSid", "SM" + "0" * 32)]
    url, body, headers = signed_post(stack, "/webhooks/twilio/inbound", params)
    answer = await post(url, body, headers)
    assert answer.status_code == 200
    assert answer.headers["content-type"].startswith("text/xml")
    assert answer.text == '<?xml version="1.0" encoding="UTF-8"?><Response/>'


async def test_opt_out_type_covers_custom_keywords(stack: Stack) -> None:
    """Advanced Opt-Out: a custom keyword ('ARRET') arrives with OptOutType=STOP."""
    params = [
        ("From", PHONE),
        ("To", stack.twilio_sim.from_number),
        ("Body", "ARRET"),
        ("OptOutType", "STOP"),
    ]
    url, body, headers = signed_post(stack, "/webhooks/twilio/inbound", params)
    assert (await post(url, body, headers)).status_code == 200
    assert opt_outs(stack) == [(PHONE, stack.twilio_sim.from_number, True, "inbound-stop")]


@pytest.mark.parametrize(
    ("body", "opt_out_type", "expected"),
    [
        ("STOP", None, OptAction.OPT_OUT),
        (" unsubscribe\n", None, OptAction.OPT_OUT),
        ("StopAll", None, OptAction.OPT_OUT),
        ("cancel", None, OptAction.OPT_OUT),
        ("end", None, OptAction.OPT_OUT),
        ("quit", None, OptAction.OPT_OUT),
        ("revoke", None, OptAction.OPT_OUT),
        ("optout", None, OptAction.OPT_OUT),
        ("STOP PLEASE", None, None),
        ("stop.", None, None),
        ("yes", None, OptAction.OPT_IN),
        ("UNSTOP", None, OptAction.OPT_IN),
        ("start", None, OptAction.OPT_IN),
        ("help", None, OptAction.HELP),
        ("info", None, OptAction.HELP),
        ("ARRET", "STOP", OptAction.OPT_OUT),
        ("whatever", "start", OptAction.OPT_IN),
        ("", None, None),
        (None, None, None),
    ],
)
def test_keyword_action(body: str | None, opt_out_type: str | None, expected: OptAction | None) -> None:
    assert keyword_action(body, opt_out_type) is expected


async def test_forged_or_modified_requests_get_403_and_change_nothing(any_stack: Stack) -> None:
    stack = any_stack
    (job,) = insert(stack, row(1))
    await make_dispatcher(stack).run_once()
    before = message(stack, job)
    history = events(stack, job)
    path = f"/webhooks/twilio/status?job={quote(job, safe='')}"
    genuine = [("MessageSid", before.twilio_sid or ""), ("MessageStatus", "delivered"), ("To", PHONE)]

    forged = signed_post(stack, path, genuine)
    url, body, headers = forged
    attempts = [
        (url, body, {**headers, SIGNATURE_HEADER: "AAAAAAAAAAAAAAAAAAAAAAAAAAA="}),  # made-up signature
        (url, body, {k: v for k, v in headers.items() if k != SIGNATURE_HEADER}),  # none at all
        # signed for 'sent', body says 'delivered' (a parameter changed in flight)
        signed_post(stack, path, genuine, sign_params=[*genuine[:1], ("MessageStatus", "sent"), genuine[2]]),
        # signed without the extra field that was added
        signed_post(stack, path, [*genuine, ("ErrorCode", "30003")], sign_params=genuine),
        # signed for another job's URL
        (url.replace("job=", "job=x"), body, headers),
    ]
    for attempt_url, attempt_body, attempt_headers in attempts:
        answer = await post(attempt_url, attempt_body, attempt_headers)
        assert answer.status_code == 403, attempt_url
    forged_stop = signed_post(stack, "/webhooks/twilio/inbound", [("From", PHONE), ("Body", "STOP")])
    answer = await post(forged_stop[0], forged_stop[1], {**forged_stop[2], SIGNATURE_HEADER: "bad"})
    assert answer.status_code == 403

    after = message(stack, job)
    assert (after.status, after.updated_at) == (before.status, before.updated_at)
    assert events(stack, job) == history
    assert opt_outs(stack) == []

    genuine_answer = await post(
        *signed_post(stack, path, [*genuine, ("SomeNewField", "added without notice")])
    )
    assert genuine_answer.status_code == 200
    assert message(stack, job).status == "delivered"


async def test_a_callback_for_an_unknown_message_changes_nothing_and_answers_200(stack: Stack) -> None:
    (job,) = insert(stack, row(1))
    await make_dispatcher(stack).run_once()
    history = events(stack, job)
    unknown_sid = "SM" + "f" * 32
    for path in ("/webhooks/twilio/status", "/webhooks/twilio/status?job=no-such-job"):
        params = [("MessageSid", unknown_sid), ("MessageStatus", "delivered")]
        answer = await post(*signed_post(stack, path, params))
        assert answer.status_code == 200
    assert message(stack, job).status == "queued"
    assert events(stack, job) == history


async def test_a_status_callback_without_a_status_is_refused(stack: Stack) -> None:
    answer = await post(*signed_post(stack, "/webhooks/twilio/status", [("MessageSid", "SM" + "1" * 32)]))
    assert answer.status_code == 400
