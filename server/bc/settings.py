"""What the BC client needs to know: where the tenant and environment are, and how to behave.

`BCConfig` is a plain frozen dataclass so the client does not depend on how the service loads its
settings; `BCConfig.from_settings()` builds one from the service's `MLC_BC__*` group.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from server.runtime.retry import BC_RETRY, RetryPolicy

if TYPE_CHECKING:
    from server.settings import BCSettings

DEFAULT_API_HOST = "https://api.businesscentral.dynamics.com"
DEFAULT_AUTHORITY_HOST = "https://login.microsoftonline.com"
# The token audience is the BC resource, whichever host serves the API
# (https://learn.microsoft.com/en-us/dynamics365/business-central/dev-itpro/administration/automation-apis-using-s2s-authentication).
BC_SCOPE = "https://api.businesscentral.dynamics.com/.default"


@dataclass(frozen=True)
class BCConfig:
    tenant_id: str
    environment: str
    client_id: str
    client_secret: str = field(repr=False)
    company_ids: tuple[str, ...] = ()
    api_host: str = DEFAULT_API_HOST
    authority_host: str = DEFAULT_AUTHORITY_HOST
    scope: str = BC_SCOPE
    ca_cert: Path | None = None
    # BC processes 5 requests per user at once and queues the rest; stay under it
    # (https://learn.microsoft.com/en-us/dynamics365/business-central/dev-itpro/administration/operational-limits-online).
    max_concurrency: int = 4
    timeout_seconds: float = 60.0
    # Server-driven paging: ask for pages this big (BC's maximum is 20,000).
    page_size: int = 1000
    # Batched reads split `id eq A or id eq B ...` so no request URL exceeds this many characters.
    max_url_length: int = 2048
    # Exponential backoff with full jitter; Retry-After wins when BC sends one (capped).
    retry: RetryPolicy = BC_RETRY

    def __post_init__(self) -> None:
        for name in ("tenant_id", "environment", "client_id", "api_host", "authority_host"):
            if not getattr(self, name):
                raise ValueError(f"BCConfig.{name} is empty")
        if not 1 <= self.max_concurrency <= 5:
            raise ValueError("BCConfig.max_concurrency must be between 1 and 5 (BC processes 5 at once)")
        if not 1 <= self.page_size <= 20000:
            raise ValueError("BCConfig.page_size must be between 1 and 20000 (BC's maximum page size)")
        if self.max_url_length < 256:
            raise ValueError("BCConfig.max_url_length must be at least 256")

    @property
    def base_url(self) -> str:
        """`{api_host}/v2.0/{tenant}/{environment}` — the root subscriptions and API pages hang off."""
        return f"{self.api_host.rstrip('/')}/v2.0/{self.tenant_id}/{self.environment}"

    @property
    def api_url(self) -> str:
        return f"{self.base_url}/api/v2.0"

    @property
    def authority(self) -> str:
        return f"{self.authority_host.rstrip('/')}/{self.tenant_id}"

    @classmethod
    def from_settings(cls, bc: BCSettings, *, client_secret: str | None = None) -> BCConfig:
        """From the service settings; `client_secret` overrides (it may come from the credential store)."""
        return cls(
            tenant_id=bc.tenant_id,
            environment=bc.environment,
            client_id=bc.client_id,
            client_secret=client_secret if client_secret is not None else bc.client_secret.get_secret_value(),
            company_ids=tuple(bc.companies),
            api_host=bc.api_base_url,
            authority_host=bc.authority_host,
            scope=bc.scope,
            ca_cert=bc.ca_cert,
            max_concurrency=bc.max_concurrency,
        )
