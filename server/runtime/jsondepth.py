"""How deeply a JSON body nests, measured on the bytes before any decoder sees them.

Python's json module and msgspec both decode nested arrays and objects by recursion: a body of a few
kilobytes of `[` raises RecursionError, which no caller expects (they catch ValueError) and which
became a 500 with a traceback. Every JSON body the service reads is at most MAX_JSON_DEPTH deep
(BC's notifications are 3 levels, the API's bodies 2): deeper is refused before decoding.
"""

from __future__ import annotations

import re
from itertools import accumulate

MAX_JSON_DEPTH = 32

# A JSON string (brackets inside one don't nest). Possessive, and an unterminated string runs to
# the end: every match attempt consumes what it scans, so no input makes this quadratic.
_STRING = re.compile(rb'"(?:[^"\\]++|\\.?)*+(?:"|\Z)', re.DOTALL)
_NOT_BRACKETS = bytes(b for b in range(256) if b not in b"[]{}")
_STEP = [0] * 256
for _open in b"[{":
    _STEP[_open] = 1
for _close in b"]}":
    _STEP[_close] = -1


class JSONTooDeepError(ValueError):
    """A body nested deeper than the bound (a ValueError: callers already refuse those)."""

    def __init__(self, limit: int = MAX_JSON_DEPTH) -> None:
        super().__init__(f"JSON nested deeper than {limit} levels")
        self.limit = limit


def json_depth(raw: bytes) -> int:
    """The deepest nesting of arrays and objects in `raw` (0 for a scalar; malformed JSON still gets
    a number: the decoder that runs next refuses it)."""
    brackets = _STRING.sub(b"", raw).translate(None, _NOT_BRACKETS)
    return max(accumulate(_STEP[b] for b in brackets), default=0)


def check_json_depth(raw: bytes, limit: int = MAX_JSON_DEPTH) -> None:
    """Raise JSONTooDeepError when `raw` nests deeper than `limit`."""
    if (raw.count(b"[") + raw.count(b"{")) > limit and json_depth(raw) > limit:
        raise JSONTooDeepError(limit)
