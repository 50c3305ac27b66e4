"""Test mode: set up against production BC safely. Every send goes to one test number, or nowhere.

`MLC_TEST_MODE=true` with `MLC_TEST_NUMBER=+447700900123` (`settings.testing`) diverts every
planned message to that number (the body says who it was meant for); without a number the message
is only logged and recorded. Either way the audit row has `is_test` set, and the job id is derived from the real one
plus "test": switching test mode off later lets the real reminders go out, they are not taken for
repeats of the test sends.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import TYPE_CHECKING

from engine.messages import make_job_id
from engine.phones import mask
from server.runtime.logs import get_logger
from server.settings import TestModeSettings

if TYPE_CHECKING:
    from engine.messages import PlannedMessage

log = get_logger("ml_connector.testmode")

LOG_ONLY = "test-log-only"


def divert(messages: Sequence[PlannedMessage], settings: TestModeSettings) -> list[PlannedMessage]:
    """The messages as test mode sends them: to the test number, or recorded as log-only skips."""
    out: list[PlannedMessage] = []
    for m in messages:
        job_id = make_job_id([m.job_id, "test"])
        if m.skipped or m.to is None:
            group = make_job_id([m.group_job_id, "test"]) if m.group_job_id else None
            out.append(dataclasses.replace(m, job_id=job_id, group_job_id=group))
            continue
        meant = f"[TEST for {mask(m.to)}] "
        if settings.number:
            out.append(
                dataclasses.replace(
                    m,
                    job_id=job_id,
                    to=settings.number,
                    body=meant + m.body,
                    reason=f"test mode: diverted from {mask(m.to)}; {m.reason}",
                )
            )
        else:
            log.info("test mode (log only)", job=job_id, rule=m.rule_id, to=mask(m.to), body=m.body)
            out.append(
                dataclasses.replace(
                    m,
                    job_id=job_id,
                    skip_code=LOG_ONLY,
                    skip_reason=f"test mode, log only: meant for {mask(m.to)}",
                )
            )
    return out
