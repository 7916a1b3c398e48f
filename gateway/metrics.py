"""Prometheus metrics of the gateway's HTTP traffic, in a registry per container.

Per route template (``/v1/users/<int:user_id>``, never the raw path, so the
label set stays small) and method: a request counter by status and a latency
histogram. A registry of our own per container keeps two containers in one
process (the tests) from colliding, unlike the global default registry.
"""

from nameko.extensions import DependencyProvider
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram
from prometheus_client.exposition import generate_latest
from werkzeug.wrappers import Response

METHODS = {"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"}
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


class HttpMetrics(DependencyProvider):
    def setup(self):
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "gateway_http_requests",
            "HTTP requests answered by the gateway, by method, route template and status.",
            ["method", "route", "status"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "gateway_http_request_duration_seconds",
            "Time to answer an HTTP request, by method and route template.",
            ["method", "route"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )

    def observe_http(self, method, route, status, seconds):
        method = method if method in METHODS else "OTHER"  # clients choose it: bound the labels
        self.requests.labels(method, route, str(status)).inc()
        self.latency.labels(method, route).observe(seconds)

    def response(self):
        return Response(generate_latest(self.registry), content_type=CONTENT_TYPE_LATEST)

    def get_dependency(self, worker_ctx):
        return self
