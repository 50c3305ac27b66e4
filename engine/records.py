"""Reading BC records from files, streaming: grouped JSON or NDJSON, one record at a time.

Formats (the same for preview and its --previous file):
- JSON: an object keyed by entity set, `{"salesInvoices": [...], "customers": [...]}`; an optional
  `"previous"` key holds last seen versions in the same shape.
- NDJSON: one `{"entity": "salesInvoices", "record": {...}}` per line, optionally with `"previous": {...}`.
The JSON form is parsed incrementally (json.JSONDecoder.raw_decode over a sliding buffer), so a file
with 100,000 invoices never has to fit in memory at once.
"""

from __future__ import annotations

import codecs
import json
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

CHUNK = 1 << 16
PREVIOUS_KEY = "previous"


class RecordsError(ValueError):
    """The records file is not in a supported shape; the message names the place."""


@dataclass(frozen=True)
class InputRecord:
    entity: str
    record: Mapping[str, Any]
    previous: Mapping[str, Any] | None = None
    section: str = ""  # "" for records, "previous" for the previous-versions section


class _Reader:
    """A sliding text buffer over a binary file that counts bytes consumed (for progress)."""

    def __init__(self, fh: IO[bytes], on_bytes: Callable[[int], None] | None) -> None:
        self.fh = fh
        self.decoder = codecs.getincrementaldecoder("utf-8")()
        self.buf = ""
        self.pos = 0
        self.eof = False
        self.on_bytes = on_bytes
        self.json = json.JSONDecoder()

    def fill(self) -> bool:
        if self.eof:
            return False
        data = self.fh.read(CHUNK)
        if self.on_bytes is not None:
            self.on_bytes(len(data))
        self.buf = self.buf[self.pos :] + self.decoder.decode(data, final=not data)
        self.pos = 0
        if not data:
            self.eof = True
        return True

    def peek(self) -> str:
        while True:
            while self.pos < len(self.buf) and self.buf[self.pos] in " \t\r\n":
                self.pos += 1
            if self.pos < len(self.buf):
                return self.buf[self.pos]
            if not self.fill():
                return ""

    def expect(self, chars: str) -> str:
        found = self.peek()
        if not found or found not in chars:
            shown = repr(found) if found else "end of file"
            raise RecordsError(f"expected one of {chars!r}, found {shown}")
        self.pos += 1
        return found

    def value(self) -> Any:
        self.peek()
        while True:
            try:
                value, end = self.json.raw_decode(self.buf, self.pos)
            except json.JSONDecodeError as exc:
                if self.fill():
                    continue
                raise RecordsError(f"invalid JSON: {exc.msg}") from None
            if end >= len(self.buf) and not self.eof:
                # A number may continue in the next chunk; read on before trusting it.
                self.fill()
                continue
            self.pos = end
            return value


def _iter_array(reader: _Reader, entity: str, section: str) -> Iterator[InputRecord]:
    reader.expect("[")
    if reader.peek() == "]":
        reader.pos += 1
        return
    while True:
        record = reader.value()
        if not isinstance(record, Mapping):
            raise RecordsError(f"{section + '.' if section else ''}{entity}: each record must be an object")
        yield InputRecord(entity, record, section=section)
        if reader.expect(",]") == "]":
            return


def _iter_grouped(reader: _Reader, section: str = "") -> Iterator[InputRecord]:
    reader.expect("{")
    if reader.peek() == "}":
        reader.pos += 1
        return
    while True:
        key = reader.value()
        if not isinstance(key, str):
            raise RecordsError("expected an entity set name")
        reader.expect(":")
        if key == PREVIOUS_KEY and not section:
            yield from _iter_grouped(reader, PREVIOUS_KEY)
        else:
            yield from _iter_array(reader, key, section)
        if reader.expect(",}") == "}":
            return


def _iter_ndjson(fh: IO[bytes], path: Path, on_bytes: Callable[[int], None] | None) -> Iterator[InputRecord]:
    for number, raw in enumerate(fh, start=1):
        if on_bytes is not None:
            on_bytes(len(raw))
        line = raw.strip()
        if not line:
            continue
        try:
            item = json.loads(line)
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise RecordsError(f"{path}:{number}: invalid JSON: {exc}") from None
        if (
            not isinstance(item, Mapping)
            or not isinstance(item.get("entity"), str)
            or not isinstance(item.get("record"), Mapping)
        ):
            raise RecordsError(f'{path}:{number}: expected {{"entity": "...", "record": {{...}}}}')
        previous = item.get(PREVIOUS_KEY)
        if previous is not None and not isinstance(previous, Mapping):
            raise RecordsError(f"{path}:{number}: previous must be an object")
        yield InputRecord(item["entity"], item["record"], previous)


def iter_records(path: Path, on_bytes: Callable[[int], None] | None = None) -> Iterator[InputRecord]:
    """Stream the records of a .json or .ndjson file (previous-versions section included)."""
    with path.open("rb") as fh:
        if path.suffix in {".ndjson", ".jsonl"}:
            yield from _iter_ndjson(fh, path, on_bytes)
            return
        reader = _Reader(fh, on_bytes)
        try:
            yield from _iter_grouped(reader)
        except RecordsError as exc:
            raise RecordsError(f"{path}: {exc}") from None
        if reader.peek():
            raise RecordsError(f"{path}: unexpected data after the top-level object")
