"""The BC simulator's memory: companies, records, tokens, subscriptions, pending notifications,
faults and the request log. Thread-safe (one lock): the HTTP server thread and the test or sandbox
thread both act on it. Time comes from the injected clock only.

BC docs pages are cited by their path under
https://learn.microsoft.com/dynamics365/business-central/dev-itpro/.
"""

from __future__ import annotations

import base64
import copy
import re
import secrets
import threading
import uuid
from collections import deque
from dataclasses import asdict, dataclass, field
from datetime import datetime, timedelta
from typing import Any, Literal
from urllib.parse import quote, urlsplit

from simulators.bc.catalog import COMPANY_FIELDS, ENTITIES, NULL_GUID, EntityKind
from simulators.bc.wire import format_bc_datetime
from simulators.clock import Clock

MAX_SUBSCRIPTIONS = 200  # per environment (operational-limits-online.md)
SUBSCRIPTION_LIFETIME = timedelta(days=3)
DELIVERY_GIVE_UP = timedelta(hours=36)  # BC retries unreachable subscribers over 36 hours
_RESOURCE = re.compile(r"^(?:v2\.0/[^/]+/[^/]+/)?api/v2\.0/companies\(([0-9a-fA-F-]{36})\)/([A-Za-z]+)$")


class SimError(Exception):
    """An error the simulator answers with an OData error body."""

    def __init__(self, status: int, code: str, message: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.headers = headers or {}


@dataclass
class Fault:
    """An injected failure for API requests that match (method, path substring), `remaining` times."""

    kind: Literal["status", "delay"] = "status"
    status: int = 503
    code: str = ""
    message: str = ""
    retry_after: float | None = None
    delay_seconds: float = 0.0
    remaining: int | None = 1  # None: until cleared
    method: str | None = None
    path_contains: str | None = None

    def matches(self, method: str, path: str) -> bool:
        if self.method and self.method.upper() != method.upper():
            return False
        return not (self.path_contains and self.path_contains not in path)


@dataclass
class Change:
    change_type: str
    record_id: str
    last_modified: datetime


@dataclass
class Window:
    first_change_at: datetime
    changes: dict[str, Change] = field(default_factory=dict)


@dataclass
class Delivery:
    url: str
    items: list[dict[str, Any]]
    subscription_ids: set[str]
    next_attempt_at: datetime
    first_attempt_at: datetime | None = None
    attempts: int = 0


def _merge(previous: str, new: str) -> str:
    if new == "deleted":
        return "deleted"
    if previous == "created":
        return "created"
    return new


def _etag(version: int) -> str:
    # Same look as BC's weak ETags, e.g. W/"JzE5OzQ4Mjcx...OzAwOyc=" (base64 of "'19;<digits>;00;'").
    digits = f"{version:020d}"
    inner = base64.b64encode(f"'{len(digits)};{digits};00;'".encode()).decode()
    return f'W/"{inner}"'


def _json_type(value: Any) -> str:
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int | float):
        return "number"
    if value is None:
        return "null"
    return type(value).__name__


class BCState:
    def __init__(
        self,
        clock: Clock,
        *,
        tenant_id: str,
        environment: str,
        client_id: str,
        client_secret: str,
        notification_window: timedelta = timedelta(seconds=30),
        collection_threshold: int = 1000,
        token_lifetime: timedelta = timedelta(seconds=3599),
        request_log_size: int = 10_000,
    ) -> None:
        self.clock = clock
        self.tenant_id = tenant_id
        self.environment = environment
        self.client_id = client_id
        self.client_secret = client_secret
        self.user_id = str(uuid.uuid5(uuid.NAMESPACE_URL, f"mlc-sim-app/{client_id}"))
        self.notification_window = notification_window
        self.collection_threshold = collection_threshold
        self.token_lifetime = token_lifetime
        self.lock = threading.RLock()
        self.companies: dict[str, dict[str, Any]] = {}
        self.records: dict[str, dict[str, dict[str, dict[str, Any]]]] = {}
        self.seq: dict[str, int] = {}
        self._version = 0
        self._numbers: dict[tuple[str, str], int] = {}
        self.tokens: dict[str, datetime] = {}
        self.token_requests = 0
        self.subscriptions: dict[str, dict[str, Any]] = {}
        self._sub_target: dict[str, tuple[str, str]] = {}
        self._sub_timestamp = 10_000
        self.windows: dict[str, Window] = {}
        self.deliveries: list[Delivery] = []
        self.delivery_log: deque[dict[str, Any]] = deque(maxlen=2000)
        self.request_log: deque[dict[str, Any]] = deque(maxlen=request_log_size)
        self.faults: list[Fault] = []
        self.drop_notifications = 0
        self.in_flight = 0
        self.max_in_flight = 0

    # -- helpers -----------------------------------------------------------------------------------

    def now(self) -> datetime:
        return self.clock.now()

    def _next_etag(self) -> str:
        self._version += 1
        return _etag(self._version)

    def _kind(self, entity: str) -> EntityKind:
        kind = ENTITIES.get(entity)
        if kind is None:
            raise SimError(404, "BadRequest_NotFound", f"The entity set '{entity}' does not exist.")
        return kind

    def _table(self, company_id: str, entity: str) -> dict[str, dict[str, Any]]:
        self._kind(entity)
        company_id = company_id.lower()
        if company_id not in self.records:
            raise SimError(404, "BadRequest_NotFound", f"The company '{company_id}' does not exist.")
        return self.records[company_id].setdefault(entity, {})

    # -- companies and records ---------------------------------------------------------------------

    def reset(self) -> None:
        with self.lock:
            self.companies.clear()
            self.records.clear()
            self.seq.clear()
            self._numbers.clear()
            self.subscriptions.clear()
            self._sub_target.clear()
            self.windows.clear()
            self.deliveries.clear()

    def add_company(self, name: str, display_name: str = "", company_id: str | None = None) -> str:
        with self.lock:
            cid = (company_id or str(uuid.uuid4())).lower()
            now = format_bc_datetime(self.now())
            self.companies[cid] = dict(
                zip(
                    COMPANY_FIELDS,
                    (
                        cid,
                        "24.5.23489.0",
                        self._version,
                        name,
                        display_name or name,
                        "",
                        now,
                        self.user_id,
                        now,
                        self.user_id,
                    ),
                    strict=True,
                )
            )
            self.records[cid] = {}
            return cid

    def company_ids(self) -> list[str]:
        with self.lock:
            return list(self.companies)

    def _complete(self, company_id: str, kind: EntityKind, fields: dict[str, Any]) -> dict[str, Any]:
        """A full record from a partial one: template defaults plus values copied from related records."""
        unknown = [name for name in fields if name not in kind.template]
        if unknown:
            raise ValueError(f"{kind.name}: unknown field(s) {', '.join(sorted(unknown))}")
        record = copy.deepcopy(kind.template)
        tables = self.records[company_id]
        derived: dict[str, Any] = {}
        if kind.name == "salesInvoices" and "customerId" in fields:
            c = tables.get("customers", {}).get(str(fields["customerId"]).lower())
            if c:
                derived = {
                    "customerNumber": c["number"],
                    "customerName": c["displayName"],
                    "billToName": c["displayName"],
                    "billToCustomerId": c["id"],
                    "billToCustomerNumber": c["number"],
                    "shipToName": c["displayName"],
                    "phoneNumber": c["phoneNumber"],
                    "email": c["email"],
                    "currencyCode": c["currencyCode"],
                    "paymentTermsId": c["paymentTermsId"],
                    "salesperson": c["salespersonCode"],
                }
                for prefix in ("sellTo", "billTo", "shipTo"):
                    derived.update(
                        {
                            f"{prefix}AddressLine1": c["addressLine1"],
                            f"{prefix}AddressLine2": c["addressLine2"],
                            f"{prefix}City": c["city"],
                            f"{prefix}Country": c["country"],
                            f"{prefix}State": c["state"],
                            f"{prefix}PostCode": c["postalCode"],
                        }
                    )
        elif kind.name in {"purchaseInvoices", "purchaseOrders"} and "vendorId" in fields:
            v = tables.get("vendors", {}).get(str(fields["vendorId"]).lower())
            if v:
                derived = {
                    "vendorNumber": v["number"],
                    "vendorName": v["displayName"],
                    "payToName": v["displayName"],
                    "payToVendorId": v["id"],
                    "payToVendorNumber": v["number"],
                    "currencyCode": v["currencyCode"],
                }
                for prefix in ("buyFrom", "payTo"):
                    derived.update(
                        {
                            f"{prefix}AddressLine1": v["addressLine1"],
                            f"{prefix}AddressLine2": v["addressLine2"],
                            f"{prefix}City": v["city"],
                            f"{prefix}Country": v["country"],
                            f"{prefix}State": v["state"],
                            f"{prefix}PostCode": v["postalCode"],
                        }
                    )
        elif kind.name == "customerPayments":
            c = tables.get("customers", {}).get(str(fields.get("customerId", "")).lower())
            j = tables.get("customerPaymentJournals", {}).get(str(fields.get("journalId", "")).lower())
            if c:
                derived["customerNumber"] = c["number"]
            if j:
                derived["journalDisplayName"] = j["code"]
                lines = [p for p in tables.get("customerPayments", {}).values() if p["journalId"] == j["id"]]
                derived["lineNumber"] = max((p["lineNumber"] for p in lines), default=0) + 10000
        elif kind.name == "vendorBankAccounts":
            v = tables.get("vendors", {}).get(str(fields.get("vendorId", "")).lower())
            if v:
                derived["vendorNumber"] = v["number"]
        record.update({k: v for k, v in derived.items() if k in record})
        for name, value in fields.items():
            self._check_type(kind, name, value)
            record[name] = value
        return record

    @staticmethod
    def _check_type(kind: EntityKind, name: str, value: Any) -> None:
        expected = _json_type(kind.template[name])
        if _json_type(value) != expected:
            raise ValueError(f"{kind.name}.{name}: expected a JSON {expected}, got {_json_type(value)}")

    def create_record(self, company_id: str, entity: str, fields: dict[str, Any]) -> dict[str, Any]:
        """Add a record (missing fields from the template); queues a `created` notification."""
        with self.lock:
            company_id = company_id.lower()
            kind = self._kind(entity)
            table = self._table(company_id, entity)
            record = self._complete(company_id, kind, fields)
            record["id"] = str(record["id"] if record["id"] != NULL_GUID else uuid.uuid4()).lower()
            if record["id"] in table:
                raise SimError(
                    409, "Internal_EntityWithSameKeyExists", f"The record {record['id']} already exists."
                )
            if "number" in kind.template and not record["number"]:
                counter = self._numbers.get((company_id, entity), 1000) + 10
                self._numbers[(company_id, entity)] = counter
                record["number"] = f"{kind.number_prefix}{counter:05d}"
            now = self.now()
            if "lastModifiedDateTime" not in fields:
                record["lastModifiedDateTime"] = format_bc_datetime(now)
            stored = {"@odata.etag": self._next_etag(), **record}
            table[record["id"]] = stored
            self.seq[record["id"]] = self._version
            self._notify(company_id, entity, stored, "created")
            return copy.deepcopy(stored)

    def update_record(
        self,
        company_id: str,
        entity: str,
        record_id: str,
        changes: dict[str, Any],
        *,
        if_match: str | None = None,
        api: bool = False,
    ) -> dict[str, Any]:
        """Change fields; bumps @odata.etag and lastModifiedDateTime and queues `updated`.

        From the API (`api=True`) If-Match is required and read-only fields are refused, as BC does.
        """
        with self.lock:
            company_id = company_id.lower()
            kind = self._kind(entity)
            table = self._table(company_id, entity)
            record = table.get(record_id.lower())
            if record is None:
                raise SimError(
                    404, "Internal_RecordNotFound", f"The {kind.odata_type} {record_id} does not exist."
                )
            if api:
                if not if_match:
                    raise SimError(
                        400,
                        "BadRequest_InvalidToken",
                        "Could not validate the client concurrency token required by the service. "
                        "Please provide a valid token in the client request.",
                    )
                if if_match != "*" and if_match != record["@odata.etag"]:
                    raise SimError(
                        409, "Request_EntityChanged", "Another user has already changed the record."
                    )
                for name in changes:
                    if name not in kind.template:
                        raise SimError(
                            400,
                            "BadRequest_NotFound",
                            f"Could not find a property named '{name}' on type 'Microsoft.NAV.{kind.odata_type}'.",
                        )
                    if name in kind.read_only:
                        raise SimError(
                            400, "BadRequest_MethodNotAllowed", f"The property '{name}' is read-only."
                        )
            for name, value in changes.items():
                if name not in kind.template or name == "id":
                    raise ValueError(f"{entity}: unknown or fixed field {name}")
                try:
                    self._check_type(kind, name, value)
                except ValueError as exc:
                    if api:
                        raise SimError(400, "Application_FieldValidationException", str(exc)) from exc
                    raise
            record.update(changes)
            if "lastModifiedDateTime" not in changes or api:
                record["lastModifiedDateTime"] = format_bc_datetime(self.now())
            record["@odata.etag"] = self._next_etag()
            self._notify(company_id, entity, record, "updated")
            return copy.deepcopy(record)

    def delete_record(self, company_id: str, entity: str, record_id: str) -> None:
        with self.lock:
            company_id = company_id.lower()
            table = self._table(company_id, entity)
            record = table.pop(record_id.lower(), None)
            if record is None:
                raise SimError(404, "Internal_RecordNotFound", f"The record {record_id} does not exist.")
            record = {**record, "lastModifiedDateTime": format_bc_datetime(self.now())}
            self._notify(company_id, entity, record, "deleted")

    def get_record(self, company_id: str, entity: str, record_id: str) -> dict[str, Any] | None:
        with self.lock:
            record = self._table(company_id, entity).get(record_id.lower())
            return copy.deepcopy(record) if record else None

    def ordered_view(self, company_id: str, entity: str) -> list[dict[str, Any]]:
        """The stored records in key order, NOT copied: for a caller holding `self.lock` that copies
        only what it sends (one page). list_records deep-copies the whole set on every call."""
        # Insertion order is key order: create_record is the only writer of new keys and gives each
        # a larger seq than any before it (a deleted id that comes back is appended, as its seq is).
        return list(self._table(company_id, entity).values())

    def list_records(self, company_id: str, entity: str) -> list[dict[str, Any]]:
        """Every record of the set in key order (a snapshot copy)."""
        with self.lock:
            table = self._table(company_id, entity)
            return [copy.deepcopy(r) for r in sorted(table.values(), key=lambda r: self.seq.get(r["id"], 0))]

    # -- tokens ------------------------------------------------------------------------------------

    def issue_token(self) -> tuple[str, int]:
        with self.lock:
            now = self.now()
            self.tokens = {t: exp for t, exp in self.tokens.items() if exp > now}
            token = secrets.token_urlsafe(32)
            self.tokens[token] = now + self.token_lifetime
            self.token_requests += 1
            return token, int(self.token_lifetime.total_seconds())

    def token_valid(self, token: str) -> bool:
        with self.lock:
            expiry = self.tokens.get(token)
            return expiry is not None and expiry > self.now()

    def expire_tokens(self) -> int:
        with self.lock:
            count = len(self.tokens)
            self.tokens.clear()
            return count

    # -- faults, request log, in-flight ------------------------------------------------------------

    def add_fault(self, fault: Fault) -> None:
        with self.lock:
            self.faults.append(fault)

    def clear_faults(self) -> None:
        with self.lock:
            self.faults.clear()
            self.drop_notifications = 0

    def take_faults(self, method: str, path: str) -> list[Fault]:
        """Matching faults for one request (at most one delay and one status), consuming their counts."""
        taken: list[Fault] = []
        with self.lock:
            for kind in ("delay", "status"):
                for fault in self.faults:
                    if fault.kind == kind and fault.matches(method, path):
                        taken.append(copy.copy(fault))
                        if fault.remaining is not None:
                            fault.remaining -= 1
                        break
            self.faults = [f for f in self.faults if f.remaining is None or f.remaining > 0]
        return taken

    def log_request(self, entry: dict[str, Any]) -> None:
        with self.lock:
            self.request_log.append(entry)

    def enter(self) -> None:
        with self.lock:
            self.in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self.in_flight)

    def leave(self) -> None:
        with self.lock:
            self.in_flight -= 1

    # -- subscriptions -----------------------------------------------------------------------------

    def purge_expired(self) -> None:
        with self.lock:
            now = self.now()
            for sid in [s for s, meta in self.subscriptions.items() if meta["_expires"] <= now]:
                self._drop_subscription(sid)

    def _drop_subscription(self, sid: str) -> None:
        self.subscriptions.pop(sid, None)
        self._sub_target.pop(sid, None)
        self.windows.pop(sid, None)

    def check_resource(self, resource: str) -> tuple[str, str]:
        """(company id, entity set) of a subscription resource, or the 400 BC answers."""
        path = urlsplit(resource).path if "://" in resource else resource
        match = _RESOURCE.match(path.strip().lstrip("/"))
        if not match:
            raise SimError(
                400, "BadRequest", f"The resource '{resource}' is not a valid subscription resource."
            )
        company_id, entity = match.group(1).lower(), match.group(2)
        with self.lock:
            if company_id not in self.companies:
                raise SimError(400, "BadRequest_NotFound", f"The company '{company_id}' does not exist.")
        kind = ENTITIES.get(entity)
        if kind is None or not kind.webhooks:
            # Only the entities listed as webhook-enabled in v2.0
            # (BC docs api-reference/v2.0/dynamics-subscriptions).
            raise SimError(
                400,
                "BadRequest_ResourceNotFound",
                f"The resource '{entity}' is not supported for webhook subscriptions.",
            )
        return company_id, entity

    def add_subscription(
        self, notification_url: str, resource: str, client_state: str, company_id: str, entity: str
    ) -> dict[str, Any]:
        with self.lock:
            self.purge_expired()
            if len(self.subscriptions) >= MAX_SUBSCRIPTIONS:
                raise SimError(
                    400, "BadRequest", f"At most {MAX_SUBSCRIPTIONS} subscriptions per environment."
                )
            now = self.now()
            sid = uuid.uuid4().hex
            self._sub_timestamp += 1
            created = format_bc_datetime(now)
            meta = {
                "@odata.etag": self._next_etag(),
                "subscriptionId": sid,
                "notificationUrl": notification_url,
                "resource": resource,
                "timestamp": self._sub_timestamp,
                "userId": self.user_id,
                "lastModifiedDateTime": format_bc_datetime(now.replace(microsecond=0)),
                "clientState": client_state,
                "expirationDateTime": format_bc_datetime(
                    (now + SUBSCRIPTION_LIFETIME).replace(microsecond=0)
                ),
                "systemCreatedAt": created,
                "systemCreatedBy": self.user_id,
                "systemModifiedAt": created,
                "systemModifiedBy": self.user_id,
                "_expires": now + SUBSCRIPTION_LIFETIME,
            }
            self.subscriptions[sid] = meta
            self._sub_target[sid] = (company_id, entity)
            return self.public_subscription(sid)

    def public_subscription(self, sid: str) -> dict[str, Any]:
        with self.lock:
            return {k: v for k, v in self.subscriptions[sid].items() if not k.startswith("_")}

    def find_subscription(self, sid: str, if_match: str | None) -> dict[str, Any]:
        with self.lock:
            self.purge_expired()
            meta = self.subscriptions.get(sid)
            if meta is None:
                raise SimError(404, "BadRequest_NotFound", f"The subscription '{sid}' does not exist.")
            if not if_match:
                raise SimError(
                    400,
                    "BadRequest_InvalidToken",
                    "Could not validate the client concurrency token required by the service. "
                    "Please provide a valid token in the client request.",
                )
            if if_match != "*" and if_match != meta["@odata.etag"]:
                raise SimError(409, "Request_EntityChanged", "Another user has already changed the record.")
            return self.public_subscription(sid)

    def renew_subscription(self, sid: str, changes: dict[str, str]) -> dict[str, Any]:
        with self.lock:
            meta = self.subscriptions.get(sid)
            if meta is None:
                raise SimError(404, "BadRequest_NotFound", f"The subscription '{sid}' does not exist.")
            now = self.now()
            for name in ("notificationUrl", "clientState"):
                if name in changes:
                    meta[name] = changes[name]
            self._sub_timestamp += 1
            meta.update(
                {
                    "@odata.etag": self._next_etag(),
                    "timestamp": self._sub_timestamp,
                    "lastModifiedDateTime": format_bc_datetime(now.replace(microsecond=0)),
                    "expirationDateTime": format_bc_datetime(
                        (now + SUBSCRIPTION_LIFETIME).replace(microsecond=0)
                    ),
                    "systemModifiedAt": format_bc_datetime(now),
                    "_expires": now + SUBSCRIPTION_LIFETIME,
                }
            )
            return self.public_subscription(sid)

    def delete_subscription(self, sid: str) -> None:
        with self.lock:
            self._drop_subscription(sid)

    def list_subscriptions(self) -> list[dict[str, Any]]:
        with self.lock:
            self.purge_expired()
            return [self.public_subscription(sid) for sid in self.subscriptions]

    # -- notifications -----------------------------------------------------------------------------

    def _notify(self, company_id: str, entity: str, record: dict[str, Any], change_type: str) -> None:
        targets = [(entity, record["id"], change_type)]
        if entity == "customerPayments" and record.get("journalId"):
            # A change to a line notifies the document header
            # (BC docs api-reference/v2.0/dynamics-subscriptions).
            targets = [("customerPaymentJournals", str(record["journalId"]).lower(), "updated")]
        now = self.now()
        modified = now
        for target_entity, record_id, kind in targets:
            for sid, (cid, ent) in self._sub_target.items():
                if cid != company_id or ent != target_entity or self.subscriptions[sid]["_expires"] <= now:
                    continue
                window = self.windows.setdefault(sid, Window(first_change_at=now))
                previous = window.changes.get(record_id)
                merged = _merge(previous.change_type, kind) if previous else kind
                window.changes[record_id] = Change(merged, record_id, modified)

    def take_due_deliveries(self, *, force: bool = False) -> list[Delivery]:
        """Close notification windows older than the window (or all, with force) into deliveries.

        One POST per notification URL, carrying items of every subscription that shares it; more
        than `collection_threshold` changes in a window become one `collection` item.
        """
        with self.lock:
            self.purge_expired()
            now = self.now()
            by_url: dict[str, Delivery] = {}
            for sid in list(self.windows):
                window = self.windows[sid]
                if not force and window.first_change_at + self.notification_window > now:
                    continue
                del self.windows[sid]
                meta = self.subscriptions[sid]
                company_id, entity = self._sub_target[sid]
                base = f"api/v2.0/companies({company_id})/{entity}"
                common = {
                    "subscriptionId": sid,
                    "clientState": meta["clientState"],
                    "expirationDateTime": meta["expirationDateTime"],
                }
                changes = list(window.changes.values())
                if len(changes) > self.collection_threshold:
                    # Filter on the first change minus 50 ms, UTC, as codeunit 6154 "API Webhook Notification
                    # Send" builds it (GetEntityCollectionUrl).
                    since = format_bc_datetime(window.first_change_at - timedelta(milliseconds=50))
                    items = [
                        {
                            **common,
                            "resource": f"{base}?$filter="
                            + quote(f"lastModifiedDateTime gt {since}", safe=":"),
                            "changeType": "collection",
                            "lastModifiedDateTime": format_bc_datetime(max(c.last_modified for c in changes)),
                        }
                    ]
                else:
                    items = [
                        {
                            **common,
                            "resource": f"{base}({c.record_id})",
                            "changeType": c.change_type,
                            "lastModifiedDateTime": format_bc_datetime(c.last_modified),
                        }
                        for c in changes
                    ]
                delivery = by_url.setdefault(
                    meta["notificationUrl"], Delivery(meta["notificationUrl"], [], set(), now)
                )
                delivery.items.extend(items)
                delivery.subscription_ids.add(sid)
            due = list(by_url.values())
            waiting: list[Delivery] = []
            for retry in self.deliveries:
                (due if force or retry.next_attempt_at <= now else waiting).append(retry)
            self.deliveries = waiting
            return due

    def consume_drop(self) -> bool:
        with self.lock:
            if self.drop_notifications > 0:
                self.drop_notifications -= 1
                return True
            return False

    def record_delivery(self, delivery: Delivery, status: int | None, detail: str = "") -> str:
        """Apply BC's rules to one delivery attempt; returns the outcome written to the log."""
        with self.lock:
            now = self.now()
            delivery.attempts += 1
            delivery.first_attempt_at = delivery.first_attempt_at or now
            if status is not None and 200 <= status < 300:
                outcome = "delivered"
            elif status is None or status in (408, 429) or status >= 500:
                if now - delivery.first_attempt_at >= DELIVERY_GIVE_UP:
                    outcome = "gave_up"
                else:
                    outcome = "retry"
                    backoff = timedelta(seconds=min(60 * 2 ** (delivery.attempts - 1), 3600))
                    delivery.next_attempt_at = now + backoff
                    self.deliveries.append(delivery)
            else:
                # Any other answer: BC stops and deletes the subscription (BC docs
                # api-reference/v2.0/dynamics-subscriptions; codeunit 6154 "API Webhook Notification
                # Send", SendNotifications).
                outcome = "subscription_deleted"
                for sid in delivery.subscription_ids:
                    self._drop_subscription(sid)
            self.delivery_log.append(
                {
                    "at": format_bc_datetime(now),
                    "url": delivery.url,
                    "status": status,
                    "attempt": delivery.attempts,
                    "items": len(delivery.items),
                    "subscriptionIds": sorted(delivery.subscription_ids),
                    "outcome": outcome,
                    "detail": detail,
                }
            )
            return outcome

    def log_dropped(self, delivery: Delivery) -> None:
        with self.lock:
            self.delivery_log.append(
                {
                    "at": format_bc_datetime(self.now()),
                    "url": delivery.url,
                    "status": None,
                    "attempt": delivery.attempts,
                    "items": len(delivery.items),
                    "subscriptionIds": sorted(delivery.subscription_ids),
                    "outcome": "dropped",
                    "detail": "dropped by an injected fault",
                }
            )

    def pending_notifications(self) -> int:
        with self.lock:
            return sum(len(w.changes) for w in self.windows.values()) + sum(
                len(d.items) for d in self.deliveries
            )

    def stats(self) -> dict[str, Any]:
        with self.lock:
            return {
                "now": format_bc_datetime(self.now()),
                "token_requests": self.token_requests,
                "in_flight": self.in_flight,
                "max_in_flight": self.max_in_flight,
                "requests": len(self.request_log),
                "subscriptions": len(self.subscriptions),
                "pending_notifications": self.pending_notifications(),
                "faults": [asdict(f) for f in self.faults],
                "drop_notifications": self.drop_notifications,
            }
