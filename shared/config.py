"""Start-up validation of a service's config.

nameko loads the YAML (with ``${ENV:default}`` placeholders); this module checks
what it loaded once, before any entrypoint runs, and refuses to start with one
message that names every key to fix and the environment variable that sets it.
"""

import logging

from nameko.extensions import DependencyProvider
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError

from shared.queues import check_queue_type

LOG_FORMATS = ("json", "text")
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")


class ConfigError(Exception):
    """The config cannot run a service; the message says what to set."""


def db_uri_key(service_name):
    """The ``DB_URIS`` key nameko-sqlalchemy reads for a service's ``Base``."""
    return f"{service_name}:Base"


def check_common(config, service_name):
    """Problems with the keys every service reads, as a list of sentences."""
    problems = []
    amqp_uri = config.get("AMQP_URI")
    if not isinstance(amqp_uri, str) or not amqp_uri.startswith(
        ("amqp://", "amqps://", "pyamqp://")
    ):
        problems.append(f"AMQP_URI must be an amqp:// URI, got {amqp_uri!r}: set AMQP_URI")

    address = str(config.get("WEB_SERVER_ADDRESS", ""))
    host, _, port = address.rpartition(":")
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
        problems.append(
            f"WEB_SERVER_ADDRESS must be host:port, got {address!r}: set WEB_SERVER_ADDRESS"
        )

    if config.get("LOG_FORMAT", "text") not in LOG_FORMATS:
        problems.append(f"LOG_FORMAT must be one of {', '.join(LOG_FORMATS)}: set LOG_FORMAT")
    if str(config.get("LOG_LEVEL", "INFO")).upper() not in LOG_LEVELS:
        problems.append(f"LOG_LEVEL must be one of {', '.join(LOG_LEVELS)}: set LOG_LEVEL")

    problems += check_queue_type(config, service_name)

    timeout = config.get("RPC_TIMEOUT", 5)
    if not isinstance(timeout, int | float) or isinstance(timeout, bool) or timeout <= 0:
        problems.append(f"RPC_TIMEOUT must be a positive number of seconds, got {timeout!r}")
    return problems


def check_database(config, service_name):
    """Problems with the service's entry in ``DB_URIS``."""
    key = db_uri_key(service_name)
    env_name = f"{service_name.upper()}_DB_URI"
    uri = (config.get("DB_URIS") or {}).get(key)
    if not uri:
        return [f"DB_URIS['{key}'] is missing: set {env_name}"]
    try:
        make_url(uri)
    except ArgumentError:
        return [f"DB_URIS['{key}'] is not a database URL: set {env_name}"]
    return []


def check_positive_ints(config, *keys):
    return [
        f"{key} must be a positive whole number, got {config[key]!r}: set {key}"
        for key in keys
        if key in config and (not isinstance(config[key], int) or config[key] <= 0)
    ]


def validate(config, service_name, checks=(check_common,)):
    """Raise ``ConfigError`` naming every problem the ``checks`` find."""
    problems = [problem for check in checks for problem in check(config, service_name)]
    if problems:
        lines = "\n".join(f"  - {problem}" for problem in problems)
        raise ConfigError(f"config error in the {service_name} service:\n{lines}")


class ConfigCheck(DependencyProvider):
    """Validates the container's config in ``setup``, before anything connects.

    A bad config ends the process with the message alone (``SystemExit``), not a
    traceback: the operator needs to know what to set, not where we noticed.
    """

    def __init__(self, *checks):
        self.checks = (check_common, *checks)

    def setup(self):
        try:
            validate(self.container.config, self.container.service_name, self.checks)
        except ConfigError as error:
            logging.getLogger(__name__).critical("%s", error)
            raise SystemExit(1) from None  # the message is logged: one line, JSON if asked

    def get_dependency(self, worker_ctx):
        return self.container.config
