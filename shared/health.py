"""Liveness and readiness answers that every service gives the same way."""

import json

from sqlalchemy import text
from werkzeug.wrappers import Response


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
