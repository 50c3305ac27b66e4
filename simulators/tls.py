"""A throwaway certificate authority and a loopback server certificate for the HTTPS simulators.

msal only accepts an `https://host/tenant` authority, so the Entra simulator must speak TLS. The CA is
made at start (trustme), written to a private temporary folder and deleted on `close()`. Clients trust
it through `client_ssl_context()` — never through the process-wide CA-bundle variables, which these
machines set and which win over msal's own `verify` (checked with msal 1.39).
"""

from __future__ import annotations

import shutil
import ssl
import tempfile
from pathlib import Path

import trustme

LOOPBACK_NAMES: tuple[str, ...] = ("127.0.0.1", "localhost", "::1")


class ThrowawayTLS:
    """CA + server certificate files for loopback names; `close()` removes them."""

    def __init__(self, names: tuple[str, ...] = LOOPBACK_NAMES) -> None:
        self._dir = Path(tempfile.mkdtemp(prefix="mlc-tls-"))
        self._ca = trustme.CA(organization_name="ml-connector simulator CA")
        cert = self._ca.issue_cert(*names)
        self.ca_cert_path = self._dir / "ca.pem"
        self.cert_path = self._dir / "server.pem"
        self.key_path = self._dir / "server.key"
        self._ca.cert_pem.write_to_path(str(self.ca_cert_path))
        cert.cert_chain_pems[0].write_to_path(str(self.cert_path))
        for extra in cert.cert_chain_pems[1:]:
            extra.write_to_path(str(self.cert_path), append=True)
        cert.private_key_pem.write_to_path(str(self.key_path))
        self.key_path.chmod(0o600)

    def server_ssl_context(self) -> ssl.SSLContext:
        ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        ctx.load_cert_chain(str(self.cert_path), str(self.key_path))
        return ctx

    def client_ssl_context(self) -> ssl.SSLContext:
        return ssl.create_default_context(cafile=str(self.ca_cert_path))

    def close(self) -> None:
        shutil.rmtree(self._dir, ignore_errors=True)
