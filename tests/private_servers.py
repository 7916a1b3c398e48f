"""Private RabbitMQ nodes and PostgreSQL clusters for tests that break things.

A test that stops, restarts or kills the broker or the database must never do
it to this machine's own servers (node ``rabbit@localhost`` on 5672, cluster
``main`` on 5432): other work uses them. This module starts servers of the
test's own, beside them, and every fault acts on those only:

- :class:`PrivateRabbit`: a RabbitMQ node with its own name, ports, data, logs,
  config and plugins under a temp dir, driven by ``rabbitmqctl -n <its node>``.
  Several of them can be joined into one cluster (:meth:`PrivateRabbit.join`).
- :class:`PrivatePostgres`: a PostgreSQL cluster of its own
  (``pg_createcluster``) on a free port, trust auth, dropped at the end.
- :class:`MachineServersWatch`: connections to the machine's own servers held
  open across a run, so a test can prove that they saw no disconnect.

Every private server is cleaned up when its ``with`` block ends (failures and
Ctrl-C included) and at interpreter exit. Servers left by an earlier run that
was killed outright are removed by :func:`sweep_leftovers`, which runs before
the first private server of a process starts: every name carries
:data:`PREFIX` and the pid of the process that owns it, and only servers whose
owner is gone are removed, so two test processes can run side by side.

Erlang's port mapper (epmd, port 4369) is shared with the machine's node; that
is fine, it is not the broker. The Erlang cookie is the one the machine's node
uses (RabbitMQ's scripts pick it), and it is never changed.
"""

import atexit
import collections
import contextlib
import os
import pwd
import re
import shutil
import signal
import socket
import struct
import subprocess
import tempfile
import threading
import time
import uuid

import requests

PREFIX = "testpriv"  # every private node, cluster and directory name starts with this
MACHINE_RABBIT_NODE = "rabbit@localhost"
MACHINE_RABBIT_PORT = 5672
MACHINE_POSTGRES_CLUSTER = "main"
MACHINE_POSTGRES_PORT = 5432
GUEST = ("guest", "guest")

_live = []  # private servers not destroyed yet, for the atexit handler
_live_lock = threading.Lock()
_swept = False


# --- small helpers ----------------------------------------------------------------------------


# ports handed out by this process: several nodes get theirs before any of them listens
_handed_out = set()


def free_port(avoid=()):
    """A TCP port nothing listens on now (the OS picks it); never one in ``avoid``,
    nor one this process handed out before."""
    while True:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
            probe.bind(("127.0.0.1", 0))
            port = probe.getsockname()[1]
        # the machine's fixed ports are never handed out by the OS, but be explicit
        taken = {*avoid, *_handed_out, MACHINE_RABBIT_PORT, MACHINE_POSTGRES_PORT}
        if port not in taken:
            _handed_out.add(port)
            return port


def unique_name(kind):
    """``testpriv_<kind>_<owner pid>_<random>``: a valid Erlang node and PostgreSQL cluster name."""
    return f"{PREFIX}_{kind}_{os.getpid()}_{uuid.uuid4().hex[:6]}"


def owner_pid(name):
    """The pid of the process that made the private server called ``name`` (None if not ours)."""
    match = re.fullmatch(rf"{PREFIX}_[a-z]+_(\d+)_[0-9a-f]+", name)
    return int(match.group(1)) if match else None


def pid_alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, another user's
        return True
    return True


def owner_gone(name):
    pid = owner_pid(name)
    return pid is not None and pid != os.getpid() and not pid_alive(pid)


def run(command, timeout=120, check=True, env=None):
    """Run a command; on failure the error says what it printed."""
    result = subprocess.run(command, capture_output=True, text=True, timeout=timeout, env=env)
    if check and result.returncode != 0:
        raise RuntimeError(
            f"{' '.join(command)} exited with {result.returncode}: "
            f"{(result.stdout + result.stderr).strip()[-2000:]}"
        )
    return result


def wait_until(predicate, timeout, what, interval=0.2, describe=lambda: ""):
    """Poll ``predicate`` until truthy; raise TimeoutError naming ``what`` if ``timeout`` passes."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise TimeoutError(f"{what} not within {timeout:.0f} s\n{describe()}".rstrip())
        time.sleep(interval)


def port_open(port, host="127.0.0.1"):
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.settimeout(1)
        return probe.connect_ex((host, port)) == 0


def _register(server):
    with _live_lock:
        _live.append(server)


def _unregister(server):
    with _live_lock:
        if server in _live:
            _live.remove(server)


@atexit.register
def _destroy_live_servers():
    """Last resort: a process that exits without unwinding its ``with`` blocks."""
    for server in list(reversed(_live)):
        with contextlib.suppress(Exception):
            server.destroy()


class _Private:
    """Context-manager plumbing shared by the private servers."""

    def __enter__(self):
        try:
            return self.start()
        except BaseException:
            self.destroy()
            raise

    def __exit__(self, *exc_info):
        self.destroy()


# --- RabbitMQ ---------------------------------------------------------------------------------


class PrivateRabbit(_Private):
    """A RabbitMQ node of the test's own, beside the machine's.

    ``with PrivateRabbit() as rabbit:`` starts it (first boot of a fresh node,
    with the management plugin unless ``plugins`` says otherwise) and waits
    until it serves AMQP (and its management API); the block's end stops it
    and wipes its directory. ``rabbit.amqp_uri()`` and ``rabbit.management_url``
    are what clients use; the guest user works because clients connect from
    127.0.0.1.

    Faults: :meth:`stop_app`/:meth:`start_app` (the broker stops, the Erlang VM
    stays; clients are disconnected), :meth:`app_down` (both, as a block),
    :meth:`kill` (SIGKILL of the VM) followed by :meth:`start` (the same node,
    its data kept). Every command names this node explicitly (``-n``); this
    class refuses to drive any node whose name does not start with
    :data:`PREFIX`.
    """

    def __init__(self, name=None, plugins=("rabbitmq_management",), base_dir=None):
        self.name = name or unique_name("rmq")
        if not self.name.startswith(PREFIX):
            raise ValueError(f"a private node's name starts with {PREFIX!r}: {self.name!r}")
        self.node = f"{self.name}@localhost"
        self.plugins = tuple(plugins)
        self.amqp_port = free_port()
        self.dist_port = free_port(avoid={self.amqp_port})
        self.management_port = free_port(avoid={self.amqp_port, self.dist_port})
        self.dir = os.path.join(base_dir or tempfile.gettempdir(), self.name)
        self.pid_file = os.path.join(self.dir, "rabbit.pid")
        self.destroyed = False

    # addresses
    @property
    def has_management(self):
        return "rabbitmq_management" in self.plugins

    @property
    def management_url(self):
        return f"http://127.0.0.1:{self.management_port}"

    def amqp_uri(self, vhost="/"):
        vhost = "" if vhost == "/" else vhost
        return f"amqp://guest:guest@127.0.0.1:{self.amqp_port}/{vhost}"

    def env(self):
        """The environment that makes RabbitMQ's scripts act on this node and its files only."""
        return {
            **os.environ,
            "RABBITMQ_NODENAME": self.node,
            "RABBITMQ_NODE_IP_ADDRESS": "127.0.0.1",
            "RABBITMQ_NODE_PORT": str(self.amqp_port),
            "RABBITMQ_DIST_PORT": str(self.dist_port),
            "RABBITMQ_MNESIA_BASE": os.path.join(self.dir, "mnesia"),
            "RABBITMQ_LOG_BASE": os.path.join(self.dir, "log"),
            "RABBITMQ_CONFIG_FILE": os.path.join(self.dir, "rabbitmq"),
            "RABBITMQ_ADVANCED_CONFIG_FILE": os.path.join(self.dir, "advanced.config"),
            "RABBITMQ_ENABLED_PLUGINS_FILE": os.path.join(self.dir, "enabled_plugins"),
            "RABBITMQ_PID_FILE": self.pid_file,
        }

    # lifecycle
    def start(self, wait=True, timeout=120):
        """Boot the node (first time: write its files); wait until it serves unless ``wait=False``.

        With ``wait=False`` the caller does something else while it boots, then
        calls :meth:`wait_ready`.
        """
        sweep_leftovers()
        if not os.path.isdir(self.dir):
            self._write_files()
        _register(self)
        self.destroyed = False
        # -detached returns at once; the node boots in the background
        run(["rabbitmq-server", "-detached"], env=self.env(), timeout=60)
        if wait:
            self.wait_ready(timeout)
        return self

    def _write_files(self):
        for sub in ("mnesia", "log"):
            os.makedirs(os.path.join(self.dir, sub))
        lines = [
            f"listeners.tcp.default = 127.0.0.1:{self.amqp_port}",
            f"management.tcp.port = {self.management_port}",
            "management.tcp.ip = 127.0.0.1",
            # quick statistics, so queue lengths from the API are fresh
            "collect_statistics_interval = 1000",
        ]
        with open(os.path.join(self.dir, "rabbitmq.conf"), "w") as conf:
            conf.write("\n".join(lines) + "\n")
        with open(os.path.join(self.dir, "advanced.config"), "w") as advanced:
            advanced.write("[].\n")
        with open(os.path.join(self.dir, "enabled_plugins"), "w") as enabled:
            enabled.write(f"[{','.join(self.plugins)}].\n")
        # run as root, Debian's rabbitmq-server switches to the rabbitmq user,
        # which must own the node's files (and then finds the usual cookie in its home)
        if os.geteuid() == 0:
            with contextlib.suppress(KeyError):
                account = pwd.getpwnam("rabbitmq")
                for root, dirs, files in os.walk(self.dir):
                    for entry in [root, *(os.path.join(root, n) for n in dirs + files)]:
                        os.chown(entry, account.pw_uid, account.pw_gid)

    def os_pids(self):
        """Pids of this node's processes: its Erlang VM (and, while booting, its scripts)."""
        return node_pids(self.name)

    def answers(self):
        """True if the node accepts AMQP connections (and its management API answers)."""
        if not port_open(self.amqp_port):
            return False
        if self.has_management:
            try:
                response = requests.get(
                    f"{self.management_url}/api/overview", auth=GUEST, timeout=2
                )
            except requests.RequestException:
                return False
            return response.status_code == 200
        return True

    def wait_ready(self, timeout=120):
        return wait_until(
            self.answers, timeout, f"private RabbitMQ {self.node}", describe=self.log_tail
        )

    def log_tail(self, chars=3000):
        text = ""
        log_dir = os.path.join(self.dir, "log")
        with contextlib.suppress(OSError):
            for name in sorted(os.listdir(log_dir)):
                with open(os.path.join(log_dir, name), errors="replace") as log:
                    text += f"--- {name}\n{log.read()[-chars:]}"
        return text

    def ctl(self, *args, timeout=120):
        """``rabbitmqctl -n <this node> ...``: never the machine's node."""
        return run(self.ctl_command(*args), env=self.env(), timeout=timeout)

    def ctl_command(self, *args):
        if not self.node.startswith(PREFIX) or self.node == MACHINE_RABBIT_NODE:
            raise ValueError(f"refusing to drive a node that is not private: {self.node}")
        return ["rabbitmqctl", "-n", self.node, *args]

    # faults
    def stop_app(self):
        """Stop the broker application (clients are disconnected); the Erlang VM stays up."""
        self.ctl("stop_app")

    def start_app(self, timeout=120):
        """Start the broker application again and wait until it serves."""
        self.ctl("start_app", timeout=timeout)
        self.wait_ready(timeout)

    @contextlib.contextmanager
    def app_down(self):
        """The broker stopped inside the block, started again (and serving) whatever happens."""
        self.stop_app()
        try:
            yield self
        finally:
            self.start_app()

    def kill(self, timeout=30):
        """SIGKILL the node's Erlang VM (a crash); :meth:`start` boots it again, data kept.

        Found by its environment, not its pid file: a node killed while it
        boots may not have written one yet.
        """
        pids = self.os_pids()
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        wait_until(lambda: not self.os_pids(), timeout, f"{self.node} (pids {pids}) to die")

    def join(self, other, timeout=120):
        """Make this (running) node a member of ``other``'s cluster; its own data is reset.

        For several private nodes on one machine (each has its own ports); the
        shared cookie lets them talk.
        """
        self.ctl("stop_app")
        self.ctl("reset")
        self.ctl("join_cluster", other.node)
        self.start_app(timeout)

    def stop(self, timeout=60):
        """Stop the node's Erlang VM (politely; SIGKILL if it does not go in ``timeout``)."""
        if not self.os_pids():
            return
        with contextlib.suppress(Exception):
            self.ctl("stop", timeout=timeout)
        self.kill()

    def destroy(self):
        """Kill the node and delete its directory; safe to call more than once.

        SIGKILL, not a polite stop: the data is wiped anyway, and a polite stop
        costs seconds of rabbitmqctl.
        """
        if self.destroyed:
            return
        try:
            self.kill()
        finally:
            shutil.rmtree(self.dir, ignore_errors=True)
            self.destroyed = True
            _unregister(self)


def node_pids(name=None):
    """Pids of the processes whose environment names private node ``name``.

    RabbitMQ 3.10 takes its node name from the environment (not the command
    line), so this finds a node's Erlang VM even before it writes a pid file,
    and never a process of the machine's node. epmd is left out even when a
    private node started it: every node on the machine registers with it.
    Without ``name``: a dict of every private node's name to its pids.
    """
    needle = f"RABBITMQ_NODENAME={name}@localhost".encode() if name else None
    found = collections.defaultdict(list)
    with contextlib.suppress(OSError):
        for entry in os.listdir("/proc"):
            if not entry.isdigit() or int(entry) == os.getpid():
                continue
            try:
                with open(f"/proc/{entry}/environ", "rb") as environ:
                    variables = environ.read().split(b"\0")
                with open(f"/proc/{entry}/comm", "rb") as comm:
                    command = comm.read().strip()
            except OSError:  # gone, or another user's
                continue
            if command == b"epmd":  # started by a node maybe, but every node's: never ours
                continue
            if needle is not None:
                if needle in variables:
                    found[name].append(int(entry))
                continue
            for variable in variables:
                match = re.fullmatch(
                    rb"RABBITMQ_NODENAME=(%s_rmq_\w+)@localhost" % PREFIX.encode(), variable
                )
                if match:
                    found[match.group(1).decode()].append(int(entry))
    return found.get(name, []) if name else dict(found)


def epmd_names(port=4369):
    """Node names registered with the local epmd (its NAMES request), [] if it does not answer."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=2) as conn:
            conn.sendall(struct.pack(">H", 1) + b"n")
            data = b""
            while chunk := conn.recv(4096):
                data += chunk
    except OSError:
        return []
    return re.findall(r"name (\S+) at port", data[4:].decode(errors="replace"))


# --- PostgreSQL -------------------------------------------------------------------------------


def postgres_version():
    """The newest installed PostgreSQL major version (Debian's layout: one dir per version)."""
    versions = [
        v
        for v in os.listdir("/usr/lib/postgresql")
        if os.path.exists(os.path.join("/usr/lib/postgresql", v, "bin", "postgres"))
    ]
    if not versions:
        raise RuntimeError("no PostgreSQL server installed")
    return max(versions, key=lambda v: [int(p) for p in v.split(".")])


class PrivatePostgres(_Private):
    """A PostgreSQL cluster of the test's own (trust auth, a free port), beside ``main``.

    ``with PrivatePostgres() as pg:`` creates and starts it and waits until it
    accepts connections; the block's end stops and drops it (data, config and
    log). ``pg.url(database)`` is a SQLAlchemy/psycopg2 URL as user postgres.

    Faults: :meth:`restart` (``-m immediate`` by default: a crash, then
    recovery) and :meth:`down` (stopped inside a block). This class refuses to
    act on a cluster whose name does not start with :data:`PREFIX`.
    """

    def __init__(self, name=None, version=None):
        self.name = name or unique_name("pg")
        if not self.name.startswith(PREFIX):
            raise ValueError(f"a private cluster's name starts with {PREFIX!r}: {self.name!r}")
        self.version = version or postgres_version()
        self.port = free_port()
        self.created = False
        self.destroyed = False

    def url(self, database="postgres"):
        return f"postgresql://postgres@127.0.0.1:{self.port}/{database}"

    def start(self, timeout=60):
        """Create the cluster (first time) and start it; returns when it accepts connections."""
        sweep_leftovers()
        _register(self)
        self.destroyed = False
        if not self.created:
            run(
                ["pg_createcluster", self.version, self.name, "-p", str(self.port)]
                + ["--", "--auth=trust"],
                timeout=120,
            )
            self.created = True
        self.ctl("start")
        self.wait_ready(timeout)
        return self

    def ctl_command(self, action, *extra):
        if not self.name.startswith(PREFIX) or self.name == MACHINE_POSTGRES_CLUSTER:
            raise ValueError(f"refusing to drive a cluster that is not private: {self.name}")
        # pg_ctlcluster hands over to systemctl where systemd runs: act on the cluster directly
        return [
            "pg_ctlcluster",
            "--skip-systemctl-redirect",
            self.version,
            self.name,
            action,
            *extra,
        ]

    def ctl(self, action, *extra, timeout=120):
        return run(self.ctl_command(action, *extra), timeout=timeout)

    def ready(self):
        command = ["pg_isready", "-h", "127.0.0.1", "-p", str(self.port), "-q"]
        return run(command, check=False, timeout=10).returncode == 0

    def wait_ready(self, timeout=60):
        return wait_until(self.ready, timeout, f"private PostgreSQL {self.name}")

    # faults
    def restart(self, mode="immediate"):
        """Restart (``immediate``: sessions cut, crash recovery), then wait until ready."""
        self.ctl("restart", "-m", mode)
        self.wait_ready()

    @contextlib.contextmanager
    def down(self, mode="immediate"):
        """The cluster stopped inside the block, started again (and ready) whatever happens."""
        self.ctl("stop", "-m", mode)
        try:
            yield self
        finally:
            if not self.ready():
                self.ctl("start")
            self.wait_ready()

    def destroy(self):
        """Stop and drop the cluster; safe to call more than once."""
        if self.destroyed:
            return
        try:
            if self.created:
                drop_postgres_cluster(self.version, self.name)
        finally:
            self.destroyed = True
            _unregister(self)


def drop_postgres_cluster(version, name):
    if not name.startswith(PREFIX):
        raise ValueError(f"refusing to drop a cluster that is not private: {name}")
    # stop first without systemctl (pg_dropcluster --stop may hand over to it), then drop
    run(
        ["pg_ctlcluster", "--skip-systemctl-redirect", version, name, "stop", "-m", "immediate"],
        check=False,
    )
    run(["pg_dropcluster", "--stop", version, name])


def postgres_clusters():
    """(version, name) of every cluster ``pg_lsclusters`` knows; [] without postgresql-common."""
    try:
        result = run(["pg_lsclusters", "--no-header"], check=False)
    except FileNotFoundError:
        return []
    return [tuple(line.split()[:2]) for line in result.stdout.splitlines() if line.strip()]


# --- leftovers --------------------------------------------------------------------------------


def sweep_leftovers(base_dir=None, force=False):
    """Remove private servers of earlier runs whose owner process is gone (once per process).

    Nodes: every process whose environment names a ``testpriv_rmq_*`` node
    (SIGKILL), any such name still registered with epmd (``rabbitmqctl -n
    <it> stop``: a node this user cannot see in /proc), and their directories
    ``<tmp>/testpriv_rmq_*``. Clusters: ``testpriv_pg_*`` in ``pg_lsclusters``
    (stopped and dropped). Servers of a live owner (another test process) stay.
    """
    global _swept
    if _swept and not force:
        return
    _swept = True
    base_dir = base_dir or tempfile.gettempdir()
    for name, pids in node_pids().items():
        if owner_gone(name):
            for pid in pids:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
    with contextlib.suppress(OSError):
        for entry in os.listdir(base_dir):
            if entry.startswith(f"{PREFIX}_rmq_") and owner_gone(entry):
                shutil.rmtree(os.path.join(base_dir, entry), ignore_errors=True)
    for name in epmd_names():
        if name.startswith(f"{PREFIX}_rmq_") and owner_gone(name):
            with contextlib.suppress(Exception):
                run(["rabbitmqctl", "-n", f"{name}@localhost", "stop"], timeout=60)
    for version, name in postgres_clusters():
        if name.startswith(f"{PREFIX}_pg_") and owner_gone(name):
            with contextlib.suppress(Exception):
                drop_postgres_cluster(version, name)


# --- the machine's own servers, watched -------------------------------------------------------


class MachineServersWatch:
    """Connections to the machine's RabbitMQ and PostgreSQL, held open across a block.

    ``with MachineServersWatch() as watch: ...`` then ``watch.problems()``:
    a list naming each server whose connection did not survive the block (a
    restart or a stop of that server cuts it), empty if both are still alive.
    The check runs when the block ends (then the connections are closed);
    called inside the block, ``problems()`` checks now.
    A server that is not reachable when the block starts is not watched
    (:attr:`unwatched` says why); it cannot be disturbed by a run that does not
    reach it either.

    RabbitMQ: a py-amqp connection with heartbeats off (so an idle connection
    is never closed by the server for missed heartbeats) and a server-named
    exclusive queue: after the block the queue must still exist on the same
    channel (a passive declare) and the connection must have had no close.
    PostgreSQL: one psycopg2 connection; ``SELECT 1`` must work on it after
    the block, and the postmaster's start time must not have changed.
    """

    def __init__(
        self,
        amqp_host=f"127.0.0.1:{MACHINE_RABBIT_PORT}",
        postgres_dsn=f"host=127.0.0.1 port={MACHINE_POSTGRES_PORT} user=postgres dbname=postgres",
    ):
        self.amqp_host = amqp_host
        self.postgres_dsn = postgres_dsn
        self.amqp = None
        self.channel = None
        self.queue = None
        self.postgres = None
        self.postmaster_started = None
        self.unwatched = {}  # server -> why it is not watched
        self.found = None  # the problems seen when the block ended

    def __enter__(self):
        import amqp
        import psycopg2

        # a connection counts as watched only once it is fully set up
        connection = None
        try:
            connection = amqp.Connection(
                self.amqp_host, userid="guest", password="guest", heartbeat=0, connect_timeout=5
            )
            connection.connect()
            self.channel = connection.channel()
            self.queue = self.channel.queue_declare("", exclusive=True).queue
            self.amqp = connection
        except Exception as error:
            self.unwatched["RabbitMQ"] = repr(error)
            if connection is not None:
                with contextlib.suppress(Exception):
                    connection.collect()
        connection = None
        try:
            connection = psycopg2.connect(self.postgres_dsn, connect_timeout=5)
            connection.autocommit = True
            with connection.cursor() as cursor:
                cursor.execute("SELECT pg_postmaster_start_time()")
                self.postmaster_started = cursor.fetchone()[0]
            self.postgres = connection
        except Exception as error:
            self.unwatched["PostgreSQL"] = repr(error)
            if connection is not None:
                connection.close()
        return self

    def __exit__(self, *exc_info):
        try:
            self.found = self.check()
        finally:
            self.close()

    def problems(self):
        """What went wrong with the watched connections (see the class docstring)."""
        return self.check() if self.found is None else self.found

    def check(self):
        found = []
        if self.amqp is not None:
            try:
                # a close from the server would be waiting on the socket: reading it raises
                with contextlib.suppress(socket.timeout):
                    self.amqp.drain_events(timeout=0.5)
                self.channel.queue_declare(self.queue, passive=True)
            except Exception as error:
                found.append(f"the machine's RabbitMQ dropped a connection held open: {error!r}")
        if self.postgres is not None:
            try:
                with self.postgres.cursor() as cursor:
                    cursor.execute("SELECT 1, pg_postmaster_start_time()")
                    one, started = cursor.fetchone()
                if one != 1 or started != self.postmaster_started:
                    found.append(
                        f"the machine's PostgreSQL restarted: started {self.postmaster_started}, "
                        f"now {started}"
                    )
            except Exception as error:
                found.append(f"the machine's PostgreSQL dropped a connection held open: {error!r}")
        return found

    def close(self):
        if self.amqp is not None:
            with contextlib.suppress(Exception):
                self.amqp.close()
        if self.postgres is not None:
            with contextlib.suppress(Exception):
                self.postgres.close()
