"""Wait for RabbitMQ and the services' databases, then apply their migrations.

    python -m scripts.wait_and_migrate config/users.yaml config/orders.yaml
    python -m scripts.wait_and_migrate --wait-only config/users.yaml

The first form is the migration step of docker-compose.yml (its ``migrate``
service) and of the Kubernetes migration Job: it waits until the broker and
each database named by the configs answer, then upgrades each database to its
newest migration. ``--wait-only`` changes nothing: it waits until the broker and
database answer and the database is at the newest migration (that is, until the
Job has run), which is how a Kubernetes pod's init container holds the service
back. A config without ``DB_URIS`` (the gateway's) only waits for the broker.

Every wait is bounded: it retries with a growing pause (up to
``WAIT_MAX_INTERVAL`` seconds) and gives up after ``WAIT_TIMEOUT`` seconds
(default 120) with one line naming what did not answer, exit status 1. A server
that answers but refuses the credentials or names in its URI (PostgreSQL's
"password authentication failed", a role or database that does not exist,
RabbitMQ's ACCESS_REFUSED or an unknown vhost) ends the wait at once with one
line naming the refusal, exit status 1: retrying cannot fix a wrong password.
The URIs come from the same YAML and environment the services run with.

Its lines are plain text, or with ``LOG_FORMAT=json`` the JSON lines the
services write; eventlet's deprecation banner is not shown.
"""

# ruff: noqa: E402  (the imports wait until quiet() has run)
from shared.cli import quiet

quiet()  # before the imports below bring in eventlet (see shared.cli)

import argparse
import logging
import os
import sys
import time

from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from kombu import Connection
from sqlalchemy import text
from sqlalchemy.engine import make_url

from scripts.run import hide_password
from shared.db import engine_for
from shared.logs import tool_logger
from shared.migrate import (
    Refused,
    alembic_config,
    database_uri,
    describe,
    is_refusal,
    load_config,
    refused,
    service_name_of,
    upgrade,
)
from shared.settings import ConfigError

DEFAULT_TIMEOUT = 120.0
DEFAULT_MAX_INTERVAL = 5.0
FIRST_INTERVAL = 0.5
CONNECT_TIMEOUT = 5


log = logging.getLogger("wait_and_migrate")


class NotReady(Exception):
    """A dependency did not answer within the bounded wait."""


def env_seconds(name, default):
    value = os.environ.get(name, "")
    try:
        seconds = float(value) if value else default
    except ValueError:
        raise ConfigError(f"{name} must be a number of seconds, got {value!r}") from None
    if seconds <= 0:
        raise ConfigError(f"{name} must be a positive number of seconds, got {value!r}")
    return seconds


def wait_for(what, check, timeout, max_interval, sleep=time.sleep, clock=time.monotonic):
    """Call ``check()`` until it returns without raising, for at most ``timeout`` seconds.

    Raises :class:`NotReady` when time is up, and :class:`shared.migrate.Refused`
    at once when the server refused the credentials or names it was given.
    """
    deadline = clock() + timeout
    interval = FIRST_INTERVAL
    attempt = 0
    while True:
        attempt += 1
        try:
            check()
            if attempt > 1:
                log.info("%s: ready after %d attempts", what, attempt)
            return
        except Exception as error:
            if is_refusal(error):
                raise refused(what, error) from None
            remaining = deadline - clock()
            if remaining <= 0:
                raise NotReady(f"{what} not ready after {timeout:g} s: {describe(error)}") from None
            log.info("%s: not ready (%s); retrying in %g s", what, describe(error), interval)
            sleep(min(interval, remaining))
            interval = min(interval * 2, max_interval)


def check_broker(amqp_uri):
    with Connection(amqp_uri, connect_timeout=CONNECT_TIMEOUT) as connection:
        connection.ensure_connection(max_retries=1)


def database_heads(service_name, db_uri):
    """(the database's current revisions, the newest revisions the code ships)."""
    script = ScriptDirectory.from_config(alembic_config(service_name, db_uri))
    engine = engine_for(db_uri)
    try:
        with engine.connect() as connection:
            connection.execute(text("SELECT 1"))
            current = set(MigrationContext.configure(connection).get_current_heads())
    finally:
        engine.dispose()
    return current, set(script.get_heads())


def check_schema(service_name, db_uri, at_head):
    def check():
        current, heads = database_heads(service_name, db_uri)
        if at_head and current != heads:
            raise NotReady(
                f"migrations not applied yet (at {sorted(current) or 'none'}, "
                f"newest {sorted(heads)})"
            )

    return check


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("configs", nargs="+", help="the services' YAML configs")
    parser.add_argument(
        "--wait-only",
        action="store_true",
        help="migrate nothing; wait until the databases are at the newest migration",
    )
    args = parser.parse_args(argv)
    tool_logger("migrate")
    try:
        timeout = env_seconds("WAIT_TIMEOUT", DEFAULT_TIMEOUT)
        max_interval = env_seconds("WAIT_MAX_INTERVAL", DEFAULT_MAX_INTERVAL)
        configs = [load_config(path) for path in args.configs]

        for amqp_uri in dict.fromkeys(config["AMQP_URI"] for config in configs):
            wait_for(
                f"RabbitMQ at {hide_password(amqp_uri)}",
                lambda uri=amqp_uri: check_broker(uri),
                timeout,
                max_interval,
            )

        for config in configs:
            if not config.get("DB_URIS"):
                continue
            service_name = service_name_of(config)
            db_uri = database_uri(config, service_name)
            where = make_url(db_uri).render_as_string(hide_password=True)
            wait_for(
                f"{service_name} database at {where}",
                check_schema(service_name, db_uri, at_head=args.wait_only),
                timeout,
                max_interval,
            )
            if not args.wait_only:
                service_name, where = upgrade(config)
                log.info("%s: database at %s is up to date", service_name, where)
    except (ConfigError, NotReady) as error:
        log.error("%s", error, extra={"refused": isinstance(error, Refused)})
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
