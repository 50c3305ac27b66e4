"""The service's own HTTP surface: health, readiness, bearer protection, the OpenAPI document."""

from __future__ import annotations

import httpx

from server.sandbox.stack import Stack


async def test_health_ready_and_openapi(stack: Stack) -> None:
    async with httpx.AsyncClient(base_url=stack.url) as http:
        assert (await http.get("/health")).json() == {"status": "ok"}
        ready = await http.get("/ready")
        assert ready.status_code == 200
        assert ready.json()["checks"]["database"] == "ok"
        schema = (await http.get("/schema/openapi.json")).json()
        assert "/api/messages" in schema["paths"]
        assert "/webhooks/bc" in schema["paths"]


async def test_read_api_requires_the_bearer_token(stack: Stack) -> None:
    async with httpx.AsyncClient(base_url=stack.url) as http:
        missing = await http.get("/api/messages")
        assert missing.status_code == 401
        assert missing.headers["www-authenticate"] == "Bearer"
        wrong = await http.get("/api/messages", headers={"Authorization": "Bearer not-the-token"})
        assert wrong.status_code == 401
        ok = await http.get("/api/messages", headers={"Authorization": f"Bearer {stack.api_token}"})
        assert ok.status_code == 200
        assert ok.json() == {"items": [], "next_cursor": None}


async def test_read_api_names_the_bad_field(stack: Stack) -> None:
    headers = {"Authorization": f"Bearer {stack.api_token}"}
    async with httpx.AsyncClient(base_url=stack.url, headers=headers) as http:
        bad_status = await http.get("/api/messages", params={"status": "deliverd"})
        assert bad_status.status_code == 400
        assert "status: unknown value(s) deliverd" in bad_status.text
        bad_limit = await http.get("/api/messages", params={"limit": "0"})
        assert bad_limit.status_code == 400
        assert "limit" in bad_limit.text
        missing = await http.get("/api/messages/mlc-nope")
        assert missing.status_code == 404


async def test_ids_beyond_the_database_integer_are_a_400_not_a_500(stack: Stack) -> None:
    # Found by the HTTP fuzzer: /api/pauses/1180591620717411303424/lift answered 500.
    huge = str(2**70)
    headers = {"Authorization": f"Bearer {stack.api_token}"}
    async with httpx.AsyncClient(base_url=stack.url, headers=headers) as http:
        answers = [
            await http.post(f"/api/pauses/{huge}/lift"),
            await http.get(f"/api/changes/{huge}"),
            await http.post(f"/api/changes/{huge}/confirm", json={"code": "123456"}),
            await http.get("/api/messages", params={"cursor": huge}),
            await http.get("/api/changes", params={"cursor": huge}),
        ]
        assert [a.status_code for a in answers] == [400] * len(answers)
        assert all("2147483647" in a.text for a in answers)
