"""What the OTP gate accepts: the sensitive fields each entity may change, their validators, the
proposal a finance user sends, and the errors the API maps to HTTP answers.

Vendor bank details go through a custom API page a BC extension publishes: standard API v2.0 has no
vendor bank entity (https://learn.microsoft.com/en-us/dynamics365/business-central/dev-itpro/api-reference/v2.0/).
Field lengths are those of BC's table fields (table 23 "Vendor", table 18 "Customer", table 288
"Vendor Bank Account").
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from server.bc.entities import CUSTOMERS, VENDORS, EntitySet, check_guid, custom_page
from server.settings import Settings

Channel = Literal["sms", "call"]
BANK_ENTITY = "vendorBankAccounts"


# -- errors -----------------------------------------------------------------------------------------


class ChangeError(Exception):
    """Base of the errors the API maps to HTTP answers."""


class ChangeInputError(ChangeError):
    """Bad input, named by field (API 400)."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field


class ChangeNotFoundError(ChangeError):
    """No pending change with this id (API 404)."""


class ChangeStateError(ChangeError):
    """The change is not in a state that allows this step (API 409)."""


class ChangeConfigError(ChangeError):
    """The service cannot keep a change safely (no encryption key): an operator must fix settings."""


class UpstreamError(ChangeError):
    """BC or Twilio could not be reached or refused for a reason on their side (API 503)."""


class ChangeForbiddenError(ChangeError):
    """This identity may not take this step: the proposer approving, the service token (API 403)."""


class ChangeLimitError(ChangeError):
    """Over a proposal limit (API 429 with Retry-After)."""

    def __init__(self, field: str, message: str, *, limit: str, retry_after: int) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.limit = limit
        self.retry_after = retry_after


# -- the sensitive-field allow-list (a registry: data, not code paths) -------------------------------


def _iban(value: str) -> str:
    text = value.replace(" ", "").upper()
    if not re.fullmatch(r"[A-Z]{2}[0-9]{2}[A-Z0-9]{11,30}", text):
        raise ValueError("not an IBAN (two letters, two check digits, 11-30 letters or digits)")
    digits = "".join(str(int(ch, 36)) for ch in text[4:] + text[:4])
    if int(digits) % 97 != 1:
        raise ValueError("IBAN check digits do not match (mod 97); a digit is probably mistyped")
    return text


def _swift(value: str) -> str:
    text = value.replace(" ", "").upper()
    if not re.fullmatch(r"[A-Z]{4}[A-Z]{2}[A-Z0-9]{2}([A-Z0-9]{3})?", text):
        raise ValueError("not a SWIFT/BIC code (8 or 11 characters, e.g. NWBKGB2L)")
    return text


def _email(value: str) -> str:
    text = value.strip()
    if not re.fullmatch(r"[^@\s]+@[^@\s]+\.[^@\s]+", text):
        raise ValueError("not an email address")
    return text


def _text(value: str) -> str:
    return value.strip()


@dataclass(frozen=True)
class FieldRule:
    """One writable field: BC's maximum length (its table field size) and a normaliser/validator."""

    max_length: int
    normalise: Callable[[str], str] = _text


_CONTACT_AND_ADDRESS: dict[str, FieldRule] = {
    "addressLine1": FieldRule(100),
    "addressLine2": FieldRule(50),
    "city": FieldRule(30),
    "state": FieldRule(30),
    "country": FieldRule(10),
    "postalCode": FieldRule(20),
    "phoneNumber": FieldRule(30),
    "email": FieldRule(80, _email),
}

# Which fields each entity accepts through the OTP gate. Anything else is refused by name.
SENSITIVE_FIELDS: dict[str, dict[str, FieldRule]] = {
    "vendors": dict(_CONTACT_AND_ADDRESS),
    "customers": dict(_CONTACT_AND_ADDRESS),
    BANK_ENTITY: {
        "name": FieldRule(100),
        "bankAccountNumber": FieldRule(30),
        "bankBranchNumber": FieldRule(20),
        "iban": FieldRule(50, _iban),
        "swiftCode": FieldRule(20, _swift),
        "currencyCode": FieldRule(10),
    },
}


def mask_value(value: Any) -> str:
    """A value for the audit log and logs: its last four characters only."""
    text = str(value)
    return "****" if len(text) <= 4 else "*" * min(len(text) - 4, 8) + text[-4:]


def mask_phone(number: str) -> str:
    from engine.phones import mask

    return mask(number)


# -- input ------------------------------------------------------------------------------------------


class ChangeRequest(BaseModel):
    """What a finance user proposes (the body of POST /api/changes)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    entity: str = Field(description="vendors, customers or vendorBankAccounts (the custom API page)")
    record_id: str = Field(description="The BC record's id (GUID)")
    company_id: str | None = Field(default=None, description="Needed when several companies are configured")
    changes: dict[str, str] = Field(description="Field -> new value; only the entity's sensitive fields")
    approver: str = Field(
        max_length=128,
        description="A role from MLC_CHANGES__APPROVER_ROLES; the code goes to one of its members who is "
        "not the proposer. Never a phone number. (Who proposes is the bearer token's identity.)",
    )
    channel: Channel | None = Field(default=None, description="How the code is sent: sms or call")


@dataclass(frozen=True)
class ValidatedChange:
    entity: str
    entity_set: EntitySet[Any]
    company_id: str
    record_id: str
    changes: dict[str, str]
    approver_role: str
    candidates: tuple[tuple[str, str], ...]  # (identity, E.164 phone): the role's members but the proposer
    channel: Channel
    requested_by: str  # the proposer's identity (from the bearer token)


def entity_set_for(settings: Settings, entity: str) -> EntitySet[Any]:
    if entity == "vendors":
        return VENDORS
    if entity == "customers":
        return CUSTOMERS
    if entity == BANK_ENTITY:
        page = settings.changes
        if not (page.bank_page_publisher and page.bank_page_group and page.bank_page_version):
            raise ChangeInputError(
                "entity",
                "vendor bank details need the custom API page a BC extension publishes (standard API v2.0 "
                "has none): set MLC_CHANGES__BANK_PAGE_PUBLISHER, _GROUP, _VERSION and _ENTITY_SET",
            )
        try:
            return custom_page(
                page.bank_page_publisher,
                page.bank_page_group,
                page.bank_page_version,
                page.bank_page_entity_set,
            )
        except ValueError as exc:
            raise ChangeInputError("entity", f"custom API page settings: {exc}") from exc
    raise ChangeInputError(
        "entity", f"unknown entity {entity!r}; expected one of {', '.join(sorted(SENSITIVE_FIELDS))}"
    )


_NUMBER_LIKE = re.compile(r"^[+(]?[0-9][0-9 ()+./-]*$")


def approver_candidates(settings: Settings, approver: str, proposer: str) -> tuple[tuple[str, str], ...]:
    """The members of the role `approver` who may approve a change `proposer` proposes: everyone in
    it but the proposer, in the configured order. A phone number is never accepted: whoever could name
    a number could name their own, and approve their own change."""
    text = approver.strip()
    roles = settings.changes.approver_roles
    known = ", ".join(sorted(roles)) or "none configured"
    if text not in roles:
        if _NUMBER_LIKE.fullmatch(text):
            raise ChangeInputError(
                "approver",
                f"a phone number is not accepted; name an approver role (roles: {known}; "
                "MLC_CHANGES__APPROVER_ROLES)",
            )
        raise ChangeInputError(
            "approver",
            f"{text!r} is not a configured approver role (roles: {known}; MLC_CHANGES__APPROVER_ROLES)",
        )
    candidates = tuple((who, phone) for who, phone in roles[text].items() if who != proposer)
    if not candidates:
        raise ChangeStateError(
            f"approver: role {text!r} has no member other than {proposer}, who proposes; "
            "the proposer never approves their own change"
        )
    return candidates


def approver_identity(settings: Settings, role: str | None, phone: str) -> str | None:
    """Who a stored change's code went to: the member of its role with its number (numbers are unique
    per identity, see settings.approver_members). None when no configured member has it any more."""
    members = settings.changes.approver_roles.get(role or "", {})
    return next((who for who, number in members.items() if number == phone), None)


def validate_request(settings: Settings, request: ChangeRequest, proposer: str) -> ValidatedChange:
    """Every check that needs no network, each error naming its field. `proposer` is the identity of
    the bearer token that proposes."""
    entity_set = entity_set_for(settings, request.entity)
    allowed = SENSITIVE_FIELDS[request.entity]
    try:
        record_id = check_guid(request.record_id, "record_id")
    except ValueError as exc:
        raise ChangeInputError("record_id", "not a GUID") from exc
    companies = [c.lower() for c in settings.bc.companies]
    if request.company_id is None:
        if len(companies) != 1:
            raise ChangeInputError(
                "company_id", "required when more or fewer than one company is configured (MLC_BC__COMPANIES)"
            )
        company_id = companies[0]
    else:
        try:
            company_id = check_guid(request.company_id, "company_id")
        except ValueError as exc:
            raise ChangeInputError("company_id", "not a GUID") from exc
        if companies and company_id not in companies:
            raise ChangeInputError("company_id", "not one of the configured companies (MLC_BC__COMPANIES)")
    if not request.changes:
        raise ChangeInputError("changes", "give at least one field to change")
    changes: dict[str, str] = {}
    for name, value in request.changes.items():
        rule = allowed.get(name)
        if rule is None:
            raise ChangeInputError(
                f"changes.{name}",
                f"not a sensitive field of {request.entity} that this gate writes; allowed: {', '.join(sorted(allowed))}",
            )
        try:
            normalised = rule.normalise(value)
        except ValueError as exc:
            raise ChangeInputError(f"changes.{name}", str(exc)) from exc
        if len(normalised) > rule.max_length:
            raise ChangeInputError(
                f"changes.{name}", f"{len(normalised)} characters; BC allows at most {rule.max_length}"
            )
        changes[name] = normalised
    candidates = approver_candidates(settings, request.approver, proposer)
    return ValidatedChange(
        entity=request.entity,
        entity_set=entity_set,
        company_id=company_id,
        record_id=record_id,
        changes=changes,
        approver_role=request.approver.strip(),
        candidates=candidates,
        channel=request.channel or settings.changes.default_channel,
        requested_by=proposer,
    )
