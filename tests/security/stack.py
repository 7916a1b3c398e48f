"""The real system for the fuzzing and attack tests: ``nameko run`` processes on PostgreSQL.

PostgreSQL, not SQLite, because it is what production runs and it is the
stricter of the two with odd input (it refuses NUL characters in text, for one).
A private vhost and throwaway databases per module; the services log JSON to
files the tests read (a password must never show in them).
"""

import contextlib
import uuid

import requests
from nameko.standalone.rpc import ClusterRpcProxy

from tests.conftest import POSTGRES_URL, PostgresDatabases
from tests.fault.harness import System
from tests.system.processes import JWT_SECRET

# these tests break nothing, so they run on the machine's broker, in a vhost of their own
AMQP_BASE = "amqp://guest:guest@127.0.0.1:5672"
MANAGEMENT_URL = "http://127.0.0.1:15672/api"
GUEST = ("guest", "guest")

PASSWORD = "correct horse battery"

__all__ = ["JWT_SECRET", "PASSWORD", "Stack", "running_stack"]


class Stack:
    """A running system, with an HTTP helper and an RPC client to make admins."""

    def __init__(self, system, vhost):
        self.system = system
        self.vhost = vhost
        self.api = system.api
        self.http = requests.Session()

    def call(self, method, path, token=None, **kwargs):
        headers = kwargs.pop("headers", {})
        if token:
            headers["Authorization"] = f"Bearer {token}"
        return self.http.request(method, self.api + path, headers=headers, timeout=15, **kwargs)

    def register(self, email=None, name="Ann", password=PASSWORD):
        email = email or f"{uuid.uuid4().hex[:12]}@example.com"
        response = self.call(
            "POST", "/v1/users", json={"email": email, "name": name, "password": password}
        )
        assert response.status_code == 201, response.text
        return response.json()

    def login(self, email, password=PASSWORD):
        response = self.call("POST", "/v1/auth/token", json={"email": email, "password": password})
        assert response.status_code == 200, response.text
        return response.json()

    def user(self, password=PASSWORD):
        """A registered, logged-in user: ``(user, token pair)``."""
        user = self.register(password=password)
        return user, self.login(user["email"], password)

    def admin(self):
        """An admin (made over RPC, as the README says), logged in: ``(user, token pair)``."""
        email = f"admin-{uuid.uuid4().hex[:10]}@example.com"
        config = {"AMQP_URI": self.vhost.amqp_uri}
        with ClusterRpcProxy(config, timeout=15) as rpc:
            user = rpc.users.create_user(email, "Admin", PASSWORD, role="admin")
        return user, self.login(email)

    def logs(self):
        return self.system.logs()


class Vhost:
    """A throwaway vhost on the machine's RabbitMQ, made and deleted through its management API."""

    def __init__(self):
        self.name = f"security-{uuid.uuid4().hex[:10]}"
        self.amqp_uri = f"{AMQP_BASE}/{self.name}"

    def create(self):
        requests.put(
            f"{MANAGEMENT_URL}/vhosts/{self.name}", auth=GUEST, timeout=10
        ).raise_for_status()
        requests.put(
            f"{MANAGEMENT_URL}/permissions/{self.name}/guest",
            json={"configure": ".*", "write": ".*", "read": ".*"},
            auth=GUEST,
            timeout=10,
        ).raise_for_status()
        return self

    def delete(self):
        with contextlib.suppress(requests.RequestException):
            requests.delete(f"{MANAGEMENT_URL}/vhosts/{self.name}", auth=GUEST, timeout=10)


@contextlib.contextmanager
def running_stack(log_dir):
    vhost = Vhost().create()
    databases = PostgresDatabases(POSTGRES_URL)
    system = None
    try:
        uris = {name: databases.get(name) for name in ("users", "orders")}
        system = System(log_dir, vhost, uris)
        system.start()
        yield Stack(system, vhost)
    finally:
        if system is not None:
            system.stop()
        with contextlib.suppress(Exception):
            databases.drop_all()
        vhost.delete()
