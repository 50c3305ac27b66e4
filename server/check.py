"""`ml-connector check`: ping BC and Twilio with the configured credentials, say what to fix.

BC: a token from Entra, the companies (and that the configured ones exist), then one `$top=1` read
of every entity set the rules need in each company (plus the custom bank-account page when the
change gate is configured for it). Twilio: the Account resource (proves SID + key), its status, the
sender (a valid E.164 number or a Messaging Service SID) and the Verify service SID.
Each result carries the fix an operator can act on. Messages never contain a secret: errors are
built from codes and URLs without credentials, and the service's redaction covers the rest.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, replace
from typing import Any

from server.settings import Settings

BC_PERMISSION_FIX = (
    "register the Entra app in BC on the 'Microsoft Entra applications' page with permission sets "
    "(SUPER is not allowed), and grant it the API.ReadWrite.All application permission"
)
BC_CREDENTIALS_FIX = "check tenant id, client id and client secret: ml-connector credentials set bc"
TWILIO_CREDENTIALS_FIX = "check the account SID and API key SID/secret: ml-connector credentials set twilio"
_MESSAGING_SERVICE = re.compile(r"^MG[0-9a-fA-F]{32}$")
_VERIFY_SERVICE = re.compile(r"^VA[0-9a-fA-F]{32}$")


@dataclass(frozen=True)
class CheckResult:
    system: str
    name: str
    ok: bool
    detail: str
    fix: str = ""


def rule_entities(settings: Settings) -> tuple[list[str], CheckResult | None]:
    """Entity sets the enabled rules read, or a failed check when the rule set does not load."""
    from engine.loader import RuleSetError, load_ruleset

    try:
        ruleset = load_ruleset(
            settings.rules_dir, settings.templates_dir, default_region=settings.default_region
        )
    except RuleSetError as exc:
        return [], CheckResult(
            "Rules",
            "rule set",
            False,
            f"{len(exc.diagnostics)} problem(s) in {settings.rules_dir}",
            f"ml-connector rules lint {settings.rules_dir}",
        )
    events = ("created", "updated", "deleted", "sweep", "poll")
    return sorted(ruleset.entities(events)), None


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
    from server.bc.settings import BCConfig, RetryPolicy

    results: list[CheckResult] = []
    try:
        # A check should answer quickly: two tries, short waits.
        config = BCConfig.from_settings(settings.bc)
        config = replace(config, retry=RetryPolicy(max_attempts=2, max_delay=2.0))
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


async def check_twilio(settings: Settings) -> list[CheckResult]:
    from engine.errors import PhoneError
    from engine.phones import to_e164
    from server.twilio.client import RetryPolicy, TwilioClient, TwilioClientConfig
    from server.twilio.errors import ConfigurationError, DeliveryError, NotFoundError

    tw = settings.twilio
    try:
        config = TwilioClientConfig.from_settings(tw, retry=RetryPolicy(max_attempts=2, max_delay=2.0))
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
            return [
                CheckResult(
                    "Twilio",
                    "account",
                    False,
                    str(exc),
                    "cannot reach Twilio: check MLC_TWILIO__API_BASE_URL and the network",
                )
            ]
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
    if tw.messaging_service_sid:
        ok = bool(_MESSAGING_SERVICE.match(tw.messaging_service_sid))
        results.append(
            CheckResult(
                "Twilio",
                "sender",
                ok,
                f"Messaging Service {tw.messaging_service_sid}"
                if ok
                else "not a Messaging Service SID (MG + 32 hex)",
                "" if ok else "set MLC_TWILIO__MESSAGING_SERVICE_SID to the MG... SID from the console",
            )
        )
    elif tw.from_number:
        try:
            number = to_e164(tw.from_number, None)
        except PhoneError as exc:
            results.append(
                CheckResult(
                    "Twilio",
                    "sender",
                    False,
                    exc.reason,
                    "set MLC_TWILIO__FROM_NUMBER to a number of the account in E.164 (+447700900123)",
                )
            )
        else:
            results.append(CheckResult("Twilio", "sender", True, f"from {number.number}"))
    else:
        results.append(
            CheckResult(
                "Twilio",
                "sender",
                False,
                "no sender configured",
                "ml-connector credentials set twilio --from-number +E164 (or --messaging-service-sid MG...)",
            )
        )
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


async def run_checks(settings: Settings) -> list[CheckResult]:
    entities, rules_problem = rule_entities(settings)
    results = [rules_problem] if rules_problem else []
    results.extend(await check_bc(settings, entities))
    results.extend(await check_twilio(settings))
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
