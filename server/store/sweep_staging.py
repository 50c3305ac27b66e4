"""Where a sweep's held messages wait for its last page: the `sweep_held_messages` table.

Grouping (one text per customer) and per-recipient caps need every message of the sweep, but a
sweep of 100,000 invoices must not keep 100,000 messages in memory. So each page's held messages
are written here in the transaction that stores the page (`stage`), and read back at the end in
order of (phase, part, seq), one part (every message of one recipient) at a time (`parts`), in
chunks fetched by keyset so that neither side holds more than a chunk and the largest part.

A run is one sweep of one company and entity (`run_id`). Its rows are deleted when it ends
(`drop_run`); a run that never ended (the process died) leaves rows that no other run reads (every
read names its run) and that the next sweep deletes when it starts (`drop_all`, under the sweep
lease, when no other sweep can be running).

The day's mark of a finished sweep of a company lives here too (`last_sweep`, `record_sweep`): a row
of the poll watermarks table under its own entity and kind, which no poll reads.

Functions take a Session and never commit, except `parts`, which reads each chunk in its own
short read transaction (the caller writes between chunks).
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, fields
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy import Engine
from sqlmodel import Session

from engine.messages import PlannedMessage
from server.store.columns import require_aware
from server.store.db import read_scope, upsert_statement
from server.store.tables import PollWatermark, SweepHeldMessage

_HELD = SweepHeldMessage.__table__  # type: ignore[attr-defined]
_WATERMARKS = PollWatermark.__table__  # type: ignore[attr-defined]
_MARK_ENTITY, _MARK_KIND = "sweep", "last-run"
_FIELDS = tuple(f.name for f in fields(PlannedMessage))
CHUNK = 1000  # rows per read-back query

# Phases, read back in this order.
BY_RECIPIENT = 0  # grouped and capped per recipient: a part is every message to one number
ALONE = 1  # neither grouped nor capped (messages to staff): a part is one message


@dataclass(frozen=True)
class Held:
    """One held message and where it is read back: its phase, its part, its order in the run."""

    seq: int
    phase: int
    part: str
    message: PlannedMessage


def new_run_id() -> str:
    return uuid.uuid4().hex


def message_json(message: PlannedMessage) -> dict[str, Any]:
    """Every field of the message; `record` is already JSON (a BC record as the engine sees it)."""
    data = {name: getattr(message, name) for name in _FIELDS}
    if data["record"] is not None:
        data["record"] = dict(data["record"])
    return data


def message_from_json(data: Mapping[str, Any]) -> PlannedMessage:
    return PlannedMessage(**{name: data[name] for name in _FIELDS if name in data})


def stage(session: Session, run_id: str, company_id: str, entity: str, held: Sequence[Held]) -> None:
    """Write held messages of run `run_id` (in the caller's transaction, with the page that planned them)."""
    if not held:
        return
    session.execute(
        sa.insert(_HELD),
        [
            {
                "run_id": run_id,
                "seq": h.seq,
                "company_id": company_id,
                "entity": entity,
                "phase": h.phase,
                "part": h.part,
                "message": message_json(h.message),
            }
            for h in held
        ],
    )


def count_run(session: Session, run_id: str) -> int:
    query = sa.select(sa.func.count()).select_from(_HELD).where(_HELD.c.run_id == run_id)
    return int(session.execute(query).scalar_one())


def parts(db: Engine, run_id: str, *, chunk: int = CHUNK) -> Iterator[list[PlannedMessage]]:
    """Run `run_id`'s messages, one part at a time (phase, then part, each in the order planned)."""
    c = _HELD.c
    after: tuple[int, str, int] | None = None
    current: list[PlannedMessage] = []
    key: tuple[int, str] | None = None
    while True:
        query = sa.select(c.phase, c.part, c.seq, c.message).where(c.run_id == run_id)
        if after is not None:
            phase, part, seq = after
            # A row-value comparison: both backends walk the (run_id, phase, part, seq) index from there.
            query = query.where(sa.tuple_(c.phase, c.part, c.seq) > sa.tuple_(phase, part, seq))
        query = query.order_by(c.phase, c.part, c.seq).limit(chunk)
        with read_scope(db) as session:
            rows = session.execute(query).all()
        for phase, part, _seq, data in rows:
            if key is not None and (phase, part) != key and current:
                yield current
                current = []
            key = (phase, part)
            current.append(message_from_json(data))
        if len(rows) < chunk:
            break
        last = rows[-1]
        after = (last.phase, last.part, last.seq)
    if current:
        yield current


def drop_run(session: Session, run_id: str) -> int:
    """Delete a run's rows (its sweep is done with them)."""
    result = session.execute(sa.delete(_HELD).where(_HELD.c.run_id == run_id))
    return int(getattr(result, "rowcount", 0) or 0)


def drop_all(session: Session) -> int:
    """Delete every row: called under the sweep lease before sweeping, when any row left is a dead run's."""
    result = session.execute(sa.delete(_HELD))
    return int(getattr(result, "rowcount", 0) or 0)


def last_sweep(session: Session, company_id: str) -> datetime | None:
    row = session.get(PollWatermark, (company_id, _MARK_ENTITY, _MARK_KIND))
    return row.last_modified if row is not None else None


def record_sweep(session: Session, company_id: str, at: datetime) -> None:
    at = require_aware(at)
    row = {
        "company_id": company_id,
        "entity": _MARK_ENTITY,
        "kind": _MARK_KIND,
        "last_modified": at,
        "seen": {},
        "updated_at": at,
    }
    session.execute(
        upsert_statement(
            session,
            _WATERMARKS,
            [row],
            conflict_columns=["company_id", "entity", "kind"],
            update_columns=["last_modified", "updated_at"],
        )
    )
