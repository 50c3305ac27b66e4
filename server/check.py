"""`ml-connector check`: ping BC and Twilio with the configured credentials, say what to fix.

BC: a token from Entra, the companies (and that the configured ones exist), then one `$top=1` read
of every entity set the rules need in each company (plus the custom bank-account page when the
change gate is configured for it). Twilio: the Account resource (proves SID + key), its status, the
sender and the Verify service SID. A From number is looked up in the account's IncomingPhoneNumbers
(owned?) and its capabilities are compared with the channels the enabled rules use (SMS, voice);
a Messaging Service SID is checked by format only (the reference does not cover the Messaging
Services API), and calls always need the From number (the dispatcher never calls via a service).
Each result carries the fix an operator can act on. Messages never contain a secret: errors are
built from codes and URLs without credentials, and the service's redaction covers the rest.
"""

from __future__ import annotations

import re
from collections.abc import Collection, Iterable
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

from server.settings import Settings

if TYPE_CHECKING:
    from server.twilio.client import TwilioClient

BC_PERMISSION_FIX = (
    "register the Entra app in BC on the 'Microsoft Entra applications' page with permission sets "
    "(SUPER is not allowed), and grant it the API.ReadWrite.All application permission"
)
BC_CREDENTIALS_FIX = "check tenant id, client id and client secret: ml-connector credentials set bc"
TWILIO_CREDENTIALS_FIX = "check the account SID and API key SID/secret: ml-connector credentials set twilio"
TWILIO_UNREACHABLE_FIX = "cannot reach Twilio: check MLC_TWILIO__API_BASE_URL and the network"
FROM_NUMBER_SETTING = "MLC_TWILIO__FROM_NUMBER"
_MESSAGING_SERVICE = re.compile(r"^MG[0-9a-fA-F]{32}$")
_VERIFY_SERVICE = re.compile(r"^VA[0-9a-fA-F]{32}$")


@dataclass(frozen=True)
class CheckResult:
    system: str
    name: str
    ok: bool
    detail: str
    fix: str = ""


@dataclass(frozen=True)
class RuleNeeds:
    """What the enabled rules need from the two systems."""

    entities: list[str]
    channels: frozenset[str]


def rule_needs(settings: Settings) -> tuple[RuleNeeds, CheckResult | None]:
    """Entity sets the enabled rules read and the channels they send on, or a failed check when the
    rule set does not load (then SMS is assumed, the channel every rule set has)."""
    from engine.loader import RuleSetError, load_ruleset

    try:
        ruleset = load_ruleset(
            settings.rules_dir, settings.templates_dir, default_region=settings.default_region
        )
    except RuleSetError as exc:
        return RuleNeeds([], frozenset({"sms"})), CheckResult(
            "Rules",
            "rule set",
            False,
            f"{len(exc.diagnostics)} problem(s) in {settings.rules_dir}",
            f"ml-connector rules lint {settings.rules_dir}",
        )
    events = ("created", "updated", "deleted", "sweep", "poll")
    channels = {
        channel
        for rule in ruleset
        if rule.enabled
        for channel in (rule.channel, *(stage.channel for stage in rule.stages))
    }
    return RuleNeeds(sorted(ruleset.entities(events)), frozenset(channels)), None


async def check_bc(settings: Settings, entities: Iterable[str]) -> list[CheckResult]:
    from server.bc.auth import TokenProvider
    from server.bc.client import BCClient
    from server.bc.entities import EntitySet, custom_page
    from server.bc.errors import (
        AuthenticationError,
        AuthorizationError,
        BCError,
        NotFoundError,
        TransportError,
    )
    from server.bc.models import ENTITY_MODELS, BCRecord
    from server.bc.settings import BCConfig
    from server.runtime.retry import BC_RETRY

    results: list[CheckResult] = []
    try:
        # A check should answer quickly: two tries, short waits.
        config = BCConfig.from_settings(settings.bc)
        config = replace(config, retry=replace(BC_RETRY, max_attempts=2, max_delay=2.0))
    except ValueError as exc:
        return [CheckResult("BC", "settings", False, str(exc), "ml-connector credentials set bc")]
    tokens = TokenProvider(config)
    async with BCClient(config, tokens=tokens) as client:
        try:
            await tokens.token()
        except AuthenticationError as exc:
            tokens.close()
            return [CheckResult("BC", "token", False, exc.message, BC_CREDENTIALS_FIX)]
        except TransportError as exc:
            tokens.close()
            return [
                CheckResult(
                    "BC",
                    "token",
                    False,
                    exc.message,
                    f"cannot reach {config.authority_host}: check MLC_BC__AUTHORITY_HOST and the network",
                )
            ]
        results.append(CheckResult("BC", "token", True, f"app-only token from {config.authority}"))
        try:
            companies = await client.list_companies()
        except AuthorizationError as exc:
            tokens.close()
            return [*results, CheckResult("BC", "companies", False, exc.message, BC_PERMISSION_FIX)]
        except BCError as exc:
            tokens.close()
            return [
                *results,
                CheckResult(
                    "BC",
                    "companies",
                    False,
                    str(exc),
                    "check MLC_BC__API_BASE_URL and MLC_BC__ENVIRONMENT (sandbox or production name)",
                ),
            ]
        found = {(c.id or "").lower(): c for c in companies}
        names = ", ".join(sorted(c.name or c.displayName or c.id or "?" for c in companies))
        results.append(CheckResult("BC", "companies", True, f"{len(companies)}: {names}"))
        wanted = [c.lower() for c in settings.bc.companies] or sorted(found)
        present = [c for c in wanted if c in found]
        for missing in sorted(set(wanted) - set(found)):
            results.append(
                CheckResult(
                    "BC",
                    f"company {missing}",
                    False,
                    "not in this environment",
                    f"use one of: {', '.join(sorted(found))} (ml-connector credentials set bc --companies)",
                )
            )
        targets: list[tuple[str, EntitySet[Any], str]] = [
            (name, EntitySet(name, ENTITY_MODELS.get(name, BCRecord)), "a standard v2.0 entity set")
            for name in entities
        ]
        page = settings.changes
        if page.bank_page_publisher and page.bank_page_group:
            try:
                bank = custom_page(
                    page.bank_page_publisher,
                    page.bank_page_group,
                    page.bank_page_version,
                    page.bank_page_entity_set,
                )
                targets.append((f"{bank.api}/{bank.path}", bank, "the custom API page of the BC extension"))
            except ValueError as exc:
                results.append(
                    CheckResult("BC", "bank page", False, str(exc), "fix MLC_CHANGES__BANK_PAGE_*")
                )
        for company in present:
            label = found[company].name or company
            for name, entity_set, what in targets:
                try:
                    async for _ in client.iter_records(entity_set, company, top=1):
                        break
                except NotFoundError:
                    fix = (
                        "publish the extension's API page or correct MLC_CHANGES__BANK_PAGE_*"
                        if "custom" in what
                        else f"{name} is {what}: check the rule's trigger.entity"
                    )
                    results.append(CheckResult("BC", f"{label}: {name}", False, "not found (404)", fix))
                except AuthorizationError as exc:
                    results.append(
                        CheckResult("BC", f"{label}: {name}", False, exc.message, BC_PERMISSION_FIX)
                    )
                except BCError as exc:
                    results.append(
                        CheckResult("BC", f"{label}: {name}", False, str(exc), "try again; see BC status")
                    )
                else:
                    results.append(CheckResult("BC", f"{label}: {name}", True, "readable"))
    tokens.close()
    return results


async def check_twilio(settings: Settings, channels: Collection[str] = ("sms",)) -> list[CheckResult]:
    """`channels`: what the enabled rules send on; a voice channel needs a voice-capable From number."""
    from server.runtime.retry import TWILIO_RETRY
    from server.twilio.client import TwilioClient, TwilioClientConfig
    from server.twilio.errors import ConfigurationError, DeliveryError, NotFoundError

    tw = settings.twilio
    try:
        config = TwilioClientConfig.from_settings(
            tw, retry=replace(TWILIO_RETRY, max_attempts=2, max_delay=2.0)
        )
        client = TwilioClient(config)
    except ValueError as exc:
        return [CheckResult("Twilio", "settings", False, str(exc).splitlines()[0], TWILIO_CREDENTIALS_FIX)]
    results: list[CheckResult] = []
    async with client:
        try:
            account = await client.fetch_account()
        except (ConfigurationError, NotFoundError) as exc:
            return [CheckResult("Twilio", "account", False, exc.message, TWILIO_CREDENTIALS_FIX)]
        except DeliveryError as exc:
            return [CheckResult("Twilio", "account", False, str(exc), TWILIO_UNREACHABLE_FIX)]
        results.append(CheckResult("Twilio", "account", True, f"{account.friendly_name or account.sid}"))
        active = account.status in (None, "active")
        results.append(
            CheckResult(
                "Twilio",
                "account status",
                active,
                account.status or "active",
                "" if active else "the account is not active: reactivate it in the Twilio console",
            )
        )
        results.extend(await _check_senders(client, settings, channels))
    verify_ok = bool(_VERIFY_SERVICE.match(tw.verify_service_sid))
    results.append(
        CheckResult(
            "Twilio",
            "Verify service",
            verify_ok,
            tw.verify_service_sid
            if verify_ok
            else "no Verify service SID (VA + 32 hex): OTP changes cannot start",
            "" if verify_ok else "ml-connector credentials set twilio --verify-service-sid VA...",
        )
    )
    return results


async def _check_senders(
    client: TwilioClient, settings: Settings, channels: Collection[str]
) -> list[CheckResult]:
    """The senders as the dispatcher uses them: SMS from the From number when there is one, else via
    the Messaging Service; calls only from the From number."""
    from engine.errors import PhoneError
    from engine.phones import to_e164
    from server.twilio.errors import ConfigurationError, DeliveryError

    tw = settings.twilio
    voice = "voice" in channels
    if not tw.from_number:
        if not tw.messaging_service_sid:
            return [
                CheckResult(
                    "Twilio",
                    "sender",
                    False,
                    "no sender configured",
                    "ml-connector credentials set twilio --from-number +E164 (or --messaging-service-sid MG...)",
                )
            ]
        results = [_messaging_service_result(tw.messaging_service_sid)]
        if voice:
            results.append(
                CheckResult(
                    "Twilio",
                    "voice sender",
                    False,
                    "rules send voice calls, which need a From number (a Messaging Service cannot call)",
                    f"{FROM_NUMBER_SETTING}: a voice-capable number of the account "
                    "(ml-connector credentials set twilio --from-number +E164)",
                )
            )
        return results

    try:
        number = to_e164(tw.from_number, None).number
    except PhoneError as exc:
        return [
            CheckResult(
                "Twilio",
                "sender",
                False,
                exc.reason,
                f"set {FROM_NUMBER_SETTING} to a number of the account in E.164 (+447700900123)",
            )
        ]
    try:
        owned = await client.find_incoming_number(number)
    except ConfigurationError as exc:
        # The account fetch passed with these credentials, so the key may not read phone numbers.
        return [
            CheckResult(
                "Twilio",
                "sender",
                False,
                f"cannot list the account's phone numbers: {exc.message}",
                "allow the API key to read the account's phone numbers (IncomingPhoneNumbers)",
            )
        ]
    except DeliveryError as exc:
        return [CheckResult("Twilio", "sender", False, str(exc), TWILIO_UNREACHABLE_FIX)]
    if owned is None:
        return [
            CheckResult(
                "Twilio",
                "sender",
                False,
                f"{number} ({FROM_NUMBER_SETTING}) is not a phone number of account {tw.account_sid}",
                f"set {FROM_NUMBER_SETTING} to one of the account's numbers (Twilio console: Phone "
                "Numbers > Active numbers): ml-connector credentials set twilio --from-number +E164",
            )
        ]
    caps = owned.capabilities
    results = [CheckResult("Twilio", "sender", True, f"{number} is a number of the account ({owned.sid})")]
    if "sms" in channels:
        results.append(
            CheckResult(
                "Twilio",
                "SMS sender",
                caps.sms,
                f"{number} can send SMS" if caps.sms else f"{number} has no SMS capability",
                "" if caps.sms else f"set {FROM_NUMBER_SETTING} to an SMS-capable number of the account",
            )
        )
    if voice:
        results.append(
            CheckResult(
                "Twilio",
                "voice sender",
                caps.voice,
                f"{number} can place calls (rules send voice)"
                if caps.voice
                else f"{number} has no voice capability; rules send voice calls",
                "" if caps.voice else f"set {FROM_NUMBER_SETTING} to a voice-capable number of the account",
            )
        )
    if tw.messaging_service_sid:
        # The dispatcher sends from the From number when one is set; say so rather than check it.
        results.append(
            CheckResult(
                "Twilio",
                "Messaging Service",
                True,
                f"{tw.messaging_service_sid} is not used: SMS go from {FROM_NUMBER_SETTING}",
            )
        )
    return results


def _messaging_service_result(sid: str) -> CheckResult:
    ok = bool(_MESSAGING_SERVICE.match(sid))
    return CheckResult(
        "Twilio",
        "sender",
        ok,
        # Format only: the reference covers no Messaging Services API to look the service up with.
        f"Messaging Service {sid} (SID format only; the service is not looked up)"
        if ok
        else "not a Messaging Service SID (MG + 32 hex)",
        "" if ok else "set MLC_TWILIO__MESSAGING_SERVICE_SID to the MG... SID from the console",
    )


async def run_checks(settings: Settings) -> list[CheckResult]:
    needs, rules_problem = rule_needs(settings)
    results = [rules_problem] if rules_problem else []
    results.extend(await check_bc(settings, needs.entities))
    results.extend(await check_twilio(settings, needs.channels))
    return results


def render(results: list[CheckResult], console: Any) -> None:
    from rich.table import Table

    table = Table(title="ml-connector check", show_lines=False)
    for column in ("", "System", "Check", "Result", "Fix"):
        table.add_column(column, overflow="fold")
    for result in results:
        mark = "[green]PASS[/]" if result.ok else "[red]FAIL[/]"
        table.add_row(mark, result.system, result.name, result.detail, result.fix)
    console.print(table)
    failed = sum(not r.ok for r in results)
    if failed:
        console.print(f"[red]{failed} check(s) failed[/] of {len(results)}")
    else:
        console.print(f"[green]all {len(results)} checks passed[/]")
