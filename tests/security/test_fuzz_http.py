"""Every HTTP endpoint, fuzzed from the served OpenAPI document (hypothesis): malformed JSON and forms,
wrong content types, unicode and control characters, missing/extra fields, hostile path and query
values, with no, a wrong or the right bearer token. Each answer is < 500, and nothing is stored.
A body over the configured limit is answered 413 on every endpoint but /webhooks/bc (202: BC must
never see a 4xx), and a JSON body nested past the bound never gets a 5xx.

MLC_FUZZ_EXAMPLES sets the examples per run (default 300; a soak run might use 20000).
"""

from __future__ import annotations

import json
import os
import string
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from server.sandbox.stack import Stack
from server.settings import RateLimitSettings

from .conftest import row_counts, write_figures

pytestmark = pytest.mark.timeout(300)


@pytest.fixture
def stack_settings(stack_settings: dict[str, Any]) -> dict[str, Any]:
    """The folder's settings without the rate limits: a quarter of the cases present a wrong token
    from one address, so a lockout (tests/security/test_rate_limits.py) would answer the rest 429
    before they reach a handler, and its counters would be rows stored."""
    return {**stack_settings, "rate_limits": RateLimitSettings(enabled=False)}


EXAMPLES = int(os.environ.get("MLC_FUZZ_EXAMPLES", "300") or 300)
# Served outside the OpenAPI document (HTML pages and the Prometheus text format), fuzzed as well.
EXTRA_OPERATIONS = [
    ("GET", "/api/messages"),
    ("GET", "/audit"),
    ("GET", "/audit/{job_id}"),
    ("GET", "/metrics"),
]
CONTENT_TYPES = [
    None,
    "application/json",
    "application/x-www-form-urlencoded",
    "text/plain",
    "text/xml",
    "multipart/form-data; boundary=x",
    "application/json; charset=utf-16",
    "application/octet-stream",
    "application/json\t; x=\x7f",
]
HOSTILE_TEXT = st.one_of(
    st.text(max_size=64),
    st.text(alphabet=st.characters(codec="utf-8"), max_size=64),
    st.sampled_from(
        [
            "",
            "\x00",
            "\u202e\u0000\ufeff",
            "../../etc/passwd",
            "%00%2e%2e%2f",
            "'; DROP TABLE outbox_messages; --",
            "<script>alert(1)</script>",
            "{{7*7}}",
            "${jndi:ldap://x}",
            "9" * 400,
            "-1",
            "1e309",
            "NaN",
            "\U0001f4a9" * 50,
        ]
    ),
)
JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | HOSTILE_TEXT,
    lambda children: st.lists(children, max_size=5) | st.dictionaries(HOSTILE_TEXT, children, max_size=5),
    max_leaves=20,
)


def operations(doc: dict[str, Any]) -> list[tuple[str, str]]:
    found = [(method.upper(), path) for path, ops in doc["paths"].items() for method in ops if path]
    return sorted(set(found) | set(EXTRA_OPERATIONS))


def body_for(kind: str, value: Any, raw: bytes) -> bytes:
    if kind == "json":
        return json.dumps(value, allow_nan=True).encode("utf-8", "surrogatepass")
    if kind == "form" and isinstance(value, dict):
        from urllib.parse import urlencode

        return urlencode({str(k): str(v) for k, v in value.items()}).encode("utf-8", "surrogatepass")
    if kind == "broken-json":
        return b'{"value": [' + raw
    return raw


@st.composite
def requests(draw: st.DrawFn, ops: list[tuple[str, str]], token: str) -> dict[str, Any]:
    method, path = draw(st.sampled_from(ops))
    for name in ("job_id", "pause_id", "change_id"):
        if "{" + name + "}" in path:
            value = draw(st.one_of(st.integers(-(2**70), 2**70).map(str), HOSTILE_TEXT))
            from urllib.parse import quote

            path = path.replace("{" + name + "}", quote(value, safe="") or "x")
    query = draw(
        st.dictionaries(
            st.sampled_from(["status", "limit", "cursor", "all", "validationToken", "job", "x"]),
            HOSTILE_TEXT,
            max_size=3,
        )
    )
    kind = draw(st.sampled_from(["json", "form", "raw", "broken-json", "none"]))
    body = b"" if kind == "none" else body_for(kind, draw(JSON_VALUES), draw(st.binary(max_size=256)))
    auth = draw(st.sampled_from(["none", "wrong", "right", "basic"]))
    headers = {}
    content_type = draw(st.sampled_from(CONTENT_TYPES))
    if content_type is not None:
        headers["Content-Type"] = content_type
    if auth == "wrong":
        headers["Authorization"] = "Bearer " + draw(st.text(string.ascii_letters, min_size=1, max_size=40))
    elif auth == "right":
        headers["Authorization"] = f"Bearer {token}"
    elif auth == "basic":
        headers["Authorization"] = "Basic Zm9vOmJhcg=="
    if draw(st.booleans()):
        headers["X-Twilio-Signature"] = draw(st.text(string.printable.strip(), max_size=40))
    return {"method": method, "path": path, "query": query, "body": body, "headers": headers}


async def test_fuzzed_requests_never_answer_5xx_nor_store_anything(stack: Stack) -> None:
    async with httpx.AsyncClient(base_url=stack.url, timeout=30) as http:
        doc = (await http.get("/schema/openapi.json")).json()
        ops = operations(doc)
        assert ("POST", "/webhooks/bc") in ops and ("POST", "/api/changes") in ops
        before = row_counts(stack)
        tried: list[tuple[str, str, int]] = []

        # hypothesis drives the draws; the requests go over real HTTP to the running app.
        @settings(
            max_examples=EXAMPLES, deadline=None, database=None, suppress_health_check=list(HealthCheck)
        )
        @given(case=requests(ops, stack.api_token))
        def collect(case: dict[str, Any]) -> None:
            cases.append(case)

        cases: list[dict[str, Any]] = []
        collect()
        for case in cases:
            response = await http.request(
                case["method"],
                case["path"],
                params=case["query"],
                content=case["body"],
                headers=case["headers"],
            )
            tried.append((case["method"], case["path"], response.status_code))
            assert response.status_code < 500, (case, response.status_code, response.text[:500])
        assert row_counts(stack) == before, "a fuzzed request stored something"
    statuses = sorted({code for *_, code in tried})
    assert any(code in (401, 403) for code in statuses) and any(400 <= code < 500 for code in statuses)
    write_figures(
        "fuzz-http",
        {"cases": len(tried), "operations": len(ops), "five_xx": 0, "statuses": statuses},
    )


async def body_endpoints(http: httpx.AsyncClient) -> list[str]:
    """Every endpoint that reads a body: those with a requestBody, and the webhooks (raw bodies)."""
    doc = (await http.get("/schema/openapi.json")).json()
    posts = [
        path.replace("{change_id}", "1").replace("{pause_id}", "1")
        for path, ops in doc["paths"].items()
        if "post" in ops and ("requestBody" in ops["post"] or path.startswith("/webhooks/"))
    ]
    assert len(posts) >= 5
    return posts


async def test_oversized_bodies_get_413_everywhere_but_2xx_from_the_bc_webhook(stack: Stack) -> None:
    """BC deletes every subscription on a URL that answers a 4xx: /webhooks/bc answers 202, storing nothing."""
    limit = stack.settings.max_body_bytes
    oversized = b"{" + b" " * limit + b"}"
    async with httpx.AsyncClient(base_url=stack.url, timeout=30) as http:
        before = row_counts(stack)
        for path in await body_endpoints(http):
            headers = {"Authorization": f"Bearer {stack.api_token}", "Content-Type": "application/json"}
            response = await http.post(path, content=oversized, headers=headers)
            expected = 202 if path == "/webhooks/bc" else 413
            assert response.status_code == expected, (path, response.status_code, response.text[:200])
        assert row_counts(stack) == before


@pytest.mark.parametrize("depth", [33, 20_000])
async def test_deeply_nested_json_is_never_a_5xx(stack: Stack, depth: int) -> None:
    """A JSON body nested past the bound (32) on every endpoint that reads a body: the JSON API says
    400 and names the bound (the Twilio webhooks too, before their signature check), /webhooks/bc
    says 202. Nothing is stored."""
    deep = b'{"value": ' + b"[" * (depth - 1) + b"]" * (depth - 1) + b"}"
    async with httpx.AsyncClient(base_url=stack.url, timeout=30) as http:
        before = row_counts(stack)
        for path in await body_endpoints(http):
            headers = {"Authorization": f"Bearer {stack.api_token}", "Content-Type": "application/json"}
            response = await http.post(path, content=deep, headers=headers)
            if path == "/webhooks/bc":
                assert response.status_code == 202, (path, response.text[:200])
            else:
                assert response.status_code == 400, (path, response.status_code, response.text[:200])
                assert response.json()["detail"] == "request body: JSON nested deeper than 32 levels"
        assert row_counts(stack) == before
