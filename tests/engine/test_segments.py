"""SMS segment counting: GSM-7 160/153 with two-septet extension characters, UCS-2 70/67."""

from __future__ import annotations

import random

import pytest

from engine.render import _GSM_BASIC, _GSM_EXTENSION, SegmentInfo, _pack, segment_count, sms_segments


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        ("", SegmentInfo("GSM-7", 0, 0)),
        ("a", SegmentInfo("GSM-7", 1, 1)),
        ("a" * 160, SegmentInfo("GSM-7", 160, 1)),
        ("a" * 161, SegmentInfo("GSM-7", 161, 2)),
        ("a" * 306, SegmentInfo("GSM-7", 306, 2)),
        ("a" * 307, SegmentInfo("GSM-7", 307, 3)),
        ("a" * 459, SegmentInfo("GSM-7", 459, 3)),
        ("€" * 80, SegmentInfo("GSM-7", 160, 1)),
        ("€" * 81, SegmentInfo("GSM-7", 162, 2)),
        ("{" + "a" * 159, SegmentInfo("GSM-7", 161, 2)),
        ("[]{}|~^\\€", SegmentInfo("GSM-7", 18, 1)),
        ("£$¥èéùìòÇØøÅåΔ_ΦΓΛΩΠΨΣΘΞÆæßÉ¤¡ÄÖÑÜ§¿äöñüà@\n\r", SegmentInfo("GSM-7", 44, 1)),
        # An escape pair never straddles two segments: 152 plain + one '€' fills the first part.
        ("a" * 152 + "€" + "a" * 10, SegmentInfo("GSM-7", 164, 2)),
        ("a" * 152 + "€" * 77, SegmentInfo("GSM-7", 306, 3)),
        ("ő", SegmentInfo("UCS-2", 1, 1)),
        ("ő" * 70, SegmentInfo("UCS-2", 70, 1)),
        ("ő" * 71, SegmentInfo("UCS-2", 71, 2)),
        ("ő" * 134, SegmentInfo("UCS-2", 134, 2)),
        ("ő" * 135, SegmentInfo("UCS-2", 135, 3)),
        ("a" * 159 + "ő", SegmentInfo("UCS-2", 160, 3)),  # one non-GSM character switches the whole body
        ("`", SegmentInfo("UCS-2", 1, 1)),  # backtick is not in GSM 03.38
        ("ç", SegmentInfo("UCS-2", 1, 1)),  # only capital Ç is in the basic table
        ("😀" * 35, SegmentInfo("UCS-2", 70, 1)),  # emoji are surrogate pairs: two UTF-16 units
        ("😀" * 36, SegmentInfo("UCS-2", 72, 2)),
        ("a" * 66 + "😀" * 2, SegmentInfo("UCS-2", 70, 1)),
        ("a" * 66 + "😀" * 3, SegmentInfo("UCS-2", 72, 2)),
        # A surrogate pair does not straddle: 66 units + a pair would be 68 > 67, so the pair moves on.
        ("a" * 66 + "😀" + "a" * 5, SegmentInfo("UCS-2", 73, 2)),
        ("a" * 66 + "😀" * 35, SegmentInfo("UCS-2", 136, 3)),
    ],
)
def test_segments(body: str, expected: SegmentInfo) -> None:
    assert sms_segments(body) == expected


def _reference(body: str) -> SegmentInfo:
    """Character by character, as sms_segments counted before its fast paths."""
    if all(ch in _GSM_BASIC or ch in _GSM_EXTENSION for ch in body):
        costs = [2 if ch in _GSM_EXTENSION else 1 for ch in body]
        return SegmentInfo("GSM-7", sum(costs), _pack(costs, 160, 153))
    costs = [2 if ord(ch) > 0xFFFF else 1 for ch in body]
    return SegmentInfo("UCS-2", sum(costs), _pack(costs, 70, 67))


def test_fast_paths_count_as_the_reference_does() -> None:
    rng = random.Random(11)
    alphabets = ["ab c.", "ab€{", "abő", "ab😀", "ab`", "ab€ő😀\n"]
    bodies = [""] + [
        "".join(
            rng.choice(alphabet) for _ in range(rng.choice([1, 66, 67, 70, 153, 160, 161, 306, 307, 400]))
        )
        for alphabet in alphabets
        for _ in range(40)
    ]
    for body in bodies:
        expected = _reference(body)
        assert sms_segments(body) == expected, body
        assert segment_count(body) == expected.segments, body


def test_gsm_basic_check_matches_the_table() -> None:
    from engine.render import is_gsm_basic

    for code in range(0x400):
        assert is_gsm_basic(chr(code)) is (chr(code) in _GSM_BASIC), hex(code)
    rng = random.Random(3)
    alphabet = "ab {`~\x00\n\r\x7f€é Δő[A]^\\|"
    for _ in range(5000):
        body = "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 8)))
        assert is_gsm_basic(body) is all(ch in _GSM_BASIC for ch in body), repr(body)
