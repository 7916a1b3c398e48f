"""The real system on PostgreSQL under a mixed client load, and the faults it must survive.

Used by ``tests/fault/test_faults.py`` (a short run inside ``make test``) and by
``tests/fault/run.py`` (``make fault``, every fault). Nothing here is faked:
the services are ``nameko run`` processes (:mod:`tests.system.processes`) on a
RabbitMQ node and a PostgreSQL cluster that the run starts for itself
(:mod:`tests.private_servers`) and wipes at the end; the faults are SIGKILLs
and real restarts of those private servers and of the services. This machine's
own RabbitMQ and PostgreSQL are never touched (other work uses them). Every
wait has a deadline.

The promises checked after recovery (:meth:`FaultRun.verify`):

- every order a client saw acknowledged (201/200) exists exactly once, as that
  client's, and no (user, Idempotency-Key) has two orders;
- every user's ``order_count`` equals their number of orders (no event lost or
  applied twice), within a bounded wait;
- no unsent outbox row, no message in a dead-letter queue;
- each service serves again (``/ready``) within :data:`RECOVERY_PROMISE`
  seconds of its dependency returning, with no manual restart.
"""

import collections
import os
import random
import signal
import subprocess
import threading
import time
import uuid
from urllib.parse import quote

import requests
from kombu import Connection
from sqlalchemy import text

from shared.db import engine_for
from tests.conftest import PostgresDatabases
from tests.private_servers import GUEST, PrivatePostgres, PrivateRabbit
from tests.system.processes import ServiceProcess, migrate, system_env

PASSWORD = "correct horse battery"
ITEMS = [{"sku": "FAULT-1", "quantity": 2, "unit_price": "19.99"}]
RECOVERY_PROMISE = 10.0  # seconds from a dependency's return to serving again
REQUEST_TIMEOUT = 10.0  # a client's patience with one HTTP request
RETRY_BUDGET = 60.0  # how long a client keeps retrying one logical request
SERVICE_CLASSES = {
    "users": "users.service:UsersService",
    "orders": "orders.service:OrdersService",
    "gateway": "gateway.service:GatewayService",
}


# --- infrastructure ---------------------------------------------------------------------------


class Vhost:
    """A vhost on the run's private RabbitMQ, made and read through its management API."""

    def __init__(self, rabbits):
        # one node, or the nodes of a cluster (the first is the one first asked)
        self.rabbits = rabbits if isinstance(rabbits, list | tuple) else [rabbits]
        self.rabbit = self.rabbits[0]
        self.name = f"fault-{uuid.uuid4().hex[:10]}"

    @property
    def amqp_uri(self):
        """One URI, or a failover list (``uri1;uri2;...``) when there are several nodes."""
        return ";".join(rabbit.amqp_uri(self.name) for rabbit in self.rabbits)

    def _api(self, method, path, **kwargs):
        # any live node's management API answers for the whole cluster
        error = None
        for rabbit in self.rabbits:
            try:
                response = requests.request(
                    method, f"{rabbit.management_url}/api/{path}", auth=GUEST, timeout=10, **kwargs
                )
            except requests.RequestException as failure:
                error = failure
                continue
            response.raise_for_status()
            return response
        raise error

    def queue_leader(self, queue):
        """The node that holds ``queue`` (a quorum queue's leader)."""
        info = self._api(
            "GET", f"queues/{quote(self.name, safe='')}/{quote(queue, safe='')}"
        ).json()
        return info.get("leader") or info.get("node")

    def create(self):
        self._api("PUT", f"vhosts/{quote(self.name, safe='')}")
        self._api(
            "PUT",
            f"permissions/{quote(self.name, safe='')}/guest",
            json={"configure": ".*", "write": ".*", "read": ".*"},
        )
        return self

    def queue_names(self):
        return [q["name"] for q in self._api("GET", f"queues/{quote(self.name, safe='')}").json()]

    def message_counts(self, names):
        """Exact ready-message counts (a passive declare: no stale management statistics)."""
        counts = {}
        with Connection(self.amqp_uri, connect_timeout=5) as connection:
            channel = connection.channel()
            for name in names:
                counts[name] = channel.queue_declare(name, passive=True).message_count
        return counts


# --- the system -------------------------------------------------------------------------------


class System:
    """users, one or two orders instances and the gateway as ``nameko run`` processes."""

    def __init__(self, log_dir, vhost, db_uris, replicas=1, **extra_env):
        self.log_dir = str(log_dir)
        self.env = system_env(
            vhost.amqp_uri,
            self.log_dir,
            USERS_DB_URI=db_uris["users"],
            ORDERS_DB_URI=db_uris["orders"],
            LOG_FORMAT="json",
            RPC_TIMEOUT="3",
            EVENT_RETRY_DELAY="1",
            EVENT_MAX_RETRIES="4",
            **extra_env,
        )
        self.users = self.process("users")
        # more users replicas beside the one the faults address by name
        self.more_users = [self.process("users") for _ in range(replicas - 1)]
        self.orders = [self.process("orders") for _ in range(replicas)]
        self.gateway = self.process("gateway")

    def process(self, name):
        # the class named: `nameko run <module>` refuses a module with two service-like classes
        return ServiceProcess(name, self.env, self.log_dir, module=SERVICE_CLASSES[name])

    @property
    def api(self):
        return self.gateway.url

    @property
    def processes(self):
        return [self.users, *self.more_users, *self.orders, self.gateway]

    def start(self):
        migrate(self.env)
        for process in self.processes:
            process.start(wait=False)
        for process in self.processes:
            process.wait_healthy(timeout=60)
        # /health answers before a service consumes its RPC queue; /ready means it does
        assert self.seconds_until_ready(time.monotonic(), timeout=30) is not None, "never ready"

    def stop(self, timeout=20):
        """SIGTERM to every process at once (they shut down side by side), SIGKILL stragglers."""
        running = [p.process for p in self.processes if p.process and p.process.poll() is None]
        for process in running:
            process.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + timeout
        for process in running:
            try:
                process.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()

    def add_orders_instance(self):
        instance = self.process("orders").start()
        self.orders.append(instance)
        return instance

    def ready(self):
        """Every process answers /ready with 200 (the gateway's asks users and orders over RPC)."""
        for process in self.processes:
            if process.process is None or process.process.poll() is not None:
                return False
            try:
                if requests.get(f"{process.url}/ready", timeout=2).status_code != 200:
                    return False
            except requests.RequestException:
                return False
        return True

    def seconds_until_ready(self, since, timeout=60):
        """Seconds from ``since`` (monotonic) until :meth:`ready`; None if not in ``timeout``."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.ready():
                return time.monotonic() - since
            time.sleep(0.1)
        return None

    def logs(self):
        text_ = ""
        for name in sorted(os.listdir(self.log_dir)):
            if name.endswith(".log"):
                with open(os.path.join(self.log_dir, name), errors="replace") as log:
                    text_ += log.read()
        return text_


# --- the load ---------------------------------------------------------------------------------


class Stats:
    """What the clients did and saw, shared by every client thread."""

    def __init__(self):
        self.lock = threading.Lock()
        self.requests = 0
        self.retries = 0
        self.statuses = collections.Counter()
        self.failures = collections.Counter()  # connection errors and timeouts by kind
        self.acknowledged = {}  # (user_id, key) -> order id the client was given
        self.replays_differing = []  # a retried key that came back as another order
        self.gave_up = []  # logical requests still failing after RETRY_BUDGET
        self.missing_reads = []  # an acknowledged order that a read did not find
        self.unexpected = []  # 4xx answers a correct client should never get
        self.cancelled = set()
        self.longest_request = 0.0

    def note(self, **counts):
        with self.lock:
            for name, value in counts.items():
                setattr(self, name, getattr(self, name) + value)


RETRYABLE_STATUSES = {500, 502, 503, 504}


class Client(threading.Thread):
    """One user of the API: registers, logs in, then creates, reads and cancels orders.

    Every logical request is retried on a 5xx, a timeout or a connection error
    (the gateway may be down) with the same body and the same Idempotency-Key,
    until it gets an answer or :data:`RETRY_BUDGET` runs out.
    """

    def __init__(self, api, stats, stop, number):
        super().__init__(daemon=True, name=f"client-{number}")
        self.api = api
        self.stats = stats
        self.stop_event = stop
        self.random = random.Random(number)
        self.http = requests.Session()
        self.user_id = None
        self.token = None
        self.orders = []  # acknowledged order ids
        self.maybe_cancelled = set()  # cancels that never got an answer
        self.error = None

    # one logical request, with retries
    def call(self, method, path, *, json=None, headers=None, auth=True):
        headers = dict(headers or {})
        if auth:
            headers["Authorization"] = f"Bearer {self.token}"
        deadline = time.monotonic() + RETRY_BUDGET
        attempt = 0
        while True:
            attempt += 1
            started = time.monotonic()
            try:
                response = self.http.request(
                    method,
                    self.api + path,
                    json=json,
                    headers=headers,
                    timeout=REQUEST_TIMEOUT,
                )
                failure = (
                    response.status_code if response.status_code in RETRYABLE_STATUSES else None
                )
                with self.stats.lock:
                    self.stats.statuses[response.status_code] += 1
            except requests.Timeout:
                response, failure = None, "timeout"
            except requests.ConnectionError:
                response, failure = None, "connection error"
            elapsed = time.monotonic() - started
            with self.stats.lock:
                self.stats.requests += 1
                self.stats.longest_request = max(self.stats.longest_request, elapsed)
                if failure is not None and not isinstance(failure, int):
                    self.stats.failures[failure] += 1
            if failure is None:
                return response, attempt
            if time.monotonic() > deadline:
                with self.stats.lock:
                    self.stats.gave_up.append(f"{method} {path}: last {failure}")
                return None, attempt
            self.stats.note(retries=1)
            time.sleep(min(2.0, 0.1 * 2 ** min(attempt, 5)) * (0.5 + self.random.random()))

    def unexpected(self, what, response):
        with self.stats.lock:
            self.stats.unexpected.append(f"{what}: {response.status_code} {response.text[:200]}")

    def sign_up(self):
        email = f"{uuid.uuid4().hex[:12]}@fault.example.com"
        body = {"email": email, "name": "Fault", "password": PASSWORD}
        response, attempts = self.call("POST", "/v1/users", json=body, auth=False)
        if response is None:
            return False
        # a 409 after a retry: the first attempt did register (its answer was lost)
        if not (response.status_code == 201 or (response.status_code == 409 and attempts > 1)):
            self.unexpected("register", response)
            return False
        credentials = {"email": email, "password": PASSWORD}
        response, _ = self.call("POST", "/v1/auth/token", json=credentials, auth=False)
        if response is None or response.status_code != 200:
            if response is not None:
                self.unexpected("login", response)
            return False
        self.token = response.json()["access_token"]
        response, _ = self.call("GET", "/v1/users/me")
        if response is None or response.status_code != 200:
            if response is not None:
                self.unexpected("me", response)
            return False
        self.user_id = response.json()["id"]
        return True

    def create_order(self):
        key = f"k-{uuid.uuid4().hex}"
        response, _ = self.call(
            "POST", "/v1/orders", json={"items": ITEMS}, headers={"Idempotency-Key": key}
        )
        if response is None:
            return
        if response.status_code not in (200, 201):
            self.unexpected("create order", response)
            return
        order = response.json()
        with self.stats.lock:
            self.stats.acknowledged[(self.user_id, key)] = order["id"]
        self.orders.append(order["id"])
        if order["user_id"] != self.user_id:
            self.unexpected("create order (someone else's)", response)
        if self.random.random() < 0.2:  # a late duplicate of an acknowledged request
            again, _ = self.call(
                "POST", "/v1/orders", json={"items": ITEMS}, headers={"Idempotency-Key": key}
            )
            if again is not None and (
                again.status_code != 200 or again.json()["id"] != order["id"]
            ):
                with self.stats.lock:
                    self.stats.replays_differing.append((key, order["id"], again.text[:200]))

    def read_order(self):
        order_id = self.random.choice(self.orders)
        response, _ = self.call("GET", f"/v1/orders/{order_id}")
        if response is None:
            return
        if response.status_code == 404:
            with self.stats.lock:
                self.stats.missing_reads.append(order_id)
        elif response.status_code != 200 or response.json()["id"] != order_id:
            self.unexpected("read order", response)

    def cancel_order(self):
        candidates = [o for o in self.orders if o not in self.stats.cancelled]
        if not candidates:
            return
        order_id = self.random.choice(candidates)
        response, attempts = self.call("POST", f"/v1/orders/{order_id}/cancel")
        if response is None:
            # no answer in the retry budget: it may have been cancelled all the same
            self.maybe_cancelled.add(order_id)
            return
        # 409 after a retry, or after an earlier cancel that got no answer: that
        # earlier attempt cancelled it and its answer was lost
        lost_answer = attempts > 1 or order_id in self.maybe_cancelled
        if response.status_code == 200 or (response.status_code == 409 and lost_answer):
            with self.stats.lock:
                self.stats.cancelled.add(order_id)
        else:
            self.unexpected("cancel order", response)

    def list_orders(self):
        response, _ = self.call("GET", "/v1/orders?limit=5")
        if response is not None and response.status_code != 200:
            self.unexpected("list orders", response)

    def run(self):
        try:
            while not self.stop_event.is_set() and not self.sign_up():
                time.sleep(0.5)
            while not self.stop_event.is_set():
                roll = self.random.random()
                if roll < 0.5 or not self.orders:
                    self.create_order()
                elif roll < 0.7:
                    self.read_order()
                elif roll < 0.85:
                    self.cancel_order()
                else:
                    self.list_orders()
                time.sleep(self.random.uniform(0.02, 0.1))
        except Exception as error:  # a client bug must show in the report, not vanish
            self.error = repr(error)


class Load:
    """``clients`` client threads against ``api`` until :meth:`stop`."""

    def __init__(self, api, clients):
        self.stats = Stats()
        self.stop_event = threading.Event()
        self.clients = [Client(api, self.stats, self.stop_event, n) for n in range(clients)]

    def start(self):
        for client in self.clients:
            client.start()
        return self

    def stop(self, timeout=RETRY_BUDGET + REQUEST_TIMEOUT + 10):
        self.stop_event.set()
        deadline = time.monotonic() + timeout
        hung = []
        for client in self.clients:
            client.join(max(0.0, deadline - time.monotonic()))
            if client.is_alive():
                hung.append(client.name)
        return hung

    @property
    def user_ids(self):
        return [client.user_id for client in self.clients if client.user_id is not None]


# --- a run: faults, then the verdict ---------------------------------------------------------


class FaultRun:
    """Owns the private servers, the databases and the system of one run; records what happened.

    ``with FaultRun(...) as run:`` starts a private RabbitMQ node and a private
    PostgreSQL cluster (:mod:`tests.private_servers`), the services on them and
    the load; the block's end stops everything and wipes both servers. Every
    fault acts on those private servers or on the run's own processes only.
    """

    def __init__(self, log_dir, clients=4, nodes=1, replicas=1):
        """``nodes`` > 1: a RabbitMQ cluster of that many private nodes, with
        quorum queues; ``replicas``: instances of users and of orders."""
        self.log_dir = log_dir
        self.clients = clients
        self.replicas = replicas
        self.rabbits = [PrivateRabbit() for _ in range(nodes)]
        self.rabbit = self.rabbits[0]
        self.postgres = PrivatePostgres()
        self.vhost = Vhost(self.rabbits)
        self.details = []  # per fault: requests failed, orders made while it lasted
        self.databases = None
        self.system = None
        self.load = None
        self.faults = []  # (name, seconds until ready, or None)
        self.hung_clients = []
        self.errors = []  # faults that could not be carried out, and processes that died
        self.started = None
        self.setup_seconds = None

    def __enter__(self):
        self.started = time.monotonic()
        os.makedirs(self.log_dir, exist_ok=True)
        try:
            # the nodes boot in the background while the PostgreSQL cluster is made
            for rabbit in self.rabbits:
                rabbit.start(wait=False)
            self.postgres.start()
            for rabbit in self.rabbits:
                rabbit.wait_ready()
            for rabbit in self.rabbits[1:]:
                rabbit.join(self.rabbit)
            self.vhost.create()
            self.databases = PostgresDatabases(self.postgres.url())
            uris = {name: self.databases.get(name) for name in ("users", "orders")}
            extra = {"QUEUE_TYPE": "quorum"} if len(self.rabbits) > 1 else {}
            self.system = System(self.log_dir, self.vhost, uris, self.replicas, **extra)
            self.system.start()
            self.load = Load(self.system.api, self.clients).start()
        except BaseException:
            self.__exit__(None, None, None)
            raise
        self.setup_seconds = time.monotonic() - self.started
        return self

    def __exit__(self, *exc_info):
        try:
            if self.load is not None and not self.load.stop_event.is_set():
                self.load.stop(timeout=5)
            if self.system is not None:
                self.system.stop()
        finally:
            # the servers are the run's own: wiping them drops the vhost and the databases too
            try:
                for rabbit in self.rabbits:
                    rabbit.destroy()
            finally:
                self.postgres.destroy()

    def calm(self, seconds):
        """Let the load run undisturbed for a while."""
        time.sleep(seconds)

    def recovered(self, name, since):
        seconds = self.system.seconds_until_ready(since)
        self.faults.append((name, seconds))
        for process in self.system.processes:
            if process.process.poll() is not None:
                self.errors.append(
                    f"{process.name} (port {process.port}) exited by itself during {name!r} "
                    f"with status {process.process.returncode}; see {process.log_path}"
                )
        return seconds

    def step(self, fault, *args, **kwargs):
        """Carry out one fault; a failure to carry it out is reported, and the run goes on."""
        try:
            return fault(*args, **kwargs)
        except Exception as error:
            self.errors.append(f"{fault.__name__}{args!r}: {error!r}"[:2000])
            return None

    # the faults
    def kill_and_restart(self, process, name, down_seconds=1.0):
        process.stop(signal.SIGKILL)
        time.sleep(down_seconds)
        process.start(wait=False)
        return self.recovered(name, time.monotonic())

    def restart_broker(self, down_seconds=2.0):
        """The private node's broker stopped (clients cut off) and started again; the VM stays."""
        with self.rabbit.app_down():
            time.sleep(down_seconds)
        return self.recovered("RabbitMQ restart (app stopped, started)", time.monotonic())

    def kill_broker(self, down_seconds=1.0):
        """The private node's Erlang VM killed with SIGKILL, then booted again (its data kept)."""
        self.rabbit.kill()
        time.sleep(down_seconds)
        self.rabbit.start()
        return self.recovered("kill -9 RabbitMQ, restart", time.monotonic())

    def node_down(self, rabbit, name, stop, down_seconds):
        """``stop(rabbit)``, the load going on for ``down_seconds``, then the node back.

        Records how many requests failed (5xx, timeouts, connection errors:
        the clients retried them) and how many orders were acknowledged while
        the node was down, and how long until every process was ready again.
        """
        stats = self.load.stats

        def failed():
            with stats.lock:
                statuses = sum(n for status, n in stats.statuses.items() if status >= 500)
                return statuses + sum(stats.failures.values())

        def acknowledged():
            with stats.lock:
                return len(stats.acknowledged)

        failed_before, acknowledged_before = failed(), acknowledged()
        stop(rabbit)
        time.sleep(down_seconds)
        made_while_down = acknowledged() - acknowledged_before
        rabbit.start()
        seconds = self.recovered(name, time.monotonic())
        self.details.append(
            {
                "fault": name,
                "requests_failed": failed() - failed_before,
                "orders_acknowledged_while_down": made_while_down,
                "seconds_until_ready_after_restart": seconds,
            }
        )
        if len(self.rabbits) > 1 and made_while_down == 0:
            self.errors.append(f"{name}: no order was acknowledged while the node was down")
        return seconds

    def kill_queue_leader_node(self, queue="rpc-orders", down_seconds=6.0):
        """kill -9 the cluster node holding ``queue``'s leader; boot it again later."""
        leader = self.vhost.queue_leader(queue)
        rabbit = next(r for r in self.rabbits if r.node == leader)
        return self.node_down(
            rabbit, f"kill -9 {queue}'s leader node", lambda r: r.kill(), down_seconds
        )

    def stop_node_gracefully(self, down_seconds=6.0, spare=None):
        """Stop a node other than ``spare`` politely (its Erlang VM ends); boot it again later."""
        rabbit = next(r for r in reversed(self.rabbits) if r is not spare)
        return self.node_down(rabbit, "stop a node gracefully", lambda r: r.stop(), down_seconds)

    def restart_postgres(self, down_seconds=2.0):
        """The private cluster stopped in immediate mode (a crash: sessions cut), started again."""
        with self.postgres.down(mode="immediate"):
            time.sleep(down_seconds)
        return self.recovered("PostgreSQL restart (immediate stop, start)", time.monotonic())

    def kill_one_of_two_orders(self, overlap_seconds=4.0):
        self.system.add_orders_instance()
        self.calm(overlap_seconds)
        victim = self.system.orders.pop(0)
        victim.stop(signal.SIGKILL)
        self.faults.append(("kill -9 one of two orders instances", 0.0))
        return victim

    # the verdict
    def finish_load(self):
        self.hung_clients = self.load.stop()

    def verify(self, consistency_timeout=60):
        """Check every promise; returns the report as a dict (``problems`` empty when kept)."""
        stats = self.load.stats
        problems = []
        orders_uri = self.databases.created["orders"]
        users_uri = self.databases.created["users"]
        user_ids = self.load.user_ids

        orders_engine = engine_for(orders_uri)
        users_engine = engine_for(users_uri)
        try:
            with orders_engine.connect() as connection:
                rows = connection.execute(
                    text("SELECT id, user_id, idempotency_key FROM orders")
                ).all()
            by_key = collections.defaultdict(list)
            by_id = collections.Counter(row.id for row in rows)
            for row in rows:
                by_key[(row.user_id, row.idempotency_key)].append(row.id)
            duplicated_keys = {k: ids for k, ids in by_key.items() if len(ids) > 1}
            lost = []
            wrong = []
            for (user_id, key), order_id in stats.acknowledged.items():
                ids = by_key.get((user_id, key), [])
                if by_id.get(order_id, 0) != 1 or not ids:
                    lost.append(order_id)
                elif ids != [order_id]:
                    wrong.append((key, order_id, ids))
            unacknowledged = sum(
                1
                for (user_id, key) in by_key
                if user_id in user_ids and (user_id, key) not in stats.acknowledged
            )
            if lost:
                problems.append(f"acknowledged orders lost: {lost[:20]}")
            if wrong:
                problems.append(f"acknowledged orders stored under another id: {wrong[:20]}")
            if duplicated_keys:
                problems.append(f"two orders for one idempotency key: {list(duplicated_keys)[:20]}")
            if stats.replays_differing:
                problems.append(
                    f"a repeated key gave another answer: {stats.replays_differing[:5]}"
                )
            if stats.missing_reads:
                problems.append(
                    f"acknowledged orders not found by a read: {stats.missing_reads[:20]}"
                )

            orders_per_user = collections.Counter(row.user_id for row in rows)

            def counts_mismatch():
                with users_engine.connect() as connection:
                    counts = dict(
                        connection.execute(text("SELECT id, order_count FROM users")).all()
                    )
                return {
                    user_id: (counts.get(user_id), orders_per_user.get(user_id, 0))
                    for user_id in user_ids
                    if counts.get(user_id) != orders_per_user.get(user_id, 0)
                }

            def unsent():
                found = {}
                for name, engine in (("users", users_engine), ("orders", orders_engine)):
                    with engine.connect() as connection:
                        found[name] = connection.execute(
                            text("SELECT count(*) FROM outbox WHERE sent_at IS NULL")
                        ).scalar()
                return {name: n for name, n in found.items() if n}

            dead_letter_queues = [q for q in self.vhost.queue_names() if q.endswith(".dead-letter")]
            retry_queues = [q for q in self.vhost.queue_names() if q.endswith(".delay")]

            def dead_letters():
                counts = self.vhost.message_counts(dead_letter_queues + retry_queues)
                return {name: n for name, n in counts.items() if n}

            waited_from = time.monotonic()
            deadline = waited_from + consistency_timeout
            while True:
                mismatch, backlog, letters = counts_mismatch(), unsent(), dead_letters()
                if not (mismatch or backlog or letters) or time.monotonic() > deadline:
                    break
                time.sleep(0.5)
            consistent_after = time.monotonic() - waited_from
            if mismatch:
                problems.append(f"order_count (users) vs orders (orders) differ: {mismatch}")
            if backlog:
                problems.append(f"outbox rows never sent: {backlog}")
            if letters:
                problems.append(f"messages left in dead-letter/retry queues: {letters}")
        finally:
            orders_engine.dispose()
            users_engine.dispose()

        problems.extend(self.errors)
        slow = [(name, s) for name, s in self.faults if s is None or s > RECOVERY_PROMISE]
        if slow:
            problems.append(f"not serving within {RECOVERY_PROMISE:.0f} s: {slow}")
        if self.hung_clients:
            problems.append(f"clients still waiting at the end (a hang): {self.hung_clients}")
        if stats.gave_up:
            problems.append(f"requests that never got an answer: {stats.gave_up[:10]}")
        if stats.statuses.get(500):
            # the client retried them, but a dependency outage is a 503 by contract
            problems.append(f"{stats.statuses[500]} answers were 500, not 503: see the logs")
        if stats.unexpected:
            problems.append(f"answers a correct client should not get: {stats.unexpected[:10]}")
        client_errors = [c.error for c in self.load.clients if c.error]
        if client_errors:
            problems.append(f"client errors: {client_errors}")
        return {
            "faults": list(self.faults),
            "node_faults": list(self.details),
            "requests": stats.requests,
            "retries": stats.retries,
            "statuses": dict(sorted(stats.statuses.items())),
            "failures": dict(stats.failures),
            "longest_request_seconds": round(stats.longest_request, 2),
            "users": len(user_ids),
            "orders_acknowledged": len(stats.acknowledged),
            "orders_stored": len(rows),
            "orders_created_unacknowledged": unacknowledged,
            "orders_cancelled": len(stats.cancelled),
            "lost": len(lost),
            "duplicated": len(duplicated_keys) + len(stats.replays_differing),
            "events_consistent_after_seconds": round(consistent_after, 1),
            "dead_letter_queues": dead_letter_queues,
            "seconds": round(time.monotonic() - self.started, 1),
            "setup_seconds": round(self.setup_seconds or 0, 1),
            "servers": f"private RabbitMQ {', '.join(r.node for r in self.rabbits)} "
            f"on :{', :'.join(str(r.amqp_port) for r in self.rabbits)}, "
            f"private PostgreSQL {self.postgres.version}/{self.postgres.name} "
            f"on :{self.postgres.port}",
            "problems": problems,
        }


def format_report(report):
    lines = ["", "=== fault run report ==="]
    lines.append(f"faults survived ({len(report['faults'])}):")
    for name, seconds in report["faults"]:
        shown = "never" if seconds is None else f"{seconds:.1f} s"
        lines.append(f"  - {name}: serving again after {shown}")
    for detail in report.get("node_faults", []):
        lines.append(
            f"  - {detail['fault']}: {detail['requests_failed']} requests failed (retried), "
            f"{detail['orders_acknowledged_while_down']} orders acknowledged while it was down"
        )
    lines.append(
        f"requests sent: {report['requests']}, client retries: {report['retries']}, "
        f"longest request: {report['longest_request_seconds']} s"
    )
    lines.append(f"statuses seen: {report['statuses']}; connection failures: {report['failures']}")
    lines.append(
        f"users: {report['users']}, orders acknowledged: {report['orders_acknowledged']}, "
        f"stored: {report['orders_stored']} (created but never acknowledged to the client: "
        f"{report['orders_created_unacknowledged']}), cancelled: {report['orders_cancelled']}"
    )
    lines.append(f"lost: {report['lost']}, duplicated: {report['duplicated']}")
    lines.append(
        f"order_count, outbox and dead letters settled after "
        f"{report['events_consistent_after_seconds']} s "
        f"(dead-letter queues checked: {len(report['dead_letter_queues'])})"
    )
    lines.append(f"servers: {report['servers']}")
    lines.append(f"run took {report['seconds']} s ({report['setup_seconds']} s to start it all)")
    if report["problems"]:
        lines.append("PROMISES BROKEN:")
        lines.extend(f"  ! {problem}" for problem in report["problems"])
    else:
        lines.append("every promise kept")
    return "\n".join(lines)
