"""Scripted sandbox scenarios: drive the whole stack (BC simulator, Twilio simulator, connector) through
a story a finance team recognises, then report what was sent and how each message ended.

The scenario is a client of the stack like any other: it changes records in the BC simulator, lets
handsets reply through the Twilio simulator, calls the connector's HTTP API, and runs one pass of a
worker at a time (the same `run_once` the service loops call), so every run tells the same story.

    async with Stack(...) as stack:
        report = await run_scenario(stack, "demo", say=print)

The "demo" story (each shipped rule fires at least once):
  1. subscribe     BC webhook subscriptions are created (validation handshake over HTTP)
  2. baseline      the poller reads purchase orders and payment lines (new lines -> payment receipts)
  3. large invoice a 12,500 sales invoice due in 3 days is posted (-> the desk is told, invoice-due-soon)
  4. sweep         the daily sweep runs the collections ladder over open invoices (invoice-overdue)
  5. STOP          Adatum's phone replies STOP: its reminders are recorded as opted out, never sent
  6. failing phone Alpine Ski House's handset is unknown to its carrier (Twilio 30005)
  7. 429 burst     Twilio answers 429 to the first sends; the dispatcher backs off and sends later
  8. BC changes    a customer crosses its credit limit, a large purchase invoice is posted (webhooks),
                   a released purchase order changes (polling)
  9. OTP change    a vendor's bank details change is approved with a Verify code, then PATCHed to BC
 10. a week later  the clock moves 7 days to 04:30 UTC; the sweep plans the next stage of the ladder;
                   every text is held in its recipient's quiet hours
 11. next morning  each recipient's window opens (08:00 local); the held texts go out
"""

from __future__ import annotations

import hashlib
import secrets
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from typing import Any, Protocol

import httpx

from engine.phones import mask
from server.sandbox.stack import Stack
from server.store.db import read_scope
from server.store.messages import all_messages, count_events_with_error, jobs_with_status_event
from server.store.states import CLAIMABLE, MessageStatus
from server.store.tables import OutboxMessage
from server.twilio.meanings import meaning_of
from simulators.bc.seeds.demo import GB_COMPANY_ID, US_COMPANY_ID

Say = Callable[[str], None]

# Who plays which part in the demo story (numbers as the seed's customers hold them, in E.164).
STOP_SENDER = "+442079460018"  # Adatum Corporation (C10000)
FAILING_HANDSET = "+14155552671"  # Alpine Ski House (C10030)
FAILING_CODE = 30005
RATE_LIMITED_SENDS = 6
OTP_APPROVER = "+447700900123"
# The demo's two people at the OTP gate, each with a personal API token (the settings hold only its
# SHA-256): the accounts-payable clerk proposes, the finance controller approves.
OTP_PROPOSER, OTP_CONTROLLER = "ap-clerk", "controller"
DEMO_TOKENS = {name: secrets.token_urlsafe(24) for name in (OTP_PROPOSER, OTP_CONTROLLER)}
NEW_IBAN = "GB33BUKB20201555555555"

# The demo's story needs sends to go out during the recipients' waking hours (rules hold messages in
# each recipient's quiet hours): 17:00 UTC is 17:00 in London, 12:00 in New York, 09:00 in Seattle.
DEMO_HOUR_UTC = 17
# The second sweep runs at 04:30 UTC: 20:30 in Seattle, 23:30 in New York, 04:30 in London.
LATE_EVENING_HOURS = 11.5


class AdvancingClock(Protocol):
    def now(self) -> datetime: ...
    def advance(self, delta: timedelta) -> datetime: ...


@dataclass
class ScenarioContext:
    stack: Stack
    clock: AdvancingClock
    say: Say
    facts: dict[str, Any] = field(default_factory=dict)

    @property
    def api_headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.stack.api_token}"}


@dataclass(frozen=True)
class Step:
    name: str
    title: str
    run: Callable[[ScenarioContext], Awaitable[str]]


@dataclass(frozen=True)
class MessageLine:
    job_id: str
    rule_id: str
    record: str
    recipient: str  # masked
    channel: str
    status: str
    error_code: str | None
    error_title: str | None
    note: str  # what went wrong, briefly: the Twilio error's title, or why it was not sent
    created_at: datetime
    stage: str = ""  # the ladder stage (days overdue; negative = before the due date)
    held: bool = False  # waited for the recipient's send window before going out
    group_job_id: str | None = None  # sent inside this grouped message instead


@dataclass
class ScenarioReport:
    scenario: str
    steps: list[tuple[str, str]]
    messages: list[MessageLine]
    rules: list[str]
    fired: dict[str, int]
    checks: dict[str, bool]

    @property
    def missing_rules(self) -> list[str]:
        return [r for r in self.rules if not self.fired.get(r)]

    @property
    def ok(self) -> bool:
        return not self.missing_rules and all(self.checks.values())

    def by_status(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for line in self.messages:
            counts[line.status] = counts.get(line.status, 0) + 1
        return counts


# -- helpers -----------------------------------------------------------------------------------------


def scenario_settings(secret_key: str) -> dict[str, Any]:
    """Settings the demo needs on top of the Stack's: the OTP approver and the bank-details API page
    (the BC simulator publishes it), a key for credentials at rest, and the development banner."""
    from server.settings import ChangeSettings

    return {
        "mode": "development",
        "secret_key": secret_key,
        "api_identities": {
            name: hashlib.sha256(token.encode()).hexdigest() for name, token in DEMO_TOKENS.items()
        },
        "changes": ChangeSettings(
            approver_roles={"finance-controller": {OTP_CONTROLLER: OTP_APPROVER}},
            bank_page_publisher="contoso",
            bank_page_group="finance",
            bank_page_version="v1.0",
            bank_page_entity_set="vendorBankAccounts",
        ),
    }


def demo_start(today: date) -> date:
    """The first Wednesday on or after `today`: a plain working day in both seeded countries."""
    return today + timedelta(days=(2 - today.weekday()) % 7)


def find_record(stack: Stack, company: str, entity: str, field_name: str, value: str) -> dict[str, Any]:
    for record in stack.bc_sim.records(company, entity):
        if record.get(field_name) == value:
            return record
    raise LookupError(f"the BC simulator has no {entity} with {field_name} {value!r}")


def outbox(stack: Stack) -> list[OutboxMessage]:
    with read_scope(stack.services.db) as session:
        rows = all_messages(session)
        session.expunge_all()
    return rows


def _count(stack: Stack) -> int:
    return len(outbox(stack))


async def deliver_bc_changes(ctx: ScenarioContext) -> int:
    """BC sends its batched notifications now; the fetcher drains the inbox."""
    await ctx.stack.bc_sim.aflush_notifications()
    handled = 0
    for _ in range(10):
        done = await ctx.stack.run("fetcher")
        handled += done
        if done == 0:
            break
    return handled


async def drain_outbox(ctx: ScenarioContext, *, max_passes: int = 30) -> int:
    """Dispatch until nothing is due, moving the clock over short back-offs; Twilio's callbacks settle."""
    stack = ctx.stack
    handled = 0
    for _ in range(max_passes):
        handled += await stack.run("dispatcher")
        await stack.twilio_sim.asettle()
        now = ctx.clock.now()
        waiting = [
            m.next_attempt_at
            for m in outbox(stack)
            if m.status in {s.value for s in CLAIMABLE} and m.hold_until is None
        ]
        if not waiting:
            break
        earliest = min(waiting)
        if earliest > now:
            if earliest - now > timedelta(minutes=15):
                break  # a long back-off: the running service sends it later
            ctx.clock.advance(earliest - now + timedelta(seconds=1))
    await stack.twilio_sim.asettle()
    return handled


# -- the demo's steps ----------------------------------------------------------------------------------


async def step_subscribe(ctx: ScenarioContext) -> str:
    await ctx.stack.run("subscriptions")
    subs = ctx.stack.bc_sim.subscriptions()
    return f"{len(subs)} BC webhook subscriptions created, each after the validation handshake"


async def step_baseline(ctx: ScenarioContext) -> str:
    before = _count(ctx.stack)
    read = await ctx.stack.run("poller")
    return f"poller read {read} records; {_count(ctx.stack) - before} payment receipts planned"


async def step_large_invoice(ctx: ScenarioContext) -> str:
    stack = ctx.stack
    customer = find_record(stack, US_COMPANY_ID, "customers", "number", "C00430")
    today = ctx.clock.now().date()
    invoice = stack.bc_sim.create_record(
        US_COMPANY_ID,
        "salesInvoices",
        {
            "id": str(uuid.uuid5(uuid.NAMESPACE_URL, "ml-connector/sandbox/PS-INV104500")),
            "number": "PS-INV104500",
            "customerId": customer["id"],
            "invoiceDate": (today - timedelta(days=27)).isoformat(),
            "postingDate": (today - timedelta(days=27)).isoformat(),
            "dueDate": (today + timedelta(days=3)).isoformat(),
            "totalAmountExcludingTax": 11682.24,
            "totalTaxAmount": 817.76,
            "totalAmountIncludingTax": 12500.0,
            "remainingAmount": 12500.0,
            "status": "Open",
        },
    )
    return f"invoice {invoice['number']} for 12,500.00 posted for {customer['displayName']}, due in 3 days"


async def step_sweep(ctx: ScenarioContext) -> str:
    from server.planning.sweep import Sweeper

    before = _count(ctx.stack)
    swept = await Sweeper(ctx.stack.services).sweep_now()
    return f"sweep evaluated {swept} open invoices; {_count(ctx.stack) - before} messages planned"


async def step_stop(ctx: ScenarioContext) -> str:
    status = await ctx.stack.twilio_sim.asend_inbound(STOP_SENDER, "STOP")
    ctx.facts["stop_webhook_status"] = status
    return f"{mask(STOP_SENDER)} texted STOP (the connector answered HTTP {status})"


async def step_failing_handset(ctx: ScenarioContext) -> str:
    ctx.stack.twilio_sim.set_number(FAILING_HANDSET, "failed", error_code=FAILING_CODE)
    return f"the carrier does not know {mask(FAILING_HANDSET)}: sends to it fail with {FAILING_CODE}"


async def step_rate_limit_burst(ctx: ScenarioContext) -> str:
    stack = ctx.stack
    # More 429s in a row than the Twilio client retries in-line (5 tries): the first message comes
    # back to the dispatcher, which pauses sending and requeues it with a jittered back-off (shown in
    # its timeline); drain_outbox moves the clock over the back-off. No Retry-After, so the real
    # waiting stays a few seconds of the client's own jittered retries.
    stack.twilio_sim.fail_next(RATE_LIMITED_SENDS, status=429)
    handled = await drain_outbox(ctx)
    refused = [r for r in stack.twilio_sim.requests() if r.status == 429]
    ctx.facts["rate_limited"] = len(refused)
    return f"Twilio answered 429 {len(refused)} times; {handled} messages handled after backing off"


async def step_bc_changes(ctx: ScenarioContext) -> str:
    stack = ctx.stack
    ctx.clock.advance(timedelta(minutes=10))
    tailspin = find_record(stack, GB_COMPANY_ID, "customers", "number", "C10080")
    stack.bc_sim.update_record(GB_COMPANY_ID, "customers", tailspin["id"], {"balanceDue": 10450.0})
    invoice = find_record(stack, GB_COMPANY_ID, "purchaseInvoices", "number", "PI108340")
    stack.bc_sim.update_record(GB_COMPANY_ID, "purchaseInvoices", invoice["id"], {"status": "Open"})
    order = find_record(stack, GB_COMPANY_ID, "purchaseOrders", "number", "PO106070")
    stack.bc_sim.update_record(
        GB_COMPANY_ID, "purchaseOrders", order["id"], {"totalAmountIncludingTax": 4500.0}
    )
    before = _count(stack)
    fetched = await deliver_bc_changes(ctx)
    polled = await stack.run("poller")
    planned = _count(stack) - before
    await drain_outbox(ctx)
    return (
        f"Tailspin Toys over its credit limit, PI108340 posted, PO106070 changed: "
        f"{fetched} notified + {polled} polled records, {planned} messages"
    )


async def step_otp_change(ctx: ScenarioContext) -> str:
    stack = ctx.stack
    vendor = find_record(stack, GB_COMPANY_ID, "vendors", "number", "V01050")
    account = next(
        r
        for r in stack.bc_sim.records(GB_COMPANY_ID, "vendorBankAccounts")
        if r.get("vendorId") == vendor["id"] and r.get("code") == "MAIN"
    )

    def as_person(name: str) -> httpx.AsyncClient:
        headers = {"Authorization": f"Bearer {DEMO_TOKENS[name]}"}
        return httpx.AsyncClient(base_url=stack.url, headers=headers, timeout=30)

    async with as_person(OTP_PROPOSER) as api, as_person(OTP_CONTROLLER) as approver:
        proposed = await api.post(
            "/api/changes",
            json={
                "entity": "vendorBankAccounts",
                "record_id": account["id"],
                "company_id": GB_COMPANY_ID,
                "changes": {"iban": NEW_IBAN},
                "approver": "finance-controller",
            },
        )
        if proposed.status_code != 201:
            ctx.facts["otp"] = f"propose failed: HTTP {proposed.status_code} {proposed.text[:200]}"
            return str(ctx.facts["otp"])
        change = proposed.json()
        code = stack.twilio_sim.verification_code(OTP_APPROVER)
        if code is None:
            ctx.facts["otp"] = "no verification code reached the approver"
            return str(ctx.facts["otp"])
        confirmed = await approver.post(f"/api/changes/{change['id']}/confirm", json={"code": code})
    outcome = confirmed.json().get("outcome") if confirmed.status_code == 200 else None
    written = stack.bc_sim.get_record(GB_COMPANY_ID, "vendorBankAccounts", account["id"]) or {}
    ctx.facts["otp"] = outcome
    ctx.facts["otp_written"] = outcome == "written" and written.get("iban") == NEW_IBAN
    return (
        f"change {change['id']} to {vendor['displayName']}'s IBAN: code sent to {mask(OTP_APPROVER)}, "
        f"confirmed -> {outcome}; BC now holds …{str(written.get('iban', ''))[-4:]}"
    )


async def step_week_later(ctx: ScenarioContext) -> str:
    from server.planning.sweep import Sweeper

    # 04:30 UTC a week later: late evening on the US west coast, night in New York and London, so
    # every reminder falls in its recipient's quiet hours (20:00-08:00 local) and is held.
    ctx.clock.advance(timedelta(days=7, hours=LATE_EVENING_HOURS))
    before = _count(ctx.stack)
    await Sweeper(ctx.stack.services).sweep_now()
    planned = _count(ctx.stack) - before
    await drain_outbox(ctx)
    held = [m for m in outbox(ctx.stack) if m.status == MessageStatus.HELD]
    ctx.facts["held"] = [m.job_id for m in held]
    return (
        f"{ctx.clock.now():%a %d %b %H:%M} UTC: the next sweep planned {planned} messages (next stages); "
        f"{len(held)} held in the recipients' quiet hours"
    )


async def step_next_morning(ctx: ScenarioContext) -> str:
    held = [m for m in outbox(ctx.stack) if m.job_id in set(ctx.facts.get("held", []))]
    if not held:
        return "nothing was held"
    opens = max(m.hold_until for m in held if m.hold_until is not None)
    ctx.clock.advance(max(opens - ctx.clock.now(), timedelta(0)) + timedelta(minutes=1))
    await drain_outbox(ctx)
    sent = [m for m in outbox(ctx.stack) if m.job_id in set(ctx.facts["held"]) and m.twilio_sid]
    return f"{ctx.clock.now():%a %H:%M} UTC: the last window opened; {len(sent)} held message(s) sent"


async def step_settle(ctx: ScenarioContext) -> str:
    await drain_outbox(ctx)
    return "Twilio callbacks settled"


DEMO: tuple[Step, ...] = (
    Step("subscribe", "BC webhook subscriptions", step_subscribe),
    Step("baseline", "Baseline poll", step_baseline),
    Step("large-invoice", "A large invoice is posted", step_large_invoice),
    Step("sweep", "Daily sweep", step_sweep),
    Step("stop", "A customer replies STOP", step_stop),
    Step("failing-handset", "A handset that cannot be reached", step_failing_handset),
    Step("rate-limit", "Sending through a 429 burst", step_rate_limit_burst),
    Step("bc-changes", "Changes in Business Central", step_bc_changes),
    Step("otp-change", "Bank details change approved by OTP", step_otp_change),
    Step("week-later", "A week later, at night for every recipient", step_week_later),
    Step("next-morning", "The next morning", step_next_morning),
    Step("settle", "Final delivery reports", step_settle),
)

SCENARIOS: dict[str, tuple[Step, ...]] = {"demo": DEMO}


# -- the report ----------------------------------------------------------------------------------------


_ARRIVED = frozenset(
    {MessageStatus.QUEUED, MessageStatus.SENDING, MessageStatus.SENT, MessageStatus.DELIVERED}
)


def _note(m: OutboxMessage, title: str | None, limit: int = 48) -> str:
    if not m.error_code or m.status in _ARRIVED:
        return ""  # a delivered message may still carry the 20429 of an earlier, retried try
    text = title or (m.error_message or "").split(":")[-1].strip()
    text = f"{m.error_code} {text}".strip()
    return text if len(text) <= limit else text[: limit - 1].rstrip() + "…"


def _stage(dedupe_key: str) -> str:
    for part in dedupe_key.replace(":", ",").split(","):
        name, _, value = part.strip().partition("=")
        if name == "stage":
            return value
    return ""


def _held_jobs(stack: Stack) -> set[str]:
    with read_scope(stack.services.db) as session:
        return jobs_with_status_event(session, MessageStatus.HELD)


def message_lines(stack: Stack) -> list[MessageLine]:
    lines = []
    rows = outbox(stack)
    held = _held_jobs(stack)
    position = {m.job_id: index for index, m in enumerate(rows, start=1)}
    for m in rows:
        meaning = meaning_of(m.error_code)
        note = _note(m, meaning.title if meaning else None)
        if m.group_job_id:
            note = f"in grouped text #{position.get(m.group_job_id, '?')}"
        elif m.status == MessageStatus.SKIPPED and not note:
            note = (m.error_message or m.reason or "")[:48]
        elif m.job_id in held and m.twilio_sid:
            note = "held for the recipient's quiet hours, then sent"
        lines.append(
            MessageLine(
                job_id=m.job_id,
                rule_id=m.rule_id,
                record=m.record_number or m.record_id or "—",
                recipient=mask(m.recipient) if m.recipient else "—",
                channel=m.channel,
                status=m.status,
                error_code=m.error_code,
                error_title=meaning.title if meaning else None,
                note=note,
                created_at=m.created_at,
                stage=_stage(m.dedupe_key),
                held=m.job_id in held,
                group_job_id=m.group_job_id,
            )
        )
    return lines


def _requeued_for_429(stack: Stack) -> int:
    with read_scope(stack.services.db) as session:
        return count_events_with_error(session, ["20429", "429"])


def _sent_once(stack: Stack) -> bool:
    """Twilio accepted exactly one message per outbox row that holds a Messages SID."""
    accepted = [
        r
        for r in stack.twilio_sim.requests(path_contains="/Messages.json")
        if r.method == "POST" and r.status == 201
    ]
    with_sid = [m for m in outbox(stack) if m.channel == "sms" and m.twilio_sid]
    return len(accepted) == len(with_sid) == len({m.twilio_sid for m in with_sid})


def _ladder_climbed(lines: list[MessageLine]) -> bool:
    stages: dict[str, set[str]] = {}
    for line in lines:
        if line.stage and line.rule_id == "invoice-overdue" and line.status in _ARRIVED:
            stages.setdefault(line.record, set()).add(line.stage)
    return any(len(seen) >= 2 for seen in stages.values())


def build_report(ctx: ScenarioContext, name: str, steps: list[tuple[str, str]]) -> ScenarioReport:
    stack = ctx.stack
    lines = message_lines(stack)
    rules = sorted(rule.id for rule in stack.services.ruleset)
    fired: dict[str, int] = {}
    for line in lines:
        fired[line.rule_id] = fired.get(line.rule_id, 0) + 1
    statuses = {(line.recipient, line.status, line.error_code) for line in lines}
    checks = {
        "every shipped rule fired": all(fired.get(r) for r in rules),
        "STOP honoured (a later message recorded as opted out)": any(
            status == MessageStatus.OPTED_OUT for _, status, _ in statuses
        ),
        "429 burst absorbed (requeued with back-off, each message sent once)": ctx.facts.get(
            "rate_limited", 0
        )
        > 0
        and _requeued_for_429(stack) > 0
        and _sent_once(stack),
        f"one send failed with Twilio {FAILING_CODE}": any(
            status == MessageStatus.FAILED and code == str(FAILING_CODE) for _, status, code in statuses
        ),
        "OTP change approved and written to BC": bool(ctx.facts.get("otp_written")),
        "a ladder: one invoice reminded at two stages": _ladder_climbed(lines),
        "a grouped reminder (several invoices, one text)": any(line.group_job_id for line in lines),
        "a held message sent when the recipient's window opened": any(
            line.held and line.status in _ARRIVED for line in lines
        ),
    }
    return ScenarioReport(scenario=name, steps=steps, messages=lines, rules=rules, fired=fired, checks=checks)


async def run_scenario(
    stack: Stack, name: str = "demo", *, clock: AdvancingClock | None = None, say: Say | None = None
) -> ScenarioReport:
    if name not in SCENARIOS:
        raise KeyError(f"unknown scenario {name!r}; known: {', '.join(sorted(SCENARIOS))}")
    advancing = clock or stack.clock
    if not hasattr(advancing, "advance"):
        raise TypeError("the scenario moves the clock: give the Stack a ManualClock or OffsetClock")
    ctx = ScenarioContext(stack=stack, clock=advancing, say=say or (lambda _text: None))  # type: ignore[arg-type]
    done: list[tuple[str, str]] = []
    for index, step in enumerate(SCENARIOS[name], start=1):
        outcome = await step.run(ctx)
        done.append((step.title, outcome))
        ctx.say(f"{index:>2}. {step.title}: {outcome}")
    return build_report(ctx, name, done)
