"""The webhook's one-pass read of a notification body (decode_items) means what the careful read
(parse_body, then validate_items) means, and gives way to it for anything unusual."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from server.planning.notifications import Item, decode_items, parse_body, validate_items

CO = "5d1b3a4c-0000-4000-8000-000000000001"
SUB = "0f0e0d0c-0000-4000-8000-00000000aaaa"


def item(record: str = "c1", **changes: Any) -> dict[str, Any]:
    out: dict[str, Any] = {
        "subscriptionId": SUB,
        "clientState": "secret",
        "expirationDateTime": "2026-11-28T09:00:00Z",
        "resource": f"api/v2.0/companies({CO})/customers({record})",
        "changeType": "updated",
        "lastModifiedDateTime": "2026-11-25T09:00:05Z",
    }
    out.update(changes)
    return {k: v for k, v in out.items() if v is not ...}


def careful(raw: bytes) -> tuple[list[tuple[int, Item]], list[tuple[int, str]]]:
    return validate_items(parse_body(raw))


WELL_FORMED = {
    "plain": [item("c1"), item("c2", changeType="deleted")],
    "empty": [],
    "7 fractional digits, truncated as pydantic does": [
        item(lastModifiedDateTime="2026-11-25T09:00:05.9999999Z")
    ],
    "offsets and a naive time": [
        item(lastModifiedDateTime="2026-11-25T10:00:05.123+01:00"),
        item("c2", lastModifiedDateTime="2026-11-25T09:00:05"),
    ],
    "clientState null or missing, fields BC may add": [
        item(clientState=None),
        item("c2", clientState=..., extra={"nested": [1, 2]}),
    ],
    "a collection": [
        item(
            changeType="collection",
            resource=f"api/v2.0/companies({CO})/customers?$filter=lastModifiedDateTime%20gt%202026-11-25T09:00:00Z",
        )
    ],
}


@pytest.mark.parametrize("items", WELL_FORMED.values(), ids=WELL_FORMED.keys())
def test_a_well_formed_body_reads_as_the_careful_read_does(items: list[dict[str, Any]]) -> None:
    raw = json.dumps({"value": items, "@odata.context": "ignored"}).encode()
    decoded = decode_items(raw)
    assert decoded is not None
    assert list(enumerate(decoded)) == careful(raw)[0]
    assert careful(raw)[1] == []


def test_times_keep_pydantics_meaning() -> None:
    raw = json.dumps(
        {"value": [item(lastModifiedDateTime="2026-11-25T09:00:05.1234567Z"), item("c2")]}
    ).encode()
    decoded = decode_items(raw)
    assert decoded is not None
    assert [i.last_modified for i in decoded] == [
        datetime(2026, 11, 25, 9, 0, 5, 123456, tzinfo=UTC),  # truncated, not rounded up to ...457
        datetime(2026, 11, 25, 9, 0, 5, tzinfo=UTC),
    ]
    offset = decode_items(
        json.dumps({"value": [item(lastModifiedDateTime="2026-11-25T10:00:05+01:00")]}).encode()
    )
    assert offset is not None and offset[0].last_modified.utcoffset() == timedelta(hours=1)
    assert offset[0].last_modified == datetime(2026, 11, 25, 9, 0, 5, tzinfo=UTC)


UNUSUAL = {
    "a BOM (older BC versions)": b"\xef\xbb\xbf" + json.dumps({"value": [item()]}).encode(),
    "invalid UTF-8": b'{"value": [{"resource": "\xff"}]}',
    "a lone surrogate": json.dumps({"value": [item(resource="\ud800")]}).encode(),
    "not an object": json.dumps([item()]).encode(),
    "no value array": json.dumps({"items": [item()]}).encode(),
    "an unknown change type": json.dumps({"value": [item(), item("c2", changeType="exploded")]}).encode(),
    "a missing field": json.dumps({"value": [item(resource=...)]}).encode(),
    "a time that is no time": json.dumps({"value": [item(lastModifiedDateTime="yesterday")]}).encode(),
    "a time as a number": json.dumps({"value": [item(lastModifiedDateTime=1764061205)]}).encode(),
    "NaN": b'{"value": [], "x": NaN}',
    "not JSON": b"{not json",
}


@pytest.mark.parametrize("raw", UNUSUAL.values(), ids=UNUSUAL.keys())
def test_anything_unusual_is_left_to_the_careful_read(raw: bytes) -> None:
    assert decode_items(raw) is None


def test_the_careful_read_still_names_what_is_wrong() -> None:
    parsed, dropped = careful(UNUSUAL["an unknown change type"])
    assert [n for n, _ in parsed] == [0]
    assert dropped == [(1, "malformed item (changeType)")]
    with_bom = careful(UNUSUAL["a BOM (older BC versions)"])
    assert [i.resource for _, i in with_bom[0]] == [f"api/v2.0/companies({CO})/customers(c1)"]
