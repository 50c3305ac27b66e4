"""The audit pages' building blocks: sessions, masking in free text, the error-meaning table."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from server.twilio.meanings import ERROR_MEANINGS, meaning_of
from server.web.audit.present import mask_numbers_in, mask_phone, status_look
from server.web.audit.session import issue_session, session_valid

TOKEN = "a-long-random-api-token"


def test_a_session_is_valid_until_it_expires() -> None:
    cookie = issue_session(TOKEN, now=lambda: 1_000_000.0, lifetime=60)
    assert session_valid(cookie, TOKEN, now=lambda: 1_000_059.0)
    assert not session_valid(cookie, TOKEN, now=lambda: 1_000_060.0)


def test_a_session_is_bound_to_the_token_and_its_signature() -> None:
    cookie = issue_session(TOKEN, now=lambda: 1_000_000.0)
    assert not session_valid(cookie, "a-rotated-api-token", now=lambda: 1_000_000.0)
    payload, _, signature = cookie.rpartition(".")
    flipped = signature[:-1] + ("A" if signature[-1] != "A" else "B")
    assert not session_valid(f"{payload}.{flipped}", TOKEN, now=lambda: 1_000_000.0)
    for junk in ("", "v1", "v1.x.y.z", "v2.99999999999.n.sig", cookie + "."):
        assert not session_valid(junk, TOKEN, now=lambda: 1_000_000.0)
    assert not session_valid(cookie, "", now=lambda: 1_000_000.0)  # no token configured: closed


def test_no_session_without_a_configured_token() -> None:
    with pytest.raises(ValueError, match="MLC_API_TOKEN"):
        issue_session("")


def test_numbers_in_free_text_are_masked_but_amounts_are_not() -> None:
    text = "The 'To' number +1 (415) 555-2671 is not valid; 07700 900123 too; invoice of 12,500.00 due 2026-11-28"
    masked = mask_numbers_in(text)
    assert "555-2671" not in masked and "900123" not in masked
    assert "12,500.00" in masked and "2026-11-28" in masked
    assert mask_phone("+14155552671") == "+1 41** ***671"
    assert mask_phone(None) == "—"


def test_every_status_has_a_look() -> None:
    assert status_look("failed").tone == "bad"
    assert status_look("delivered").label == "Delivered"
    assert status_look("something-new").label == "Something-new"


def test_meanings_accept_stored_codes() -> None:
    assert meaning_of("30005") is ERROR_MEANINGS[30005]
    assert meaning_of(30003) is not None
    assert meaning_of("ML402") is None
    assert meaning_of(None) is None
    assert meaning_of("99999") is None


def test_the_table_agrees_with_the_reference(shared_reference: Path) -> None:
    data = json.loads((shared_reference / "data" / "twilio" / "error_codes.json").read_text())
    reference = {entry["code"]: entry for entry in data["errors"]}
    for code, meaning in ERROR_MEANINGS.items():
        assert code in reference, f"{code} is not in the reference"
        assert reference[code]["title"].startswith(meaning.title), code
    # every delivery-failure code the reference lists has a meaning on the page
    for code in reference:
        if 30000 <= code < 31000:
            assert code in ERROR_MEANINGS, code
