"""The subscription manager against the BC simulator: create with handshake, renew, re-create, delete."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest

from engine.loader import load_ruleset
from engine.ruleset import RuleSet
from server.planning.subscriptions import SubscriptionManager
from server.runtime.clock import ManualClock
from server.sandbox.stack import Stack
from server.services import Services
from tests.server.planning.conftest import GB, subscription_rows

pytestmark = pytest.mark.timeout(90)

EXPECTED = {"customers", "purchaseInvoices", "customerPaymentJournals"}


def remote(stack: Stack) -> dict[str, dict[str, Any]]:
    """BC's subscriptions by entity set (from the resource path)."""
    return {str(s["resource"]).rsplit("/", 1)[1]: s for s in stack.bc_sim.subscriptions()}


def only_rules(services: Services, *rule_ids: str) -> RuleSet:
    full = load_ruleset(services.settings.rules_dir, services.settings.templates_dir)
    return RuleSet([r for r in full.rules if r.id in rule_ids])


async def test_created_with_handshake_one_per_entity_the_rules_need(stack: Stack) -> None:
    assert await stack.run("subscriptions") == 3
    subs = remote(stack)
    assert set(subs) == EXPECTED  # purchaseOrders and customerPayments have no webhooks in v2.0
    for entity, sub in subs.items():
        assert sub["notificationUrl"] == f"{stack.url}/webhooks/bc"
        assert sub["resource"] == f"/api/v2.0/companies({GB})/{entity}"
        assert 20 <= len(str(sub["clientState"])) <= 250
    # Each create made BC call our endpoint with a validation token first.
    assert len({s["clientState"] for s in subs.values()}) == 3
    rows = subscription_rows(stack, "active")
    assert {(r.entity, r.subscription_id) for r in rows} == {
        (e, s["subscriptionId"]) for e, s in subs.items()
    }
    assert await stack.run("subscriptions") == 0  # exactly one each: nothing more to do


async def test_renewed_before_expiry_when_the_clock_advances(stack: Stack, clock: ManualClock) -> None:
    await stack.run("subscriptions")
    before = remote(stack)
    clock.advance(timedelta(days=2, hours=12))  # half a day before BC's 3-day expiry
    assert await stack.run("subscriptions") == 3
    after = remote(stack)
    assert {e: s["subscriptionId"] for e, s in after.items()} == {
        e: s["subscriptionId"] for e, s in before.items()
    }
    for entity in EXPECTED:
        assert after[entity]["expirationDateTime"] > before[entity]["expirationDateTime"]
    renewals = stack.bc_sim.requests(path_contains="/subscriptions(", method="PATCH")
    assert len(renewals) == 3 and all(r["headers"].get("if-match") for r in renewals)
    expiry = {r.entity: r.expires_at for r in subscription_rows(stack, "active")}
    assert all(e is not None and e > clock.now() + timedelta(days=2) for e in expiry.values())


async def test_recreated_after_bc_drops_one(stack: Stack) -> None:
    await stack.run("subscriptions")
    dropped = remote(stack)["customers"]["subscriptionId"]
    stack.bc_sim.state.delete_subscription(str(dropped))  # e.g. BC deleted it after a 4xx delivery
    assert await stack.run("subscriptions") == 1
    now = remote(stack)
    assert set(now) == EXPECTED and now["customers"]["subscriptionId"] != dropped
    assert [r.subscription_id for r in subscription_rows(stack, "dropped")] == [dropped]


async def test_recreated_on_404_at_renewal_when_bc_cannot_list(lite_stack: Stack, clock: ManualClock) -> None:
    stack = lite_stack
    await stack.run("subscriptions")
    dropped = remote(stack)["purchaseInvoices"]["subscriptionId"]
    stack.bc_sim.state.delete_subscription(str(dropped))
    stack.bc_sim.inject_fault(
        status=400, remaining=None, method="GET", path_contains="/api/v2.0/subscriptions"
    )
    clock.advance(timedelta(days=2, hours=12))
    await stack.run("subscriptions")
    assert set(remote(stack)) == EXPECTED
    assert remote(stack)["purchaseInvoices"]["subscriptionId"] != dropped
    [row] = subscription_rows(stack, "dropped")
    assert (row.subscription_id, row.last_error) == (dropped, "404 on renew")


async def test_deleted_when_no_rule_needs_it(stack: Stack) -> None:
    await stack.run("subscriptions")
    stack.services.ruleset = only_rules(stack.services, "credit-limit-crossed", "invoice-overdue")
    assert await stack.run("subscriptions") == 2
    assert set(remote(stack)) == {"customers"}
    assert {r.entity for r in subscription_rows(stack, "deleted")} == {
        "purchaseInvoices",
        "customerPaymentJournals",
    }


async def test_only_the_lease_holder_manages_subscriptions(lite_stack: Stack) -> None:
    stack = lite_stack
    assert await stack.run("subscriptions") == 3
    mine = stack.services
    other = Services(
        settings=mine.settings,
        clock=mine.clock,
        db=mine.db,
        ruleset=mine.ruleset,
        bc=mine.bc,
        twilio=mine.twilio,
        instance_id="other-instance",
    )
    stack.bc_sim.state.delete_subscription(str(remote(stack)["customers"]["subscriptionId"]))
    assert await SubscriptionManager(other).run_once() == 0  # the first instance holds the lease
    assert "customers" not in remote(stack)
