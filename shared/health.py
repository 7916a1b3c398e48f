"""Liveness, readiness and metrics, answered the same way by every service with a database."""

import json

from nameko.web.handlers import http
from sqlalchemy import text
from werkzeug.wrappers import Response

from shared.rpc import rpc


def database_ok(session):
    """True if the database answers a trivial query."""
    try:
        session.execute(text("SELECT 1"))
        return True
    except Exception:
        session.rollback()
        return False


def health_report(service_name, session):
    database = database_ok(session)
    return {
        "service": service_name,
        "status": "ok" if database else "degraded",
        "checks": {"database": "ok" if database else "unreachable"},
    }


def json_response(body, status=200):
    return Response(json.dumps(body), status=status, mimetype="application/json")


class OperationalEndpoints:
    """Mixin for a service with ``db`` and ``metrics`` dependencies.

    RPC ``health()``; HTTP ``/health`` (liveness: the process serves, and a
    database outage is no reason to restart it), ``/ready`` (readiness: the
    database answers) and ``/metrics`` (Prometheus text) on WEB_SERVER_ADDRESS.
    """

    @rpc
    def health(self):
        return health_report(self.name, self.db.session)

    @http("GET", "/health")
    def http_health(self, request):
        return json_response({"service": self.name, "status": "ok"})

    @http("GET", "/ready")
    def http_ready(self, request):
        report = health_report(self.name, self.db.session)
        return json_response(report, 200 if report["status"] == "ok" else 503)

    @http("GET", "/metrics")
    def http_metrics(self, request):
        return self.metrics.response()
