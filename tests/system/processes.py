"""The services as real processes (`nameko run`), started the way an operator starts them.

Each :class:`ServiceProcess` writes its output to a file the test can read,
and can be stopped politely (SIGTERM), killed (SIGKILL) and started again.
"""

import os
import signal
import subprocess
import sys

from nameko.testing.utils import find_free_port

from tests.helpers import wait_for_ok

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
NAMEKO = os.path.join(os.path.dirname(sys.executable), "nameko")
JWT_SECRET = "a-test-secret-that-is-long-enough-0123456789"


class ServiceProcess:
    def __init__(self, name, env, log_dir, module=None, config=None, port=None):
        self.name = name
        self.module = module or f"{name}.service"
        self.config = config or f"config/{name}.yaml"
        self.port = port or find_free_port()
        self.env = {**env, "WEB_SERVER_ADDRESS": f"127.0.0.1:{self.port}"}
        self.log_path = os.path.join(log_dir, f"{name}-{self.port}.log")
        self.process = None

    @property
    def url(self):
        return f"http://127.0.0.1:{self.port}"

    def start(self, wait=True):
        log = open(self.log_path, "a")
        self.process = subprocess.Popen(
            [NAMEKO, "run", "--config", self.config, self.module],
            env=self.env,
            cwd=ROOT,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        log.close()
        if wait:
            self.wait_healthy()
        return self

    def wait_healthy(self, timeout=30):
        wait_for_ok(f"{self.url}/health", self.process, timeout, lambda: self.log()[-3000:])

    def stop(self, sig=signal.SIGTERM, timeout=20):
        if self.process is None or self.process.poll() is not None:
            return
        self.process.send_signal(sig)
        try:
            self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()

    def kill(self):
        self.stop(signal.SIGKILL)

    def log(self):
        with open(self.log_path) as log:
            return log.read()


def system_env(amqp_uri, tmp_path, **extra):
    """The environment of the three services on SQLite files and a private vhost."""
    return {
        **os.environ,
        "AMQP_URI": amqp_uri,
        "USERS_DB_URI": f"sqlite:///{tmp_path}/users.sqlite3",
        "ORDERS_DB_URI": f"sqlite:///{tmp_path}/orders.sqlite3",
        "JWT_SECRET": JWT_SECRET,
        "ENVIRONMENT": "test",
        "PASSWORD_HASH_MEMORY_KIB": "1024",
        "PASSWORD_HASH_TIME_COST": "1",
        "OUTBOX_SWEEP_SECONDS": "1",
        "PYTHONWARNINGS": "ignore",
        **extra,
    }


def migrate(env):
    subprocess.run(
        [sys.executable, "-m", "scripts.run", "--migrate-only"],
        env=env,
        cwd=ROOT,
        check=True,
        capture_output=True,
        timeout=120,
    )
