"""SMS segment counting: GSM-7 160/153 with two-septet extension characters, UCS-2 70/67."""

from __future__ import annotations

import pytest

from engine.render import SegmentInfo, sms_segments


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
