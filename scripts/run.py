"""Run the whole system locally: check the broker, migrate, start every service.

    python -m scripts.run                # what `make run` does
    python -m scripts.run --migrate-only

Each service is its own `nameko run` process with its own YAML under config/.
With nothing set, they use SQLite files under var/ and RabbitMQ on localhost.
Per-process settings take the service's prefix here, because one shell starts
all three: USERS_WEB_SERVER_ADDRESS becomes the users process's
WEB_SERVER_ADDRESS (likewise ORDERS_, GATEWAY_); the database URIs are already
prefixed (USERS_DB_URI, ORDERS_DB_URI). Ctrl-C or SIGTERM stops them all.
"""

import argparse
import importlib.util
import os
import shutil
import signal
import subprocess
import sys
import time
from urllib.parse import urlsplit, urlunsplit

from kombu import Connection

from shared.config import ConfigError
from shared.migrate import load_config, upgrade

# (service, module, config); a service whose module does not exist yet is skipped
SERVICES = [
    ("users", "users.service", "config/users.yaml"),
    ("orders", "orders.service", "config/orders.yaml"),
    ("gateway", "gateway.service", "config/gateway.yaml"),
]
STOP_GRACE_SECONDS = 15


def available_services():
    return [
        (name, module, config)
        for name, module, config in SERVICES
        if importlib.util.find_spec(module) is not None and os.path.exists(config)
    ]


def broker_reachable(amqp_uri, timeout=3):
    try:
        with Connection(amqp_uri, connect_timeout=timeout) as connection:
            connection.ensure_connection(max_retries=1)
        return True
    except Exception:
        return False


def ensure_broker(amqp_uri):
    """True when RabbitMQ answers; starts a local one that is installed but stopped."""
    if broker_reachable(amqp_uri):
        return True
    parts = urlsplit(amqp_uri)
    local_default = parts.hostname in ("localhost", "127.0.0.1") and parts.port in (None, 5672)
    server = shutil.which("rabbitmq-server")
    if local_default and server:
        print("RabbitMQ is installed but not running: starting it (rabbitmq-server -detached)")
        subprocess.run([server, "-detached"], check=False)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if broker_reachable(amqp_uri):
                return True
            time.sleep(1)
    return False


def hide_password(uri):
    parts = urlsplit(uri)
    if parts.password:
        return urlunsplit(parts._replace(netloc=parts.netloc.replace(parts.password, "***", 1)))
    return uri


def migrate(services):
    for _name, _module, config_path in services:
        config = load_config(config_path)
        if config.get("DB_URIS"):
            service_name, where = upgrade(config)
            print(f"{service_name}: database at {where} is up to date")


def process_env(name):
    env = dict(os.environ)
    env.pop("WEB_SERVER_ADDRESS", None)  # one address cannot serve three processes
    address = os.environ.get(f"{name.upper()}_WEB_SERVER_ADDRESS")
    if address:
        env["WEB_SERVER_ADDRESS"] = address
    return env


def start(services):
    nameko = os.path.join(os.path.dirname(sys.executable), "nameko")
    return {
        name: subprocess.Popen([nameko, "run", "--config", config, module], env=process_env(name))
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
    print(f"running {', '.join(processes)}; Ctrl-C stops them", flush=True)
    while not stopping:
        dead = [name for name, process in processes.items() if process.poll() is not None]
        if dead:
            print(f"{', '.join(dead)} stopped unexpectedly; stopping the others", flush=True)
            stop(processes)
            return 1
        time.sleep(0.2)
    stop(processes)
    print("stopped", flush=True)
    return 0


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--migrate-only", action="store_true")
    args = parser.parse_args(argv)

    services = available_services()
    try:
        migrate(services)
    except ConfigError as error:
        sys.exit(str(error))
    if args.migrate_only:
        return 0

    amqp_uri = load_config(services[0][2])["AMQP_URI"]
    if not ensure_broker(amqp_uri):
        sys.exit(
            f"RabbitMQ is not reachable at {hide_password(amqp_uri)}: start one "
            "(`docker run -d -p 5672:5672 -p 15672:15672 rabbitmq:3-management`, or install "
            "rabbitmq-server) or set AMQP_URI."
        )
    return supervise(start(services))


if __name__ == "__main__":
    sys.exit(main())
