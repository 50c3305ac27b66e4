"""Reminders between the engine and the outbox: the one call that replaces `insert_planned`.

`store_reminders(session, messages, ...)` takes what the rules planned for a batch of records
(a sweep page, or better the whole sweep of a company) and, in the caller's transaction:

1. drops messages whose job id is already in the outbox (a replay plans nothing new, and an
   invoice already reminded at this stage is never listed again in a new group);
2. for reminder rules (ladders, day stages) holds back, each as a recorded skip:
   - a BC-side switch: the configured customer field has a suppressing value (`suppressed`);
   - a pause of the customer or invoice (`paused`, with the pause's end and reason);
   - a grace period: a customer payment line for the invoice was seen within the stage's
     grace_days (`payment-grace`) - the payment is on its way;
3. groups what is left: one message per recipient, rule and stage (engine.grouping);
4. applies per-recipient caps: at most K reminder messages per day and per week; the excess is
   recorded (`capped`) and tried again by the next sweep;
5. in test mode diverts everything (server.planning.testmode) and marks the rows is_test;
6. inserts (outbox.insert_planned).

Held-back messages are recorded under a DERIVED job id (the real one + why + which pause/day), so
the audit shows them once, and the real job id stays free: when the pause ends or the cap resets,
the next sweep sends the reminder of the stage the invoice is in then.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from sqlmodel import Session

from engine.conditions import make_getter
from engine.grouping import group_messages
from engine.messages import PlannedMessage, make_job_id
from engine.pauses import Pause, pause_for
from engine.ruleset import RuleSet
from server.planning.testmode import divert
from server.runtime.logs import get_logger
from server.settings import ReminderSettings, TestModeSettings
from server.store.outbox import insert_planned
from server.store.pauses import active_pauses
from server.store.reminders import existing_job_ids, recent_payments, sent_counts

log = get_logger("ml_connector.reminders")

SUPPRESSED, PAUSED, PAYMENT_GRACE, CAPPED = "suppressed", "paused", "payment-grace", "capped"


@dataclass
class ReminderReport:
    planned: int = 0
    already: int = 0
    suppressed: int = 0
    paused: int = 0
    grace: int = 0
    grouped: int = 0  # grouped messages created
    capped: int = 0
    test: bool = False
    inserted: list[str] = field(default_factory=list)


def _held(message: PlannedMessage, code: str, reason: str, *key: Any) -> PlannedMessage:
    return dataclasses.replace(
        message,
        job_id=make_job_id([message.job_id, code, *key]),
        skip_code=code,
        skip_reason=reason,
    )


def cap_periods(now: datetime, zone: str) -> tuple[datetime, datetime]:
    """The starts of today and of this (ISO, Monday-first) week in `zone`: caps count calendar periods."""
    tz = ZoneInfo(zone)
    today = now.astimezone(tz).date()
    day_start = datetime.combine(today, time(0), tzinfo=tz)
    week_start = datetime.combine(today - timedelta(days=today.weekday()), time(0), tzinfo=tz)
    return day_start, week_start


def _is_reminder(ruleset: RuleSet, message: PlannedMessage) -> bool:
    rule = ruleset.get(message.rule_id)
    return rule is not None and rule.is_reminder


def hold_back(
    messages: Sequence[PlannedMessage],
    ruleset: RuleSet,
    now: datetime,
    *,
    pauses: Sequence[Pause],
    payments: Mapping[str, datetime],
    settings: ReminderSettings,
    company_id: str | None = None,
    report: ReminderReport | None = None,
) -> list[PlannedMessage]:
    """Steps 2 (pure): the BC switch, pauses and payment grace turn reminders into recorded skips."""
    report = report if report is not None else ReminderReport()
    suppress = make_getter(settings.suppress_field) if settings.suppress_field else None
    values = {v.lower() for v in settings.suppress_values}
    out: list[PlannedMessage] = []
    for m in messages:
        if m.skipped or not _is_reminder(ruleset, m):
            out.append(m)
            continue
        record = m.record or {}
        flag = suppress(record) if suppress is not None else None
        if flag is not None and str(flag).strip().lower() in values:
            report.suppressed += 1
            out.append(
                _held(
                    m,
                    SUPPRESSED,
                    f"reminders are switched off in BC: {settings.suppress_field} is {flag!r}",
                    flag,
                )
            )
            continue
        pause = pause_for(record, pauses, now, company_id=company_id)
        if pause is not None:
            report.paused += 1
            out.append(_held(m, PAUSED, pause.describe(), pause.id, pause.until.isoformat()))
            continue
        if m.grace_days > 0:
            seen = [payments.get(str(v).lower()) for v in (record.get("id"), record.get("number")) if v]
            latest = max((s for s in seen if s is not None), default=None)
            if latest is not None and latest > now - timedelta(days=m.grace_days):
                report.grace += 1
                out.append(
                    _held(
                        m,
                        PAYMENT_GRACE,
                        f"a customer payment for this invoice was seen {latest.isoformat()}, within the "
                        f"stage's {m.grace_days} grace day(s)",
                        latest.isoformat(),
                    )
                )
                continue
        out.append(m)
    return out


def apply_caps(
    messages: Sequence[PlannedMessage],
    ruleset: RuleSet,
    now: datetime,
    *,
    day_counts: Mapping[str, int],
    week_counts: Mapping[str, int],
    settings: ReminderSettings,
    report: ReminderReport | None = None,
) -> list[PlannedMessage]:
    """Step 4 (pure): beyond K reminders per recipient per day/week, record the excess as `capped`."""
    report = report if report is not None else ReminderReport()
    day, week = dict(day_counts), dict(week_counts)
    today = now.astimezone(ZoneInfo(settings.cap_timezone)).date().isoformat()
    out: list[PlannedMessage] = []
    for m in messages:
        rule = ruleset.get(m.rule_id)
        if m.skipped or m.to is None or rule is None or not rule.is_reminder or rule.to_staff(m.stage):
            out.append(m)  # staff (fixed numbers) are not capped: they chase many customers a day
            continue
        over = None
        if settings.cap_per_day and day.get(m.to, 0) >= settings.cap_per_day:
            over = f"{settings.cap_per_day} reminder(s) per day"
        elif settings.cap_per_week and week.get(m.to, 0) >= settings.cap_per_week:
            over = f"{settings.cap_per_week} reminder(s) per week"
        if over is not None:
            report.capped += 1
            out.append(
                _held(m, CAPPED, f"recipient already had {over}; tried again on the next sweep", today)
            )
            continue
        day[m.to] = day.get(m.to, 0) + 1
        week[m.to] = week.get(m.to, 0) + 1
        out.append(m)
    return out


def store_reminders(
    session: Session,
    messages: Sequence[PlannedMessage],
    ruleset: RuleSet,
    *,
    company_id: str,
    now: datetime,
    settings: ReminderSettings | None = None,
    test_mode: TestModeSettings | None = None,
) -> ReminderReport:
    """Steps 1-6 in the caller's transaction; returns what happened (inserted job ids included)."""
    settings = settings or ReminderSettings()  # the defaults (tests); the service passes its own
    test_mode = test_mode or TestModeSettings()
    report = ReminderReport(planned=len(messages), test=test_mode.enabled)
    present = existing_job_ids(session, (m.job_id for m in messages))
    fresh = [m for m in messages if m.job_id not in present]
    report.already = len(messages) - len(fresh)
    reminders = [m for m in fresh if _is_reminder(ruleset, m)]
    if reminders:
        grace = max((m.grace_days for m in reminders), default=0)
        payments = recent_payments(session, company_id, now - timedelta(days=grace)) if grace else {}
        fresh = hold_back(
            fresh,
            ruleset,
            now,
            pauses=active_pauses(session, now),
            payments=payments,
            settings=settings,
            company_id=company_id,
            report=report,
        )
        before = len(fresh)
        fresh = group_messages(fresh, ruleset, now)
        report.grouped = len(fresh) - before
        if settings.cap_per_day or settings.cap_per_week:
            rules = [r.id for r in ruleset if r.is_reminder]
            recipients = [m.to for m in fresh if m.to and not m.skipped]
            day_start, week_start = cap_periods(now, settings.cap_timezone)
            fresh = apply_caps(
                fresh,
                ruleset,
                now,
                day_counts=sent_counts(session, recipients, rules, day_start),
                week_counts=sent_counts(session, recipients, rules, week_start),
                settings=settings,
                report=report,
            )
    if test_mode.enabled:
        fresh = divert(fresh, test_mode)
    report.inserted = insert_planned(
        session, fresh, company_id=company_id, now=now, is_test=test_mode.enabled
    )
    if report.suppressed or report.paused or report.grace or report.capped or report.grouped:
        log.info(
            "reminders held back or grouped",
            company=company_id,
            suppressed=report.suppressed,
            paused=report.paused,
            grace=report.grace,
            capped=report.capped,
            grouped=report.grouped,
        )
    return report
