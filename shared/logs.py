"""Log setup: one JSON object a line (``LOG_FORMAT=json``) or readable text.

Each record carries the service name, the ``request_id`` that came in with the
call (the gateway's, travelling in nameko's context data) and nameko's call id,
so one request can be followed across processes. The YAML's ``LOGGING`` section
wires :class:`ContextFilter` and :func:`formatter`; ``nameko run`` applies it.
"""

import contextvars
import json
import logging
import os
import sys
import time
from weakref import WeakKeyDictionary

from nameko.extensions import DependencyProvider

from shared.metrics import entrypoint_type, outcome_of

REQUEST_ID_KEY = "request_id"

# no format of ours shows them, and under eventlet finding the current thread
# for every record was a third of a log line's cost
logging.logThreads = False
logging.logProcesses = False
logging.logMultiprocessing = False

_call = contextvars.ContextVar("nameko_call", default=None)
calls_log = logging.getLogger("calls")

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


def tool_logger(service):
    """Log setup of a command-line tool (migrations, ``make run``): its lines and warnings.

    With ``LOG_FORMAT=json`` every record, and every warning (through
    ``logging.captureWarnings``), is one JSON line like the services' own, with
    ``service`` set to ``service``; otherwise a record is its bare message.
    INFO goes to stdout, WARNING and worse to stderr. The tool's own loggers
    show INFO; alembic, amqp and kombu only WARNING and worse.
    """
    json_lines = os.environ.get("LOG_FORMAT") == "json"
    handlers = []
    for stream, wanted in ((sys.stdout, _BelowWarning()), (sys.stderr, None)):
        handler = logging.StreamHandler(stream)
        handler.addFilter(ContextFilter(service))
        if wanted:
            handler.addFilter(wanted)
        else:
            handler.setLevel(logging.WARNING)
        handler.setFormatter(JsonFormatter() if json_lines else logging.Formatter("%(message)s"))
        handlers.append(handler)
    root = logging.getLogger()
    root.handlers[:] = handlers
    root.setLevel(logging.INFO)
    for library in ("alembic", "amqp", "kombu"):
        logging.getLogger(library).setLevel(logging.WARNING)
    logging.captureWarnings(True)


class _BelowWarning(logging.Filter):
    def filter(self, record):
        return record.levelno < logging.WARNING


def current_request_id():
    call = _call.get()
    return call["request_id"] if call else None


class LoggingContext(DependencyProvider):
    """Puts the call's ``request_id`` and call id where :class:`ContextFilter` finds them.

    Each nameko worker runs in its own greenlet, and each greenlet has its own
    ``contextvars`` context, so calls never see each other's ids. A call that
    arrives without a ``request_id`` (``nameko shell``, a timer) uses its call id.
    It also logs each call once: entrypoint, outcome and duration.
    """

    def setup(self):
        self.started = WeakKeyDictionary()

    def worker_setup(self, worker_ctx):
        self.started[worker_ctx] = time.perf_counter()
        call_id = worker_ctx.call_id
        request_id = worker_ctx.data.get(REQUEST_ID_KEY) or call_id
        worker_ctx.data[REQUEST_ID_KEY] = request_id
        _call.set({"request_id": request_id, "call_id": call_id})

    def worker_result(self, worker_ctx, result=None, exc_info=None):
        started = self.started.pop(worker_ctx, None)
        entrypoint = worker_ctx.entrypoint
        outcome = outcome_of(entrypoint, exc_info)
        duration_ms = round((time.perf_counter() - started) * 1000, 2) if started else None
        level = logging.ERROR if outcome == "error" else logging.INFO
        calls_log.log(
            level,
            "%s %s.%s %s in %s ms",
            entrypoint_type(entrypoint),
            worker_ctx.service_name,
            entrypoint.method_name,
            outcome,
            duration_ms,
            extra={
                "entrypoint": f"{worker_ctx.service_name}.{entrypoint.method_name}",
                "duration_ms": duration_ms,
                "outcome": outcome,
                **({"error": type(exc_info[1]).__name__} if exc_info else {}),
            },
        )

    def worker_teardown(self, worker_ctx):
        _call.set(None)


class DropExpectedErrorTracebacks(logging.Filter):
    """nameko logs every expected exception (a client's mistake) with a traceback.

    :class:`LoggingContext` already logs each call once with its outcome, so the
    traceback is noise; real errors keep theirs.
    """

    def filter(self, record):
        return not str(record.msg).startswith("(expected) error handling worker")
