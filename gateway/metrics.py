"""Prometheus metrics of the gateway's HTTP traffic.

Per route template (``/v1/users/<int:user_id>``, never the raw path, so the
label set stays small) and method: a request counter by status and a latency
histogram. They live in the container's registry of :class:`shared.metrics.Metrics`
(which adds the per-entrypoint metrics every service has), so one ``/metrics``
shows both.
"""

from nameko.extensions import DependencyProvider
from prometheus_client import Counter, Histogram

from shared.metrics import LATENCY_BUCKETS

METHODS = {"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"}


class HttpMetrics(DependencyProvider):
    """Fed by :class:`gateway.http.GatewayWebServer` through ``observe_http``."""

    requests = latency = None

    def register_metrics(self, registry):
        """Called by :class:`shared.metrics.Metrics` when the container starts."""
        self.requests = Counter(
            "gateway_http_requests",
            "HTTP requests answered by the gateway, by method, route template and status.",
            ["method", "route", "status"],
            registry=registry,
        )
        self.latency = Histogram(
            "gateway_http_request_duration_seconds",
            "Time to answer an HTTP request, by method and route template.",
            ["method", "route"],
            buckets=LATENCY_BUCKETS,
            registry=registry,
        )

    def observe_http(self, method, route, status, seconds):
        if self.requests is None:  # no Metrics provider in this service
            return
        method = method if method in METHODS else "OTHER"  # clients choose it: bound the labels
        self.requests.labels(method, route, str(status)).inc()
        self.latency.labels(method, route).observe(seconds)
