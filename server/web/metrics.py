"""The /metrics route: Prometheus text, bearer-protected like the API (the metrics are server/metrics.py)."""

from __future__ import annotations

from litestar import Response, get
from litestar.di import NamedDependency

from server.metrics import TEXT_FORMAT
from server.services import Services
from server.web.auth import make_bearer_guard_for_app


@get("/metrics", guards=[make_bearer_guard_for_app()], sync_to_thread=True, include_in_schema=False)
def metrics_endpoint(services: NamedDependency[Services]) -> Response[bytes]:
    metrics = services.metrics
    # The classic text format, which every Prometheus version reads (Litestar adds the charset).
    return Response(metrics.render(), media_type=TEXT_FORMAT)


ROUTES = [metrics_endpoint]
