"""The audit pages in a real headless browser (Debian's chromium driven by Playwright), after the
sandbox's demo scenario: sign in, filter to failed, open one message, read what a person sees.
Screenshots are kept under test-artifacts/ (gitignored) for a human to look at."""

from __future__ import annotations

import os
import re
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from cryptography.fernet import Fernet

from server.runtime.clock import ManualClock
from server.sandbox.scenario import (
    DEMO_HOUR_UTC,
    FAILING_CODE,
    FAILING_HANDSET,
    run_scenario,
    scenario_settings,
)
from server.sandbox.stack import Stack

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
START = datetime(2026, 11, 25, DEMO_HOUR_UTC, 0, tzinfo=UTC)  # a Wednesday, as the sandbox starts

pytestmark = pytest.mark.timeout(180)


def require_browser() -> None:
    if CHROMIUM.exists():
        return
    reason = (
        f"no browser at {CHROMIUM}: install Debian's chromium and chromium-driver "
        "(apt-get install -y chromium chromium-driver; .ci/run does this)"
    )
    if os.environ.get("CI") == "true":
        pytest.fail(reason)
    pytest.skip(reason)


@pytest.fixture
async def scenario_stack(tmp_path: Path) -> AsyncIterator[Stack]:
    clock = ManualClock(START)
    overrides = scenario_settings(Fernet.generate_key().decode())
    async with Stack(
        database_url=f"sqlite:///{tmp_path / 'sandbox.sqlite3'}", clock=clock, settings_overrides=overrides
    ) as stack:
        report = await run_scenario(stack, "demo", clock=clock)
        assert report.ok, (report.missing_rules, report.checks)
        yield stack


async def test_a_person_finds_the_failed_message_and_why(
    scenario_stack: Stack, tmp_path: Path, repo_root: Path
) -> None:
    require_browser()
    from playwright.async_api import async_playwright

    stack = scenario_stack
    artifacts = repo_root / "test-artifacts"
    artifacts.mkdir(exist_ok=True)
    async with async_playwright() as playwright:
        context = await playwright.chromium.launch_persistent_context(
            str(tmp_path / "chromium-profile"),  # a fresh user-data dir
            executable_path=str(CHROMIUM),
            args=CHROMIUM_ARGS,
            headless=True,
            viewport={"width": 1360, "height": 900},
        )
        try:
            page = await context.new_page()
            page.set_default_timeout(20_000)

            # The sandbox's sign-in link carries the token in the fragment; the page signs in.
            await page.goto(f"{stack.url}/audit/login#token={stack.api_token}")
            await page.wait_for_url(re.compile(r"/audit$"))
            assert await page.locator("h1").inner_text() == "Messages"
            assert "#token" not in page.url

            await page.select_option("#f-status", "failed")
            await page.click("button:has-text('Filter')")
            await page.wait_for_url(re.compile(r"status=failed"))
            rows = page.locator("table.messages tbody tr")
            count = await rows.count()
            assert count >= 1
            for index in range(count):
                row = rows.nth(index)
                assert await row.get_attribute("data-status") == "failed"
                text = await row.inner_text()
                assert f"Twilio {FAILING_CODE}" in text
                assert "Unknown destination handset" in text
                assert "+1 41** ***671" in text
            assert await page.locator("select#f-status").input_value() == "failed"
            html = await page.content()
            assert FAILING_HANDSET not in html and "4155552671" not in html
            await page.screenshot(path=str(artifacts / "audit-failed-list.png"), full_page=True)

            await rows.first.locator("a.record").click()
            await page.wait_for_url(re.compile(r"/audit/mlc-[0-9a-f]+$"))
            heading = await page.locator("h1").inner_text()
            assert heading.startswith("invoice-overdue")
            assert "PS-INV103004" in heading
            alert = await page.locator("[role=alert]").inner_text()
            assert f"Twilio error {FAILING_CODE}: Unknown destination handset" in alert
            assert "The number probably does not exist or was deactivated." in alert
            assert await page.locator(".badge--lg").inner_text() == "Failed"
            steps = page.locator("ol.timeline > li")
            assert await steps.count() >= 3
            assert await steps.last.locator(".badge").inner_text() == "Failed"
            assert "collections ladder" in await page.locator("section.card", has_text="Rule").inner_text()
            record = await page.locator("section.card", has_text="Business Central record").inner_text()
            assert "salesInvoices" in record and "PS-INV103004" in record
            assert FAILING_HANDSET not in await page.content()
            await page.screenshot(path=str(artifacts / "audit-failed-detail.png"), full_page=True)

            # Signing out ends the session: the list sends the browser back to sign in.
            await page.click("button:has-text('Sign out')")
            await page.wait_for_url(re.compile(r"/audit/login"))
            await page.goto(f"{stack.url}/audit")
            assert "/audit/login" in page.url
        finally:
            await context.close()
