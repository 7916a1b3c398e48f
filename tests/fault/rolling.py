"""A rolling restart under load, behind HAProxy: the promise that it fails no request.

The system: two gateways behind an HAProxy of the run's own, two replicas of
users and two of orders, every process started the way production starts it
(``python -m shared.cli run``: nameko's runner with the bounded graceful stop),
on the private RabbitMQ and PostgreSQL of a :class:`tests.fault.harness.FaultRun`.
The harness's clients talk to HAProxy's port only.

:meth:`RollingRun.replace` replaces one process the way a deploy does: SIGTERM,
wait until it exits, start the new one on the same port, wait until it is
ready (``/ready`` 200; for a gateway also back in HAProxy), then let the load
run on for a moment. A gateway is first drained in HAProxy through its runtime
API (``set server gateways/gwN state drain``) and replaced only once HAProxy
holds no request on it: what a load balancer's deregistration or Kubernetes'
readiness does before the SIGTERM. ``drain=False`` leaves that out (HAProxy
then only learns of the stop from its health checks and connection failures).

The promise checked (:meth:`RollingRun.verify`), stricter than the fault runs':
**every** HTTP answer the clients see is a 2xx or an expected 4xx, and no
request ends in a connection error or a timeout. The clients still retry (it
is the harness's load), but a retry is only ever caused by a failure, and each
failure counts: the promise is 0 failed requests, not 0 after retries. Then
the harness's consistency checks: every acknowledged order stored exactly
once, ``order_count`` right, no unsent outbox row, no dead letter.
"""

import csv
import io
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time

import requests

from tests.conftest import PostgresDatabases
from tests.fault.harness import SERVICE_CLASSES, FaultRun, Load, System
from tests.helpers import answers_ok, wait_until
from tests.private_servers import free_port
from tests.system.processes import ROOT, ServiceProcess

HAPROXY = "haproxy"
BACKEND = "gateways"
SETTLE_SECONDS = 2.0  # load undisturbed after each replacement, before the next
STOP_WAIT = 15.0  # how long to wait for a SIGTERMed process (it promises 10 s)
READY_WAIT = 30.0  # how long a new process may take to be ready
DRAIN_WAIT = 15.0  # how long HAProxy may take to finish the requests on a drained gateway


# --- processes as production runs them --------------------------------------------------------


class ProductionProcess(ServiceProcess):
    """A service run by ``python -m shared.cli run`` (the production entry), not ``nameko run``.

    That entry adds the bounded graceful stop (``STOP_TIMEOUT_SECONDS``), the
    part of a rolling restart under test here.
    """

    def start(self, wait=True):
        with open(self.log_path, "a") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "shared.cli", "run", "--config", self.config, self.module],
                env=self.env,
                cwd=ROOT,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        if wait:
            self.wait_healthy()
        return self

    def ready(self):
        return (
            self.process is not None
            and self.process.poll() is None
            and answers_ok(f"{self.url}/ready", timeout=2)
        )


class ReplicatedSystem(System):
    """Two users, two orders and two gateways, as :class:`ProductionProcess` es.

    ``system.gateway`` is the first gateway (the harness's name); ``api`` is
    HAProxy's address once :attr:`balancer` is set.
    """

    def __init__(self, log_dir, vhost, db_uris, **extra_env):
        super().__init__(log_dir, vhost, db_uris, replicas=2, **extra_env)
        self.gateways = [self.gateway, self.process("gateway")]
        self.balancer = None

    def process(self, name):
        return ProductionProcess(name, self.env, self.log_dir, module=SERVICE_CLASSES[name])

    @property
    def api(self):
        return self.balancer.url if self.balancer else self.gateway.url

    @property
    def processes(self):
        return [self.users, *self.more_users, *self.orders, *self.gateways]

    def named(self):
        """``(label, process)`` in the order of a rolling restart: users, orders, gateways."""
        return [
            ("users 1", self.users),
            ("users 2", self.more_users[0]),
            ("orders 1", self.orders[0]),
            ("orders 2", self.orders[1]),
            ("gateway 1", self.gateways[0]),
            ("gateway 2", self.gateways[1]),
        ]


# --- HAProxy ----------------------------------------------------------------------------------

HAPROXY_CONFIG = """\
global
    maxconn 2000
    stats socket {socket} mode 600 level admin
    stats timeout 5s
    log stdout format raw local0 info

defaults
    mode http
    log global
    option httplog
    option http-keep-alive
    timeout connect 1s
    timeout client 30s
    timeout server 15s
    timeout http-request 10s
    timeout http-keep-alive 5s
    timeout queue 5s
    # a request that could not reach a gateway (connection refused or reset,
    # closed without an answer), or that a stopping gateway refused before
    # doing anything (503), goes to the other one: at most 3 more tries
    retries 3
    option redispatch 1
    retry-on conn-failure empty-response response-timeout 503
    # a POST can be sent again only if HAProxy kept its body
    option http-buffer-request

frontend api
    bind 127.0.0.1:{port}
    default_backend {backend}

backend {backend}
    balance roundrobin
    option httpchk GET /health
    http-check expect status 200
    default-server inter 200ms fastinter 200ms downinter 200ms rise 2 fall 2
{servers}
"""


class HAProxy:
    """A foreground ``haproxy -db`` of the run's own, with its config and socket in a temp dir.

    Balances ``gateways`` (``[(name, port)]``) on a free 127.0.0.1 port; its
    runtime API (:meth:`command`) drains and readmits a server.
    """

    def __init__(self, gateways, log_dir):
        self.gateways = list(gateways)
        self.port = free_port()
        self.dir = tempfile.mkdtemp(prefix="haproxy-")
        self.socket_path = os.path.join(self.dir, "admin.sock")
        self.config_path = os.path.join(self.dir, "haproxy.cfg")
        self.log_path = os.path.join(str(log_dir), "haproxy.log")
        self.process = None

    @staticmethod
    def available():
        return shutil.which(HAPROXY) is not None

    @property
    def url(self):
        return f"http://127.0.0.1:{self.port}"

    def config(self):
        servers = "\n".join(
            f"    server {name} 127.0.0.1:{port} check" for name, port in self.gateways
        )
        return HAPROXY_CONFIG.format(
            socket=self.socket_path, port=self.port, backend=BACKEND, servers=servers
        )

    def start(self, timeout=15):
        with open(self.config_path, "w") as config:
            config.write(self.config())
        subprocess.run([HAPROXY, "-c", "-q", "-f", self.config_path], check=True, timeout=30)
        with open(self.log_path, "a") as log:
            self.process = subprocess.Popen(
                [HAPROXY, "-f", self.config_path, "-db"], stdout=log, stderr=subprocess.STDOUT
            )
        every_server_up = wait_until(
            lambda: (
                self.process.poll() is None
                and all(self.server_status(name) == "UP" for name, _ in self.gateways)
            ),
            timeout=timeout,
            interval=0.1,
        )
        if not every_server_up:
            raise AssertionError(f"HAProxy never saw every gateway UP; see {self.log_path}")
        return self

    def stop(self):
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        shutil.rmtree(self.dir, ignore_errors=True)

    def command(self, line):
        """One runtime API command over the admin socket; its answer."""
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as admin:
            admin.settimeout(5)
            admin.connect(self.socket_path)
            admin.sendall(line.encode() + b"\n")
            answer = b""
            while chunk := admin.recv(65536):
                answer += chunk
        return answer.decode()

    def stats(self, name):
        """The ``show stat`` row of server ``name`` in the gateways' backend (a dict)."""
        text = self.command("show stat").lstrip("# ")
        for row in csv.DictReader(io.StringIO(text)):
            if row["pxname"] == BACKEND and row["svname"] == name:
                return row
        raise KeyError(name)

    def server_status(self, name):
        """UP, DOWN, DRAIN, MAINT, "UP 1/2" ...; None while the admin socket does not answer."""
        try:
            return self.stats(name)["status"]
        except OSError:
            return None

    def drain(self, name, timeout=DRAIN_WAIT):
        """No new request to ``name``; returns once HAProxy holds none on it (or False)."""
        self.command(f"set server {BACKEND}/{name} state drain")
        return wait_until(lambda: int(self.stats(name)["scur"] or 0) == 0, timeout, 0.05)

    def readmit(self, name, timeout=READY_WAIT):
        """Back in rotation; returns once HAProxy's checks see it UP (or False)."""
        self.command(f"set server {BACKEND}/{name} state ready")
        return wait_until(lambda: self.server_status(name) == "UP", timeout, 0.05)


# --- the strict load --------------------------------------------------------------------------


class RecordingSession(requests.Session):
    """A client's HTTP session that notes every failed request: when, what, and how it failed.

    A failure is an answer of 500 or more, or no answer (connection error,
    timeout). The exception still reaches the client, which retries as before.
    """

    def __init__(self, failures, lock):
        super().__init__()
        self.failed_requests = failures
        self.failures_lock = lock

    def request(self, method, url, *args, **kwargs):
        started = time.monotonic()
        try:
            response = super().request(method, url, *args, **kwargs)
        except requests.RequestException as error:
            self._note(started, method, url, f"{type(error).__name__} {str(error)[:120]}")
            raise
        if response.status_code >= 500:
            body = response.text[:160].replace("\n", " ")
            self._note(started, method, url, f"{response.status_code} {body}")
        return response

    def _note(self, started, method, url, outcome):
        path = "/" + url.split("/", 3)[-1]
        with self.failures_lock:
            self.failed_requests.append(
                (started, round(time.monotonic() - started, 3), f"{method} {path}", outcome)
            )


class StrictLoad(Load):
    """The harness's load, with every failed request recorded (:class:`RecordingSession`)."""

    def __init__(self, api, clients):
        super().__init__(api, clients)
        self.failed_requests = []  # (monotonic start, seconds, "METHOD /path", outcome)
        lock = threading.Lock()
        for client in self.clients:
            client.http = RecordingSession(self.failed_requests, lock)

    def failures_between(self, start, end):
        return [f for f in list(self.failed_requests) if start <= f[0] < end]


# --- the run ----------------------------------------------------------------------------------


class RollingRun(FaultRun):
    """A :class:`FaultRun` of :class:`ReplicatedSystem` behind :class:`HAProxy`, under a
    :class:`StrictLoad`; :meth:`replace` is its one fault.

    ``with RollingRun(log_dir) as run:`` starts everything (private servers,
    six processes, HAProxy, the load); the block's end stops it all and wipes
    the servers. ``drain``: take a gateway out of HAProxy before its SIGTERM.
    """

    def __init__(self, log_dir, clients=4, drain=True, settle=SETTLE_SECONDS):
        super().__init__(log_dir, clients=clients, nodes=1, replicas=2)
        self.drain = drain
        self.settle = settle
        self.balancer = None
        self.replacements = []  # one dict per process replaced (see replace())
        self.gateway_names = {}  # gateway process -> its HAProxy server name

    def __enter__(self):
        if not HAProxy.available():
            raise RuntimeError("haproxy is not installed (Debian: apt-get install haproxy)")
        self.started = time.monotonic()
        os.makedirs(self.log_dir, exist_ok=True)
        try:
            self.rabbit.start(wait=False)
            self.postgres.start()
            self.rabbit.wait_ready()
            self.vhost.create()
            self.databases = PostgresDatabases(self.postgres.url())
            uris = {name: self.databases.get(name) for name in ("users", "orders")}
            self.system = ReplicatedSystem(self.log_dir, self.vhost, uris)
            self.system.start()
            self.gateway_names = {
                gateway: f"gw{number}" for number, gateway in enumerate(self.system.gateways, 1)
            }
            self.balancer = HAProxy(
                [(name, gateway.port) for gateway, name in self.gateway_names.items()],
                self.log_dir,
            )
            self.balancer.start()  # set first: a failed start is stopped by __exit__ too
            self.system.balancer = self.balancer
            self.load = StrictLoad(self.system.api, self.clients).start()
        except BaseException:
            self.__exit__(None, None, None)
            raise
        self.setup_seconds = time.monotonic() - self.started
        return self

    def __exit__(self, *exc_info):
        try:
            if self.load is not None and not self.load.stop_event.is_set():
                self.load.stop(timeout=5)
        finally:
            try:
                if self.balancer is not None:
                    self.balancer.stop()
            finally:
                self.load = None  # stopped above; the harness's exit stops the rest
                super().__exit__(*exc_info)

    def wait_for_traffic(self, timeout=30):
        """Wait until every client has signed up (the load is steady), within ``timeout``."""
        wait_until(lambda: len(self.load.user_ids) == len(self.load.clients), timeout, 0.1)

    def replace(self, label, process):
        """Replace ``process`` as a deploy does; the row of the report it adds.

        Gateway (with ``drain``): drained in HAProxy first. Then SIGTERM, wait
        for the exit (``stop_seconds``, ``exit_status``), start a new one on the
        same port, wait until ready (``ready_seconds``, from its start; a
        gateway also readmitted and UP in HAProxy), then :attr:`settle`
        seconds of load. Requests and failures are counted from the first
        step to the end of the settle time.
        """
        stats = self.load.stats
        with stats.lock:
            requests_before, unexpected_before = stats.requests, len(stats.unexpected)
        began = time.monotonic()
        row = {"process": label, "port": process.port, "problems": []}
        server = self.gateway_names.get(process)
        if server is not None and self.drain:
            drained = self.balancer.drain(server)
            row["drain_seconds"] = round(time.monotonic() - began, 2)
            if not drained:
                row["problems"].append(f"HAProxy still held requests on {server}")
        signalled = time.monotonic()
        process.process.send_signal(signal.SIGTERM)
        try:
            process.process.wait(timeout=STOP_WAIT)
        except subprocess.TimeoutExpired:
            process.process.kill()
            process.process.wait()
            row["problems"].append(f"still running {STOP_WAIT:.0f} s after SIGTERM: killed")
        row["stop_seconds"] = round(time.monotonic() - signalled, 2)
        row["exit_status"] = process.process.returncode
        if row["exit_status"] != 0:
            row["problems"].append(f"exit status {row['exit_status']}; see {process.log_path}")
        started = time.monotonic()
        process.start(wait=False)
        ready = wait_until(process.ready, READY_WAIT, 0.05)
        if ready and server is not None and self.drain:
            ready = self.balancer.readmit(server)
        elif ready and server is not None:
            ready = wait_until(lambda: self.balancer.server_status(server) == "UP", READY_WAIT)
        row["ready_seconds"] = round(time.monotonic() - started, 2) if ready else None
        if not ready:
            row["problems"].append(f"not ready within {READY_WAIT:.0f} s; see {process.log_path}")
        self.faults.append((f"rolling restart: {label}", row["ready_seconds"]))
        time.sleep(self.settle)
        ended = time.monotonic()
        with stats.lock:
            row["requests"] = stats.requests - requests_before
            unexpected = stats.unexpected[unexpected_before:]
        # a 4xx a correct client never gets (a 409 for a cancel the client sent
        # once: its first attempt, retried by HAProxy, did it) fails it too
        failures = self.load.failures_between(began, ended)
        failures += [(ended, 0.0, "answer", what) for what in unexpected]
        row["failed"] = len(failures)
        row["failures"] = [
            f"+{at - began:.2f} s {what}: {outcome} ({seconds} s)"
            for at, seconds, what, outcome in failures
        ]
        for other in self.system.processes:
            if other is not process and other.process.poll() is not None:
                row["problems"].append(f"{other.name} :{other.port} exited by itself")
        self.errors.extend(f"{label}: {problem}" for problem in row["problems"])
        self.replacements.append(row)
        return row

    def rolling_restart(self, only=None):
        """Replace every process (or those labelled in ``only``) one by one, in order.

        Like a deploy, it halts at a replacement that never got ready (the
        next SIGTERM would take the last replica of a service away).
        """
        for label, process in self.system.named():
            if only is None or label in only:
                if self.replace(label, process)["ready_seconds"] is None:
                    self.errors.append(f"rolling restart halted: {label} never got ready")
                    return

    def verify(self, consistency_timeout=60):
        """The harness's verdict, plus the strict one: no failed request at all."""
        report = super().verify(consistency_timeout)
        failed = list(self.load.failed_requests) if self.load else []
        failed += [(0.0, 0.0, "answer", what) for what in self.load.stats.unexpected]
        report["rolling"] = {
            "replacements": list(self.replacements),
            "drain": self.drain,
            "failed_requests": len(failed),
            "balancer": f"HAProxy on :{self.balancer.port}" if self.balancer else None,
        }
        if failed:
            first = [f"{what}: {outcome}" for _, _, what, outcome in failed[:10]]
            report["problems"].append(
                f"{len(failed)} requests failed as the client saw them (before any retry): {first}"
            )
        if report["retries"]:
            report["problems"].append(f"the clients had to retry {report['retries']} times")
        return report


def format_rolling(report):
    """The per-process table of a rolling restart, for under :func:`format_report`."""
    rolling = report["rolling"]
    lines = [
        "",
        f"=== rolling restart behind {rolling['balancer']} "
        f"(gateways drained first: {'yes' if rolling['drain'] else 'no'}) ===",
        f"{'process':<10} {'requests':>8} {'failed':>6} {'drain s':>7} {'stop s':>6} "
        f"{'exit':>4} {'ready s':>7}",
    ]
    for row in rolling["replacements"]:
        ready = "never" if row["ready_seconds"] is None else f"{row['ready_seconds']:.2f}"
        drain = f"{row['drain_seconds']:.2f}" if "drain_seconds" in row else "-"
        lines.append(
            f"{row['process']:<10} {row['requests']:>8} {row['failed']:>6} {drain:>7} "
            f"{row['stop_seconds']:>6.2f} {row['exit_status']:>4} {ready:>7}"
        )
        lines.extend(f"    ! {failure}" for failure in row["failures"][:10])
    lines.append(
        f"failed requests in the whole run (as the client saw them): {rolling['failed_requests']}"
    )
    return "\n".join(lines)
