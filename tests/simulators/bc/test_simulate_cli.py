"""`ml-connector simulate bc` as a subprocess: one JSON line, msal (with an httpx client trusting
the printed CA) gets a token from it, httpx with that token reads the API, SIGTERM stops it cleanly."""

from __future__ import annotations

import json
import signal
import ssl
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import msal
import pytest

BC_SCOPE = "https://api.businesscentral.dynamics.com/.default"


def read_line(proc: subprocess.Popen[str], limit: float = 30.0) -> str:
    """The first stdout line, or a failure (never a hang) after `limit` seconds."""
    lines: list[str] = []
    reader = threading.Thread(
        target=lambda: lines.append(proc.stdout.readline() if proc.stdout else ""), daemon=True
    )
    reader.start()
    reader.join(limit)
    assert lines and lines[0], (
        f"no JSON line from simulate bc (stderr: {proc.stderr.read() if proc.poll() is not None and proc.stderr else ''})"
    )
    return lines[0]


@pytest.fixture
def standalone(repo_root: Path) -> Iterator[tuple[subprocess.Popen[str], dict[str, Any]]]:
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "server.cli",
            "simulate",
            "bc",
            "--host",
            "127.0.0.1",
            "--port",
            "0",
            "--seed",
            "demo",
        ],
        cwd=repo_root,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        info = json.loads(read_line(proc))
        yield proc, info
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)


def test_simulate_bc_prints_one_json_line_and_msal_gets_a_token(
    standalone: tuple[subprocess.Popen[str], dict[str, Any]],
) -> None:
    proc, info = standalone
    assert set(info) >= {
        "base_url",
        "authority",
        "tenant_id",
        "client_id",
        "client_secret",
        "environment",
        "companies",
        "ca_cert",
    }
    assert info["base_url"].startswith("https://127.0.0.1:")
    assert info["base_url"].endswith(f"/v2.0/{info['tenant_id']}/{info['environment']}")
    assert Path(info["ca_cert"]).is_file()
    assert len(info["companies"]) == 2

    # Reference a2: hand msal an httpx client that trusts the simulator's CA.
    with httpx.Client(verify=ssl.create_default_context(cafile=info["ca_cert"])) as http:
        app = msal.ConfidentialClientApplication(
            info["client_id"],
            client_credential=info["client_secret"],
            authority=info["authority"],
            http_client=http,
            instance_discovery=False,
        )
        first = app.acquire_token_for_client(scopes=[BC_SCOPE])
        second = app.acquire_token_for_client(scopes=[BC_SCOPE])
        assert first["token_type"] == "Bearer"
        assert first["token_source"] == "identity_provider"
        assert second["token_source"] == "cache"
        token = first["access_token"]

        companies = http.get(
            f"{info['base_url']}/api/v2.0/companies", headers={"Authorization": f"Bearer {token}"}
        )
        assert companies.status_code == 200
        assert [c["id"] for c in companies.json()["value"]] == info["companies"]
        refused = http.get(f"{info['base_url']}/api/v2.0/companies")
        assert refused.status_code == 401
        assert refused.json()["error"]["code"] == "Authentication_InvalidCredentials"

        # The control API drives the standalone simulator over HTTP too.
        control = info["control_url"]
        assert http.get(f"{control}/stats").json()["token_requests"] == 1
        fault = http.post(f"{control}/faults", json={"status": 429, "retry_after": 3, "remaining": 1})
        assert fault.status_code == 201
        throttled = http.get(
            f"{info['base_url']}/api/v2.0/companies", headers={"Authorization": f"Bearer {token}"}
        )
        assert throttled.status_code == 429
        assert throttled.headers["retry-after"] == "3"
        logged = http.get(f"{control}/requests").json()["value"]
        assert [r["status"] for r in logged if r["path"].endswith("/companies")] == [200, 401, 429]

    proc.send_signal(signal.SIGTERM)
    assert proc.wait(15) == 0
    assert proc.stdout is not None and proc.stdout.read() == ""  # exactly one line
    assert not Path(info["ca_cert"]).exists()  # the throwaway CA is removed on exit


def test_sigint_stops_it_cleanly(standalone: tuple[subprocess.Popen[str], dict[str, Any]]) -> None:
    proc, info = standalone
    proc.send_signal(signal.SIGINT)
    assert proc.wait(15) == 0
    assert not Path(info["ca_cert"]).exists()
