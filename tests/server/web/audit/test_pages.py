"""The audit pages over real HTTP: protection, masking, filters, the message page."""

from __future__ import annotations

import re

import httpx

from server.sandbox.stack import Stack
from server.web.audit.session import COOKIE_NAME
from tests.server.web.audit.conftest import ALPINE, DESK


def rows(html: str) -> list[str]:
    """The BC record numbers of the list's rows, top to bottom."""
    return re.findall(r'<a class="record" href="/audit/[^"]+">([^<]+)</a>', html)


async def test_a_browser_without_a_session_is_sent_to_sign_in(http: httpx.AsyncClient) -> None:
    response = await http.get("/audit", params={"status": "failed"})
    assert response.status_code == 303
    assert response.headers["location"] == "/audit/login?next=%2Faudit%3Fstatus%3Dfailed"
    detail = await http.get("/audit/mlc-failed")
    assert detail.status_code == 303
    form = await http.get("/audit/login")
    assert form.status_code == 200
    assert 'name="token"' in form.text and 'type="password"' in form.text


async def test_a_wrong_bearer_token_is_refused_like_the_api(http: httpx.AsyncClient) -> None:
    response = await http.get("/audit", headers={"Authorization": "Bearer not-the-token"})
    assert response.status_code == 401
    assert response.headers["www-authenticate"] == "Bearer"
    assert "PS-INV" not in response.text


async def test_the_bearer_token_opens_the_pages(stack: Stack, http: httpx.AsyncClient) -> None:
    response = await http.get("/audit", headers={"Authorization": f"Bearer {stack.api_token}"})
    assert response.status_code == 200
    assert rows(response.text) == ["C10080", "PS-INV103007", "PS-INV103004", "PS-INV103001"]  # newest first


async def test_sign_in_sets_a_strict_httponly_signed_cookie(stack: Stack, http: httpx.AsyncClient) -> None:
    wrong = await http.post("/audit/login", data={"token": "guess", "next": "/audit"})
    assert wrong.status_code == 401
    assert "That token is not valid." in wrong.text
    assert COOKIE_NAME not in wrong.headers.get("set-cookie", "")

    right = await http.post("/audit/login", data={"token": stack.api_token, "next": "/audit?status=failed"})
    assert right.status_code == 303
    assert right.headers["location"] == "/audit?status=failed"
    cookie = right.headers["set-cookie"]
    assert cookie.startswith(f"{COOKIE_NAME}=v1.")
    assert "HttpOnly" in cookie
    assert "SameSite=strict" in cookie or "SameSite=Strict" in cookie
    assert "Path=/audit" in cookie
    assert "Secure" not in cookie  # the stack serves plain http on loopback
    assert stack.api_token not in cookie

    page = await http.get("/audit?status=failed")
    assert page.status_code == 200
    assert rows(page.text) == ["PS-INV103004"]

    out = await http.post("/audit/logout")
    assert out.status_code == 303
    assert "Max-Age=0" in out.headers["set-cookie"]
    assert (await http.get("/audit")).status_code == 303


async def test_a_tampered_cookie_is_no_session(stack: Stack, http: httpx.AsyncClient) -> None:
    await http.post("/audit/login", data={"token": stack.api_token})
    value = http.cookies.get(COOKIE_NAME, path="/audit")
    assert value
    expires = value.split(".")[1]
    forged = value.replace(f".{expires}.", f".{int(expires) + 10**6}.")
    http.cookies.clear()
    http.cookies.set(COOKIE_NAME, forged, path="/audit")
    assert (await http.get("/audit")).status_code == 303


async def test_sign_in_never_redirects_off_site(stack: Stack, http: httpx.AsyncClient) -> None:
    for target in ("https://evil.example/audit", "//evil.example/audit", "/api/messages", "/audit/login"):
        response = await http.post("/audit/login", data={"token": stack.api_token, "next": target})
        assert response.headers["location"] == "/audit", target


async def test_the_list_masks_numbers_and_explains_failures(signed_in: httpx.AsyncClient) -> None:
    page = await signed_in.get("/audit")
    html = page.text
    for number in (DESK, ALPINE, "2065550118", "4155552671"):
        assert number not in html
    assert "+1 20** ***118" in html and "+1 41** ***671" in html
    failed_row = re.search(r'<tr class="row--problem" data-status="failed">(.*?)</tr>', html, re.S)
    assert failed_row is not None
    assert "Twilio 30005" in failed_row.group(1)
    assert "Unknown destination handset" in failed_row.group(1)
    undelivered_row = re.search(r'<tr class="row--problem" data-status="undelivered">(.*?)</tr>', html, re.S)
    assert undelivered_row is not None
    assert "Unreachable destination handset" in undelivered_row.group(1)
    skipped_row = re.search(r'<tr class="" data-status="skipped">(.*?)</tr>', html, re.S)
    assert skipped_row is not None
    assert "is too long for US" in skipped_row.group(1)
    assert "020 7946 0123" not in html  # a phone number quoted in a reason is masked too
    assert page.headers["content-security-policy"].startswith("default-src 'none'")
    assert page.headers["cache-control"] == "no-store"


async def test_filters(signed_in: httpx.AsyncClient) -> None:
    async def numbers(**params: str | list[str]) -> list[str]:
        response = await signed_in.get("/audit", params=params)
        assert response.status_code == 200
        return rows(response.text)

    assert await numbers(status=["failed", "undelivered"]) == ["C10080", "PS-INV103004"]
    assert await numbers(rule="credit-limit-crossed") == ["C10080"]
    assert await numbers(entity="salesInvoices") == ["PS-INV103007", "PS-INV103004", "PS-INV103001"]
    assert await numbers(q="inv103004") == ["PS-INV103004"]  # part of the number, any case
    assert await numbers(q="(415) 555-2671") == ["PS-INV103004"]  # the recipient, typed as people do
    assert await numbers(q="206 555") == ["C10080", "PS-INV103001"]
    assert await numbers(q="100%") == []  # LIKE wildcards are literal
    assert await numbers(status="failed", rule="credit-limit-crossed") == []
    unknown = await signed_in.get("/audit", params={"status": "deliverd"})
    assert "Ignored unknown status deliverd." in unknown.text


async def test_the_message_page(signed_in: httpx.AsyncClient) -> None:
    page = await signed_in.get("/audit/mlc-failed")
    assert page.status_code == 200
    html = page.text
    assert "Twilio error 30005: Unknown destination handset" in html
    assert "The number probably does not exist or was deactivated." in html
    assert "https://www.twilio.com/docs/errors/30005" in html
    assert "Invoice PS-INV103004 is overdue. Please pay or call us." in html
    assert ALPINE not in html and "+1 41** ***671" in html
    # the rule as loaded, and the BC record
    assert "rules/invoice-overdue.yaml" in html
    assert "salesInvoices" in html and "id-PS-INV103004" in html
    # the timeline, in order
    timeline = html[html.index("Status timeline") :]
    labels = re.findall(r'<span class="badge badge--\w+">([^<]+)</span>', timeline)
    assert labels == ["Planned", "Queued", "Sent", "Failed"]

    missing = await signed_in.get("/audit/mlc-nope")
    assert missing.status_code == 404
    assert "No such message" in missing.text
