"""A dispatcher stand-in run as a separate process by test_claim_processes.py.

argv: database URL, worker id. Prints "ready", waits for "go" on stdin, then claims and
"sends" (mark_submitting, mark_sent) until nothing is due; prints one JSON list of its job ids.
"""

from __future__ import annotations

import json
import sys
from datetime import UTC, datetime

from server.store import outbox
from server.store.db import create_db_engine, session_scope

NOW = datetime(2026, 11, 25, 9, 0, tzinfo=UTC)


def main() -> None:
    url, worker = sys.argv[1], sys.argv[2]
    engine = create_db_engine(url)
    print("ready", flush=True)
    if sys.stdin.readline().strip() != "go":
        raise SystemExit("expected 'go'")
    mine: list[str] = []
    while True:
        with session_scope(engine) as session:
            batch = outbox.claim_due(session, worker, now=NOW, limit=10, lease_seconds=600)
        if not batch:
            break
        with session_scope(engine) as session:  # committed before the (pretend) HTTP calls
            for message in batch:
                if not outbox.mark_submitting(session, message.job_id, worker, now=NOW, lease_seconds=600):
                    raise SystemExit(f"{worker} lost its claim on {message.job_id}")
        with session_scope(engine) as session:
            for message in batch:
                outbox.mark_sent(
                    session, message.job_id, sid=f"SM{message.id:032x}", twilio_status="queued", now=NOW
                )
        mine.extend(m.job_id for m in batch)
    engine.dispose()
    print(json.dumps(mine), flush=True)


if __name__ == "__main__":
    main()
