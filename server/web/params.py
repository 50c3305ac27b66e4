"""Typed HTTP parameters shared by the API controllers.

Row ids and cursors are bounded by the database's INTEGER (PostgreSQL: 32-bit): a larger number
names no row, and would fail inside the driver as a 500 instead of a clear 400.
"""

from __future__ import annotations

from typing import Annotated

from litestar.params import PathParameter, QueryParameter

MAX_ROW_ID = 2**31 - 1

RowId = Annotated[int, PathParameter(ge=1, le=MAX_ROW_ID)]
Cursor = Annotated[int | None, QueryParameter(ge=1, le=MAX_ROW_ID)]
