"""Verify through TwilioClient against the simulator: happy path, wrong code, expiry, attempt limits."""

from __future__ import annotations

from datetime import timedelta

import pytest

from server.runtime.clock import ManualClock
from server.twilio.client import TwilioClient
from server.twilio.errors import InvalidRequestError, NotFoundError, VerificationLimitError
from simulators.twilio.simulator import TwilioSimulator

TO = "+447700900123"


def _checks(sim: TwilioSimulator) -> int:
    return len([r for r in sim.requests() if r.path.endswith("/VerificationCheck")])


async def test_happy_path(sim: TwilioSimulator, twilio: TwilioClient) -> None:
    started = await twilio.start_verification(TO, channel="sms")
    assert (started.status, started.channel, started.valid) == ("pending", "sms", False)
    code = sim.verification_code(TO)
    assert code is not None and len(code) == 6 and code.isdigit()
    checked = await twilio.check_verification(code, to=TO)
    assert checked.approved and checked.valid and checked.sid == started.sid
    # Approved verifications are soft-deleted: checking or fetching again is 404 / 20404.
    with pytest.raises(NotFoundError) as caught:
        await twilio.check_verification(code, to=TO)
    assert caught.value.code == 20404
    with pytest.raises(NotFoundError):
        await twilio.fetch_verification(started.sid)


async def test_wrong_code_is_pending_then_the_right_one_approves(
    sim: TwilioSimulator, twilio: TwilioClient
) -> None:
    started = await twilio.start_verification(TO, channel="call")
    code = sim.verification_code(TO) or ""
    wrong = "000000" if code != "000000" else "111111"
    result = await twilio.check_verification(wrong, verification_sid=started.sid)
    assert (result.status, result.valid) == ("pending", False)
    assert (await twilio.check_verification(code, verification_sid=started.sid)).status == "approved"


async def test_an_expired_code_is_not_found(
    sim: TwilioSimulator, twilio: TwilioClient, clock: ManualClock
) -> None:
    await twilio.start_verification(TO)
    code = sim.verification_code(TO) or ""
    clock.advance(timedelta(minutes=10))  # codes live 10 minutes
    with pytest.raises(NotFoundError):
        await twilio.check_verification(code, to=TO)
    assert [v["status"] for v in sim.verifications()] == ["expired"]


async def test_still_valid_just_before_expiry(
    sim: TwilioSimulator, twilio: TwilioClient, clock: ManualClock
) -> None:
    await twilio.start_verification(TO)
    clock.advance(timedelta(minutes=9, seconds=59))
    assert (await twilio.check_verification(sim.verification_code(TO) or "", to=TO)).approved


async def test_five_wrong_codes_then_max_attempts(sim: TwilioSimulator, twilio: TwilioClient) -> None:
    await twilio.start_verification(TO)
    code = sim.verification_code(TO) or ""
    wrong = "000000" if code != "000000" else "111111"
    for _ in range(5):
        assert (await twilio.check_verification(wrong, to=TO)).status == "pending"
    with pytest.raises(VerificationLimitError) as caught:
        await twilio.check_verification(code, to=TO)  # even the right code is refused now
    assert (caught.value.status, caught.value.code) == (429, 60202)
    assert _checks(sim) == 6  # the 429 was not retried


async def test_resends_reuse_the_code_until_max_send_attempts(
    sim: TwilioSimulator, twilio: TwilioClient
) -> None:
    first = await twilio.start_verification(TO)
    code = sim.verification_code(TO)
    for _ in range(4):
        again = await twilio.start_verification(TO)
        assert again.sid == first.sid
    assert sim.verification_code(TO) == code
    with pytest.raises(VerificationLimitError) as caught:
        await twilio.start_verification(TO)
    assert caught.value.code == 60203


async def test_a_service_with_its_own_code_length(sim: TwilioSimulator, twilio: TwilioClient) -> None:
    service = await twilio.create_verify_service("Payment approvals", code_length=8)
    assert service.sid.startswith("VA") and service.code_length == 8
    await twilio.start_verification(TO, service_sid=service.sid)
    assert len(sim.verification_code(TO) or "") == 8


async def test_invalid_parameters_are_60200(twilio: TwilioClient) -> None:
    with pytest.raises(InvalidRequestError) as caught:
        await twilio.check_verification("12", to=TO)
    assert (caught.value.code, caught.value.message) == (60200, "Invalid parameter: Code")
    with pytest.raises(InvalidRequestError):
        await twilio.create_verify_service("x" * 40)
