"""Prometheus metrics: one registry per container, RED metrics for every entrypoint.

Why not nameko-prometheus (1.6.0, tried): its metrics live in the global
registry (two containers in one process collide), and a handler returning
bytes kills the service. This provider is small and keeps its own registry.

Every rpc, event, http and timer entrypoint is counted by outcome (``success``,
``expected_error`` for the exceptions it declares, ``error``) and timed. Labels
are bounded: the service and method names, never arguments or ids.
Other providers add their own metrics by defining ``register_metrics(registry)``
(the outbox adds its backlog), and services declare business metrics with
:func:`counter` specs.
"""

import time
from weakref import WeakKeyDictionary

from nameko.events import EventHandler
from nameko.extensions import DependencyProvider
from nameko.rpc import Rpc
from nameko.timer import Timer
from nameko.web.handlers import HttpRequestHandler
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Histogram,
    generate_latest,
)
from werkzeug.wrappers import Response

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)
ENTRYPOINT_TYPES = (
    (Rpc, "rpc"),
    (EventHandler, "event"),
    (HttpRequestHandler, "http"),
    (Timer, "timer"),
)


def counter(name, documentation, labels=()):
    return (Counter, name, documentation, tuple(labels))


def entrypoint_type(entrypoint):
    for cls, kind in ENTRYPOINT_TYPES:
        if isinstance(entrypoint, cls):
            return kind
    return "other"


def outcome_of(entrypoint, exc_info):
    if exc_info is None:
        return "success"
    expected = getattr(entrypoint, "expected_exceptions", ()) or ()
    return "expected_error" if isinstance(exc_info[1], expected) else "error"


class ServiceMetrics:
    """What a worker gets: the service's own metrics by name, and the scrape answer.

    ``self.metrics.users_registered.inc()``; ``return self.metrics.response()``.
    """

    def __init__(self, registry, metrics):
        self.registry = registry
        self.__dict__.update(metrics)

    def response(self):
        """The body of a ``/metrics`` route, in Prometheus text format."""
        return Response(generate_latest(self.registry), content_type=CONTENT_TYPE_LATEST)


class Metrics(DependencyProvider):
    """One registry per container; workers get a :class:`ServiceMetrics`."""

    def __init__(self, *specs):
        self.specs = specs

    def setup(self):
        self.registry = CollectorRegistry()
        labels = ["service", "entrypoint", "type"]
        self.calls = Counter(
            "entrypoint_calls_total",
            "Entrypoint calls, by outcome (success, expected_error, error)",
            [*labels, "outcome"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "entrypoint_duration_seconds",
            "Entrypoint latency",
            labels,
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.business = ServiceMetrics(
            self.registry,
            {
                name.removesuffix("_total"): kind(name, doc, labels, registry=self.registry)
                for kind, name, doc, labels in self.specs
            },
        )
        self.started = WeakKeyDictionary()

    def start(self):
        for dependency in self.container.extensions:
            register = getattr(dependency, "register_metrics", None)
            if register is not None and dependency is not self:
                register(self.registry)

    def get_dependency(self, worker_ctx):
        return self.business

    def worker_setup(self, worker_ctx):
        self.started[worker_ctx] = time.perf_counter()

    def worker_result(self, worker_ctx, result=None, exc_info=None):
        started = self.started.pop(worker_ctx, None)
        entrypoint = worker_ctx.entrypoint
        labels = (self.container.service_name, entrypoint.method_name, entrypoint_type(entrypoint))
        self.calls.labels(*labels, outcome_of(entrypoint, exc_info)).inc()
        if started is not None:
            self.latency.labels(*labels).observe(time.perf_counter() - started)
