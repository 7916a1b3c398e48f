"""Log setup: one JSON object a line (``LOG_FORMAT=json``) or readable text.

Each record carries the service name, the ``request_id`` that came in with the
call (the gateway's, travelling in nameko's context data) and nameko's call id,
so one request can be followed across processes. The YAML's ``LOGGING`` section
wires :class:`ContextFilter` and :func:`formatter`; ``nameko run`` applies it.
"""

import contextvars
import json
import logging
import time

from nameko.extensions import DependencyProvider

REQUEST_ID_KEY = "request_id"

_call = contextvars.ContextVar("nameko_call", default=None)

# fields of a LogRecord that are not the caller's ``extra=``
_STANDARD = set(vars(logging.makeLogRecord({}))) | {"message", "asctime", "service"}


class ContextFilter(logging.Filter):
    """Stamps every record with the service name and the current call's ids."""

    def __init__(self, service="", name=""):
        super().__init__(name)
        self.service = service

    def filter(self, record):
        call = _call.get()
        record.service = self.service
        record.request_id = call["request_id"] if call else None
        record.call_id = call["call_id"] if call else None
        return True


class JsonFormatter(logging.Formatter):
    def format(self, record):
        entry = {
            "time": self.formatTime(record, "%Y-%m-%dT%H:%M:%S") + f".{int(record.msecs):03d}Z",
            "level": record.levelname,
            "service": getattr(record, "service", ""),
            "logger": record.name,
            "message": record.getMessage(),
        }
        for key, value in vars(record).items():
            if key not in _STANDARD and not key.startswith("_"):
                entry[key] = value
        if record.exc_info:
            entry["exc_info"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str)


JsonFormatter.converter = time.gmtime

TEXT_FORMAT = "%(asctime)s %(levelname)-7s %(service)s %(name)s [%(request_id)s] %(message)s"


def formatter(format="text"):
    """Factory for ``LOGGING`` in the YAML: ``format`` is ``LOG_FORMAT``."""
    if format == "json":
        return JsonFormatter()
    return logging.Formatter(TEXT_FORMAT)


def current_request_id():
    call = _call.get()
    return call["request_id"] if call else None


class LoggingContext(DependencyProvider):
    """Puts the call's ``request_id`` and call id where :class:`ContextFilter` finds them.

    Each nameko worker runs in its own greenlet, and each greenlet has its own
    ``contextvars`` context, so calls never see each other's ids. A call that
    arrives without a ``request_id`` (``nameko shell``, a timer) uses its call id.
    """

    def worker_setup(self, worker_ctx):
        call_id = worker_ctx.call_id
        request_id = worker_ctx.data.get(REQUEST_ID_KEY) or call_id
        worker_ctx.data[REQUEST_ID_KEY] = request_id
        _call.set({"request_id": request_id, "call_id": call_id})

    def worker_teardown(self, worker_ctx):
        _call.set(None)
