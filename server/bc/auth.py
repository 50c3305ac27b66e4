"""App-only tokens for Business Central: OAuth 2.0 client credentials through msal.

msal caches the token and hands it back until near expiry, so many API calls cost one token
request. msal is synchronous; calls run in a worker thread behind an asyncio lock so concurrent
requests never race for a token.

msal is given an `httpx.Client` whose TLS context trusts `ca_cert` (plus the system store): msal's own
requests session and its `verify=` lose to REQUESTS_CA_BUNDLE / CURL_CA_BUNDLE, which these machines
set (msal uses requests, which honours those variables:
https://requests.readthedocs.io/en/latest/user/advanced/#ssl-cert-verification). httpx's get/post signatures fit msal's `http_client` interface.
"""

from __future__ import annotations

import asyncio
import ssl
import threading
from pathlib import Path
from typing import Any

import httpx
import msal

from server.bc.errors import AuthenticationError, TransportError
from server.bc.settings import BCConfig
from server.runtime.clock import monotonic


def ssl_context(ca_cert: Path | None) -> ssl.SSLContext:
    """The system trust store, plus `ca_cert` when given (the simulator's throwaway CA)."""
    ctx = ssl.create_default_context()
    if ca_cert is not None:
        ctx.load_verify_locations(cafile=str(ca_cert))
    return ctx


def msal_http_client(ca_cert: Path | None, timeout: float = 30.0) -> httpx.Client:
    # trust_env=False: proxies or CA variables from the environment must not override our TLS choice.
    return httpx.Client(verify=ssl_context(ca_cert), timeout=timeout, trust_env=False)


class TokenProvider:
    """Bearer tokens for one app registration and tenant."""

    def __init__(self, config: BCConfig, *, http_client: httpx.Client | None = None) -> None:
        self._config = config
        self._owns_http = http_client is None
        self._http = http_client or msal_http_client(config.ca_cert, config.timeout_seconds)
        self._app: msal.ConfidentialClientApplication | None = None
        self._async_lock = asyncio.Lock()
        self._thread_lock = threading.Lock()
        # The last token and when to stop using it (monotonic), so a cached token costs no thread hop.
        self._token: str | None = None
        self._use_until = 0.0

    def _msal_app(self) -> msal.ConfidentialClientApplication:
        # Built on first use: msal may fetch the authority's metadata when constructed, and a
        # service must be able to start while Entra is unreachable.
        if self._app is None:
            self._app = msal.ConfidentialClientApplication(
                self._config.client_id,
                client_credential=self._config.client_secret,
                authority=self._config.authority,
                http_client=self._http,
                # The authority is ours to name (simulator or login.microsoftonline.com): skip the
                # instance-discovery call to Microsoft, which a simulator on loopback cannot answer.
                instance_discovery=False,
            )
        return self._app

    def _acquire(self, force_refresh: bool) -> tuple[str, float]:
        with self._thread_lock:
            try:
                app = self._msal_app()
            except httpx.TransportError as exc:
                raise TransportError(
                    f"authority unreachable: {type(exc).__name__}", method="GET", url=self._config.authority
                ) from exc
            except ValueError as exc:  # msal: malformed authority or discovery document
                raise AuthenticationError(str(exc), url=self._config.authority) from exc
            if force_refresh:
                # Drop the cached app token so the next call asks Entra for a new one.
                app.remove_tokens_for_client()
            try:
                result: dict[str, Any] = app.acquire_token_for_client(scopes=[self._config.scope])
            except httpx.TransportError as exc:
                raise TransportError(
                    f"token endpoint unreachable: {type(exc).__name__}",
                    method="POST",
                    url=self._config.authority,
                ) from exc
            except ValueError as exc:  # msal: bad authority / discovery document
                raise AuthenticationError(str(exc), url=self._config.authority) from exc
        token = result.get("access_token")
        if not token:
            # error_description carries Entra's AADSTS code; it never contains the secret.
            raise AuthenticationError(
                f"{result.get('error', 'no_token')}: {result.get('error_description', 'no access token returned')}",
                method="POST",
                url=self._config.authority,
            )
        expires_in = float(result.get("expires_in") or 0)
        return str(token), expires_in

    async def token(self, *, force_refresh: bool = False) -> str:
        async with self._async_lock:
            if not force_refresh and self._token is not None and monotonic() < self._use_until:
                return self._token
            token, expires_in = await asyncio.to_thread(self._acquire, force_refresh)
            # Go back to msal (which refreshes near expiry) well before the token runs out.
            self._token = token
            self._use_until = monotonic() + max(0.0, min(expires_in - 300.0, expires_in / 2))
            return token

    def close(self) -> None:
        if self._owns_http:
            self._http.close()
