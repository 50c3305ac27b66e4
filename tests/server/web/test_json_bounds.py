"""JSON bodies are bounded in depth on every endpoint that reads one, over real HTTP: the API
answers 400 naming the bound, never a 500; /webhooks/bc answers 2xx (BC deletes every subscription
on a URL that answers a 4xx), stores nothing, and counts the body as malformed."""

from __future__ import annotations

import httpx
import pytest
import sqlalchemy as sa

from server.sandbox.stack import Stack
from tests.prometheus import sample

pytestmark = pytest.mark.timeout(120)

JSON = {"Content-Type": "application/json"}
DEPTH_ERROR = "request body: JSON nested deeper than 32 levels"
API_POSTS = ["/api/changes", "/api/changes/1/confirm", "/api/pauses"]


@pytest.fixture
def stack_url(sqlite_url: str) -> str:
    """Decoding happens before the store: one backend is enough."""
    return sqlite_url


def nested(depth: int, *, key: str = "value") -> bytes:
    """An object whose `key` holds arrays nested so that the whole body is `depth` levels deep."""
    inner = depth - 1
    return b'{"' + key.encode() + b'": ' + b"[" * inner + b"]" * inner + b"}"


def stored_rows(stack: Stack) -> dict[str, int]:
    with stack.services.db.connect() as conn:
        return {
            table: int(conn.execute(sa.text(f'SELECT count(*) FROM "{table}"')).scalar_one())
            for table in ("notification_inbox", "pending_changes", "reminder_pauses", "audit_log")
        }


@pytest.mark.parametrize("depth", [33, 100_000])
@pytest.mark.parametrize("path", API_POSTS)
async def test_a_body_nested_too_deep_is_400_on_the_api(
    stack: Stack, api: httpx.AsyncClient, path: str, depth: int
) -> None:
    before = stored_rows(stack)
    response = await api.post(path, content=nested(depth), headers=JSON)
    assert response.status_code == 400, response.text[:300]
    assert response.json()["detail"] == DEPTH_ERROR
    assert "Traceback" not in response.text
    assert stored_rows(stack) == before


async def test_a_body_at_the_bound_is_read_and_judged_on_its_fields(api: httpx.AsyncClient) -> None:
    """32 levels pass the bound: the ordinary validation answers (still 400, about the fields)."""
    response = await api.post("/api/pauses", content=nested(32, key="scope"), headers=JSON)
    assert response.status_code == 400
    assert response.json()["detail"] != DEPTH_ERROR


@pytest.mark.parametrize(
    "body",
    [
        nested(33),
        nested(100_000),
        b'{"value": [{"x": ' + b"[" * 50_000 + b"]" * 50_000 + b"}]}",
        b"{not json",
    ],
    ids=["depth-33", "depth-100000", "deep-unknown-field", "not-json"],
)
async def test_a_deep_or_malformed_bc_notification_is_2xx_stores_nothing_and_is_counted(
    stack: Stack, api: httpx.AsyncClient, body: bytes
) -> None:
    before = stored_rows(stack)
    async with httpx.AsyncClient(base_url=stack.url, timeout=30) as http:
        response = await http.post("/webhooks/bc", content=body, headers=JSON)
    assert response.status_code == 202, response.text[:300]
    assert "Traceback" not in response.text
    assert stored_rows(stack) == before
    metrics = (await api.get("/metrics")).text
    assert sample(metrics, "mlc_bc_notifications_received_total", entity="unknown", outcome="malformed") == 1


async def test_an_oversized_bc_notification_is_2xx_and_counted(stack: Stack, api: httpx.AsyncClient) -> None:
    before = stored_rows(stack)
    oversized = b'{"value": [' + b" " * stack.settings.max_body_bytes + b"]}"
    async with httpx.AsyncClient(base_url=stack.url, timeout=30) as http:
        response = await http.post("/webhooks/bc", content=oversized, headers=JSON)
    assert response.status_code == 202
    assert stored_rows(stack) == before
    metrics = (await api.get("/metrics")).text
    assert sample(metrics, "mlc_bc_notifications_received_total", entity="unknown", outcome="too_large") == 1
