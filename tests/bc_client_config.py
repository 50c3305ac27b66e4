"""A BCConfig for the connector's BC client pointed at a BC simulator.

The simulator knows nothing of the connector's classes (simulators/ imports nothing from server/), so
the tests build the client's config from the connection facts the simulator publishes.
"""

from __future__ import annotations

from typing import Any

from server.bc.settings import BCConfig
from server.runtime.retry import RetryPolicy
from simulators.bc.simulator import BCSimulator


def client_config(sim: BCSimulator, **overrides: Any) -> BCConfig:
    """A BCConfig pointing at this simulator (fast retries unless overridden)."""
    values: dict[str, Any] = {
        "tenant_id": sim.tenant_id,
        "environment": sim.environment,
        "client_id": sim.client_id,
        "client_secret": sim.client_secret,
        "company_ids": tuple(sim.companies),
        "api_host": sim.origin,
        "authority_host": sim.origin,
        "ca_cert": sim.ca_cert_path,
        "timeout_seconds": 10.0,
        "retry": RetryPolicy(max_attempts=4, base_delay=0.01, max_delay=0.05),
    }
    values.update(overrides)
    return BCConfig(**values)
