"""Run the whole system locally: check the broker, migrate, start every service.

    python -m scripts.run                # what `make run` does
    python -m scripts.run --migrate-only

Each service is its own `nameko run` process with its own YAML under config/.
With nothing set, they use SQLite files under var/ and RabbitMQ on localhost.
Per-process settings take the service's prefix here, because one shell starts
all three: USERS_WEB_SERVER_ADDRESS becomes the users process's
WEB_SERVER_ADDRESS (likewise ORDERS_, GATEWAY_); the database URIs are already
prefixed (USERS_DB_URI, ORDERS_DB_URI). Ctrl-C or SIGTERM stops them all.

The services run through ``python -m shared.cli run`` (``nameko run`` without
eventlet's deprecation banner, see shared.cli). This script's own lines are
plain text on stderr, or with ``LOG_FORMAT=json`` JSON lines like the services'.
A database or broker that refuses the configured credentials, or cannot be
reached, is named in one line (exit status 1), without a traceback.
"""

# ruff: noqa: E402  (the imports wait until quiet() has run)
from shared.cli import quiet

quiet()  # before the imports below bring in eventlet (see shared.cli)

import argparse
import importlib.util
import logging
import os
import shutil
import signal
import subprocess
import sys
import time
from urllib.parse import urlsplit, urlunsplit

from kombu import Connection

from shared.logs import tool_logger
from shared.migrate import is_refusal, load_config, refused, upgrade
from shared.services import SERVICES as ALL_SERVICES
from shared.settings import ConfigError

# (service, module, config); a service whose module does not exist yet is skipped
SERVICES = [(service.name, service.module, service.config) for service in ALL_SERVICES]
STOP_GRACE_SECONDS = 15
log = logging.getLogger("run")


def available_services():
    return [
        (name, module, config)
        for name, module, config in SERVICES
        if importlib.util.find_spec(module) is not None and os.path.exists(config)
    ]


def broker_reachable(amqp_uri, timeout=3):
    """True when RabbitMQ answers; raises ``Refused`` when it refuses the credentials."""
    try:
        with Connection(amqp_uri, connect_timeout=timeout) as connection:
            connection.ensure_connection(max_retries=1)
        return True
    except Exception as error:
        if is_refusal(error):
            raise refused(f"RabbitMQ at {hide_password(amqp_uri)}", error) from None
        return False


def ensure_broker(amqp_uri):
    """True when RabbitMQ answers; starts a local one that is installed but stopped."""
    if broker_reachable(amqp_uri):
        return True
    parts = urlsplit(amqp_uri)
    local_default = parts.hostname in ("localhost", "127.0.0.1") and parts.port in (None, 5672)
    server = shutil.which("rabbitmq-server")
    if local_default and server:
        log.info("RabbitMQ is installed but not running: starting it (rabbitmq-server -detached)")
        subprocess.run([server, "-detached"], check=False)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if broker_reachable(amqp_uri):
                return True
            time.sleep(1)
    return False


def hide_password(uri):
    """``uri`` with every password masked (each address of a failover list)."""
    return ";".join(_hide_one(part) for part in uri.split(";"))


def _hide_one(uri):
    parts = urlsplit(uri)
    if parts.password:
        return urlunsplit(parts._replace(netloc=parts.netloc.replace(parts.password, "***", 1)))
    return uri


def migrate(services):
    for _name, _module, config_path in services:
        config = load_config(config_path)
        if config.get("DB_URIS"):
            service_name, where = upgrade(config)
            log.info("%s: database at %s is up to date", service_name, where)


def process_env(name):
    env = dict(os.environ)
    env.pop("WEB_SERVER_ADDRESS", None)  # one address cannot serve three processes
    address = os.environ.get(f"{name.upper()}_WEB_SERVER_ADDRESS")
    if address:
        env["WEB_SERVER_ADDRESS"] = address
    return env


def start(services):
    """One ``nameko run`` process a service, through shared.cli (no eventlet banner)."""
    return {
        name: subprocess.Popen(
            [sys.executable, "-m", "shared.cli", "run", "--config", config, module],
            env=process_env(name),
        )
        for name, module, config in services
    }


def stop(processes):
    for process in processes.values():
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + STOP_GRACE_SECONDS
    for process in processes.values():
        try:
            process.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def supervise(processes):
    """Wait until a signal asks us to stop or a service dies; stop the rest."""
    stopping = []

    def on_signal(signum, _frame):
        stopping.append(signum)

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    log.info("running %s; Ctrl-C stops them", ", ".join(processes))
    while not stopping:
        dead = [name for name, process in processes.items() if process.poll() is not None]
        if dead:
            log.error("%s stopped unexpectedly; stopping the others", ", ".join(dead))
            stop(processes)
            return 1
        time.sleep(0.2)
    stop(processes)
    log.info("stopped")
    return 0


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--migrate-only", action="store_true")
    args = parser.parse_args(argv)
    tool_logger("run")

    services = available_services()
    try:
        migrate(services)
    except ConfigError as error:
        log.error("%s", error)
        return 1
    if args.migrate_only:
        return 0

    amqp_uri = load_config(services[0][2])["AMQP_URI"]
    try:
        reachable = ensure_broker(amqp_uri)
    except ConfigError as error:
        log.error("%s", error)
        return 1
    if not reachable:
        log.error(
            "RabbitMQ is not reachable at %s: start one "
            "(`docker run -d -p 5672:5672 -p 15672:15672 rabbitmq:3-management`, or install "
            "rabbitmq-server) or set AMQP_URI.",
            hide_password(amqp_uri),
        )
        return 1
    return supervise(start(services))


if __name__ == "__main__":
    sys.exit(main())
