"""`make bench`: how fast the system is, next to stock nameko's floor, in one run.

Starts the three services on PostgreSQL (throwaway databases) and a private
RabbitMQ vhost, plus two stock-nameko baselines (an HTTP hello, and HTTP -> one
RPC echo), seeds eight users and an order, then measures with wrk in several
short interleaved rounds; after each run it waits until the broker's queues are
empty (the events a run caused are its work, not the next run's). Prints req/s
(median, min-max), p50 and p99 per target and concurrency, each route's ratio
to the echo baseline, CPU per request of every process, and every service's
resident memory afterwards; writes the same as JSON under var/bench/.
Bounded (about three minutes) and on 127.0.0.1 only.

Seeded mode (``--seeded`` or BENCH_SEED=1, ``make bench-seeded``, about eight
minutes): before the services start, the throwaway databases get 100k users and
1M orders with their items (:mod:`bench.seed`), then every hot statement is
explained on them (:mod:`bench.explain`); the same routes are measured, plus two
deep pages of GET /v1/orders (a user's page 201 of their 5,000 orders, and an
admin's page 45,001 of all orders), each reached by its cursor.

Environment: BENCH_ROUNDS (5), BENCH_SECONDS (3), BENCH_CONNECTIONS ("8,32"),
BENCH_POSTGRES_URL, BENCH_RABBIT (amqp host:port), BENCH_RABBIT_API, and
BENCH_ONLY: measure only targets whose name contains one of these comma-separated
words (the echo baseline is always measured, for the ratios).
"""

import argparse
import json
import os
import re
import secrets
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime

import kombu
import requests
from sqlalchemy import text

from bench import explain
from bench import seed as bulk
from shared.db import engine_for
from shared.migrate import alembic_config
from shared.pagination import encode_cursor

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BIN = os.path.dirname(sys.executable)
ROUNDS = int(os.environ.get("BENCH_ROUNDS", 5))
SECONDS = int(os.environ.get("BENCH_SECONDS", 3))
CONNECTIONS = [int(c) for c in os.environ.get("BENCH_CONNECTIONS", "8,32").split(",")]
ONLY = [word for word in os.environ.get("BENCH_ONLY", "").split(",") if word]
POSTGRES = os.environ.get("BENCH_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
RABBIT = os.environ.get("BENCH_RABBIT", "127.0.0.1:5672")
RABBIT_API = os.environ.get("BENCH_RABBIT_API", "http://guest:guest@127.0.0.1:15672")
# production refuses a guessable JWT secret: a fresh random one per run
SECRET = secrets.token_urlsafe(48)
USERS = 8  # orders and reads spread over several users, as real traffic does

PORTS = {
    "gateway": 18000,
    "users": 18001,
    "orders": 18002,
    "hello": 18010,
    "echo": 18011,
    "echo_service": 18012,
}


class Stack:
    """Everything the run starts, so that it can all be stopped whatever happens."""

    def __init__(self):
        self.vhost = f"bench-{uuid.uuid4().hex[:8]}"
        self.databases = {}
        self.processes = {}
        self.tmp = tempfile.mkdtemp(prefix="bench-")

    # -- infrastructure ---------------------------------------------------
    def create_vhost(self):
        requests.put(f"{RABBIT_API}/api/vhosts/{self.vhost}", timeout=10).raise_for_status()
        requests.put(
            f"{RABBIT_API}/api/permissions/{self.vhost}/guest",
            json={"configure": ".*", "write": ".*", "read": ".*"},
            timeout=10,
        ).raise_for_status()
        self.amqp_uri = f"amqp://guest:guest@{RABBIT}/{self.vhost}"
        return self.amqp_uri

    def create_database(self, service):
        from alembic import command

        name = f"bench_{service}_{self.vhost[6:]}"
        admin = engine_for(POSTGRES, isolation_level="AUTOCOMMIT")
        with admin.connect() as connection:
            connection.execute(text(f'CREATE DATABASE "{name}"'))
        admin.dispose()
        uri = engine_for(POSTGRES).url.set(database=name).render_as_string(hide_password=False)
        command.upgrade(alembic_config(service, uri), "head")
        self.databases[service] = name
        return uri

    def start(self, name, config, *modules, env=None):
        log = open(os.path.join(self.tmp, f"{name}.log"), "w")
        self.processes[name] = subprocess.Popen(
            [f"{BIN}/nameko", "run", "--config", config, *modules],
            env={**os.environ, "PYTHONWARNINGS": "ignore", **(env or {})},
            cwd=ROOT,
            stdout=log,
            stderr=subprocess.STDOUT,
        )

    def stop(self):
        for process in self.processes.values():
            if process.poll() is None:
                process.terminate()
        for process in self.processes.values():
            try:
                process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                process.kill()
        self.drop_databases()
        requests.delete(f"{RABBIT_API}/api/vhosts/{self.vhost}", timeout=10)
        self.remove_tmp()

    def drop_databases(self):
        if self.databases:
            admin = engine_for(POSTGRES, isolation_level="AUTOCOMMIT")
            with admin.connect() as connection:
                for name in self.databases.values():
                    connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
            admin.dispose()
            self.databases = {}

    def remove_tmp(self):
        shutil.rmtree(self.tmp, ignore_errors=True)

    def process_groups(self):
        """Who may spend CPU on a request: our processes, RabbitMQ and PostgreSQL.

        RabbitMQ and PostgreSQL are the servers the bench talks to (found by
        their listening port, so that other nodes and clusters on the machine,
        such as the fault suite's, are left out), counted whole, whoever else
        uses them: run the bench on an otherwise idle machine.
        """
        groups = {name: [process.pid] for name, process in self.processes.items()}
        groups["rabbitmq"] = server_pids("beam.smp", int(RABBIT.rsplit(":", 1)[1]))
        groups["postgres"] = server_pids("postgres", engine_for(POSTGRES).url.port or 5432)
        return groups

    def rss_mb(self, name):
        with open(f"/proc/{self.processes[name].pid}/status") as status:
            kib = int(re.search(r"VmRSS:\s+(\d+)", status.read()).group(1))
        return round(kib / 1024, 1)


CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def pids_named(command):
    pids = []
    for entry in os.listdir("/proc"):
        try:
            with open(f"/proc/{entry}/comm") as comm:
                if comm.read().strip() == command:
                    pids.append(int(entry))
        except (FileNotFoundError, NotADirectoryError, ProcessLookupError):
            continue
    return pids


def listening_inodes(port):
    """Socket inodes listening on ``port`` (TCP, IPv4 and IPv6)."""
    inodes = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            with open(table) as lines:
                next(lines)
                for line in lines:
                    fields = line.split()
                    if fields[3] == "0A" and int(fields[1].rsplit(":", 1)[1], 16) == port:
                        inodes.add(fields[9])
        except FileNotFoundError:
            continue
    return inodes


def server_pids(command, port):
    """The ``command`` process listening on ``port`` and its ``command`` children.

    All ``command`` processes if none can be told (another user's sockets are
    not visible to us).
    """
    named = pids_named(command)
    inodes = {f"socket:[{inode}]" for inode in listening_inodes(port)}
    owners = set()
    for pid in named:
        try:
            fds = os.listdir(f"/proc/{pid}/fd")
            if any(os.readlink(f"/proc/{pid}/fd/{fd}") in inodes for fd in fds):
                owners.add(pid)
        except (FileNotFoundError, PermissionError, ProcessLookupError):
            continue
    if not owners:
        return named
    children = set()
    for pid in named:
        try:
            with open(f"/proc/{pid}/stat") as stat:
                parent = int(stat.read().rsplit(")", 1)[1].split()[1])
        except (FileNotFoundError, ProcessLookupError):
            continue
        if parent in owners:
            children.add(pid)
    return sorted(owners | children)


def cpu_seconds(pids):
    """User + system CPU the processes have used so far (exited ones count nothing)."""
    ticks = 0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/stat") as stat:
                fields = stat.read().rsplit(")", 1)[1].split()
        except (FileNotFoundError, ProcessLookupError):
            continue
        ticks += int(fields[11]) + int(fields[12])  # utime, stime
    return ticks / CLOCK_TICKS


def wait_healthy(port, path="/health", timeout=60):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if requests.get(f"http://127.0.0.1:{port}{path}", timeout=1).status_code == 200:
                return
        except requests.RequestException:
            pass
        time.sleep(0.3)
    raise SystemExit(f"nothing answered on 127.0.0.1:{port}{path} within {timeout} s")


def baseline_config(path, amqp_uri, port):
    with open(path, "w") as config:
        config.write(f"AMQP_URI: {amqp_uri}\nWEB_SERVER_ADDRESS: 127.0.0.1:{port}\n")
    return path


def start_everything(stack, seeded=False):
    """Start every process; ``seeded``: load the data volume and explain first.

    Returns what seeded mode adds to the report (``{}`` otherwise).
    """
    amqp_uri = stack.create_vhost()
    common = {
        "AMQP_URI": amqp_uri,
        "JWT_SECRET": SECRET,
        "ENVIRONMENT": "production",
        "LOG_LEVEL": os.environ.get("BENCH_LOG_LEVEL", "INFO"),
    }
    users_db, orders_db = stack.create_database("users"), stack.create_database("orders")
    extra_report = {}
    if seeded:
        timings = bulk.load(users_db, orders_db)
        print()
        plans = explain.explain_all(users_db, orders_db)
        print(flush=True)
        extra_report = {
            "load_s": {name: seconds for name, (_, seconds) in timings.items()},
            "explain": [
                {"label": plan["label"], "sql": plan["sql"], **plan["summary"]} for plan in plans
            ],
        }
    for service, extra in (
        ("users", {"USERS_DB_URI": users_db}),
        ("orders", {"ORDERS_DB_URI": orders_db}),
        ("gateway", {}),
    ):
        env = {**common, **extra, "WEB_SERVER_ADDRESS": f"127.0.0.1:{PORTS[service]}"}
        stack.start(service, f"config/{service}.yaml", f"{service}.service", env=env)
    stack.start(
        "hello",
        baseline_config(f"{stack.tmp}/hello.yaml", amqp_uri, PORTS["hello"]),
        "bench.baselines:Hello",
    )
    stack.start(
        "echo_service",
        baseline_config(f"{stack.tmp}/echo.yaml", amqp_uri, PORTS["echo_service"]),
        "bench.baselines:Echo",
    )
    stack.start(
        "echo",
        baseline_config(f"{stack.tmp}/echogw.yaml", amqp_uri, PORTS["echo"]),
        "bench.baselines:EchoGateway",
    )
    for name in ("users", "orders", "gateway"):
        wait_healthy(PORTS[name])
    wait_healthy(PORTS["hello"], "/hello")
    wait_healthy(PORTS["echo"], "/echo")
    wait_healthy(PORTS["gateway"], "/ready")
    return extra_report


def seed(users=USERS):
    """``users`` users with tokens, and one order of the first user's to read."""
    base = f"http://127.0.0.1:{PORTS['gateway']}"
    password = "a bench password"
    tokens = []
    for _ in range(users):
        email = f"bench-{uuid.uuid4().hex[:8]}@example.com"
        requests.post(
            f"{base}/v1/users",
            timeout=10,
            json={"email": email, "name": "Bench", "password": password},
        ).raise_for_status()
        response = requests.post(
            f"{base}/v1/auth/token", timeout=10, json={"email": email, "password": password}
        )
        response.raise_for_status()
        tokens.append(response.json()["access_token"])
    order = requests.post(
        f"{base}/v1/orders",
        timeout=10,
        headers={"Authorization": f"Bearer {tokens[0]}", "Idempotency-Key": "seed"},
        json={"items": [{"sku": "SEED", "quantity": 1, "unit_price": "1.00"}]},
    )
    order.raise_for_status()
    return tokens, order.json()["id"]


def log_in(emails, password=bulk.PASSWORD):
    """An access token per email (seeded mode: the users were loaded, not registered)."""
    tokens = []
    for email in emails:
        response = requests.post(
            f"http://127.0.0.1:{PORTS['gateway']}/v1/auth/token",
            timeout=10,
            json={"email": email, "password": password},
        )
        response.raise_for_status()
        tokens.append(response.json()["access_token"])
    return tokens


class Quiet:
    """Waits until the vhost's queues are empty: what a run left queued must not slow the next.

    Message counts come from passive queue declarations (exact, unlike the
    management API's sampled statistics). They count ready messages only; what
    consumers hold unacknowledged is at most their prefetch, a few milliseconds
    of work, done within the 0.2 s between the two empty looks.
    """

    def __init__(self, vhost, amqp_uri):
        response = requests.get(f"{RABBIT_API}/api/queues/{vhost}", timeout=10)
        response.raise_for_status()
        # another connection's exclusive queue cannot be looked at (nor can it fill up)
        self.queues = [queue["name"] for queue in response.json() if not queue.get("exclusive")]
        self.connection = kombu.Connection(amqp_uri)
        self.channel = self.connection.channel()

    def queued(self):
        return sum(
            self.channel.queue_declare(name, passive=True).message_count for name in self.queues
        )

    def wait(self, timeout=60):
        """Seconds it took until two looks 0.2 s apart found every queue empty."""
        started = time.monotonic()
        empty_looks = 0
        while empty_looks < 2 and time.monotonic() - started < timeout:
            empty_looks = empty_looks + 1 if self.queued() == 0 else 0
            time.sleep(0.2)
        return round(time.monotonic() - started, 1)

    def close(self):
        self.connection.release()


def parse_wrk(output):
    def seconds(value, unit):
        return float(value) * {"us": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0}[unit]

    latency = dict(
        (pct, seconds(value, unit))
        for pct, value, unit in re.findall(r"^\s+(50|99)%\s+([\d.]+)(us|ms|s|m)\s*$", output, re.M)
    )
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", output).group(1))
    requests_done = int(re.search(r"(\d+) requests in", output).group(1))
    bad = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", output)
    errors = re.search(r"Socket errors:.*", output)
    return {
        "rps": rps,
        "requests": requests_done,
        "p50_ms": round(latency["50"] * 1000, 2),
        "p99_ms": round(latency["99"] * 1000, 2),
        "non_2xx": int(bad.group(1)) if bad else 0,
        "socket_errors": errors.group(0) if errors else None,
    }


def wrk(url, connections, script, tokens, stack):
    """One wrk run; also the CPU milliseconds each process group spent per request."""
    # looked up per run: PostgreSQL starts a process per new pooled connection
    groups = stack.process_groups()
    before = {name: cpu_seconds(pids) for name, pids in groups.items()}
    result = subprocess.run(
        [
            "wrk",
            "-t2",
            f"-c{connections}",
            f"-d{SECONDS}s",
            "--latency",
            "--timeout",
            "5s",
            "-s",
            os.path.join(ROOT, "bench", script),
            url,
        ],
        env={**os.environ, "BENCH_TOKENS": ",".join(tokens)},
        capture_output=True,
        text=True,
        check=True,
        timeout=SECONDS + 30,
    )
    run = parse_wrk(result.stdout)
    spent = {name: cpu_seconds(pids) - before[name] for name, pids in groups.items()}
    run["cpu_ms_per_request"] = {
        name: round(seconds * 1000 / max(run["requests"], 1), 2)
        for name, seconds in spent.items()
        if seconds > 0
    }
    return run


def targets(tokens, order_id, admin_token=None):
    """``(name, url, wrk script, tokens)``; the order is the first user's: only they may read it.

    With ``admin_token`` (seeded mode), also two deep pages of GET /v1/orders:
    each bench user's page 201 (the page after their 4,000th order), and the
    admin's page 45,001 of all orders.
    """
    gateway = f"http://127.0.0.1:{PORTS['gateway']}"
    every = [
        ("baseline: hello", f"http://127.0.0.1:{PORTS['hello']}/hello", "get.lua", []),
        ("baseline: http->rpc echo", f"http://127.0.0.1:{PORTS['echo']}/echo", "get.lua", []),
        ("GET /v1/orders/{id}", f"{gateway}/v1/orders/{order_id}", "get.lua", tokens[:1]),
        ("GET /v1/users/me", f"{gateway}/v1/users/me", "get.lua", tokens),
        ("POST /v1/orders", f"{gateway}/v1/orders", "post_order.lua", tokens),
    ]
    if admin_token is not None:
        # a cursor is an order id: after user 1's 4,000th order each bench user
        # (their orders interleave) still has about 1,000 orders to page through
        after_user = list(bulk.order_ids_of(1))[3999]
        after_admin = bulk.ORDERS * 9 // 10
        every += [
            (
                "GET /v1/orders deep (user)",
                f"{gateway}/v1/orders?cursor={encode_cursor(after_user)}",
                "get.lua",
                tokens,
            ),
            (
                "GET /v1/orders deep (admin)",
                f"{gateway}/v1/orders?cursor={encode_cursor(after_admin)}",
                "get.lua",
                [admin_token],
            ),
        ]
    return [
        target
        for target in every
        if not ONLY or "echo" in target[0] or any(word in target[0] for word in ONLY)
    ]


def summarise(runs):
    rps = [run["rps"] for run in runs]
    return {
        "rps_median": round(statistics.median(rps), 1),
        "rps_min": round(min(rps), 1),
        "rps_max": round(max(rps), 1),
        "p50_ms": round(statistics.median(run["p50_ms"] for run in runs), 2),
        "p99_ms": round(statistics.median(run["p99_ms"] for run in runs), 2),
        "non_2xx": sum(run["non_2xx"] for run in runs),
        "settle_s_max": max(run["settle_s"] for run in runs),
        "cpu_ms_per_request": {
            name: round(
                statistics.median(run["cpu_ms_per_request"].get(name, 0) for run in runs), 2
            )
            for name in runs[0]["cpu_ms_per_request"]
        },
    }


def print_table(results, rss):
    echo = {c: results[("baseline: http->rpc echo", c)]["rps_median"] for c in CONNECTIONS}
    header = (
        f"{'target':28} {'conns':>5} {'req/s median (min-max)':>24} {'p50 ms':>8} "
        f"{'p99 ms':>8} {'x echo':>7} {'non-2xx':>8}"
    )
    print(header)
    print("-" * len(header))
    for (name, connections), row in results.items():
        spread = f"{row['rps_median']:.0f} ({row['rps_min']:.0f}-{row['rps_max']:.0f})"
        ratio = row["rps_median"] / echo[connections] if echo[connections] else 0
        print(
            f"{name:28} {connections:>5} {spread:>24} {row['p50_ms']:>8.1f} "
            f"{row['p99_ms']:>8.1f} {ratio:>7.2f} {row['non_2xx']:>8}"
        )
    print()
    print(f"CPU ms per request at c{CONNECTIONS[0]} (median of rounds; wrk itself not counted):")
    for (name, connections), row in results.items():
        if connections == CONNECTIONS[0]:
            spent = row["cpu_ms_per_request"]
            parts = ", ".join(f"{k} {v:.2f}" for k, v in spent.items() if v >= 0.05)
            print(f"  {name:28} total {sum(spent.values()):5.2f}: {parts}")
    print()
    print(
        "resident memory after the run (MB): "
        + ", ".join(f"{name} {mb}" for name, mb in rss.items())
    )


def main():
    parser = argparse.ArgumentParser(description="The benchmark (see the module docstring).")
    parser.add_argument(
        "--seeded",
        action="store_true",
        default=os.environ.get("BENCH_SEED", "") not in ("", "0"),
        help="load 100k users and 1M orders first, and explain the hot queries (BENCH_SEED=1)",
    )
    seeded = parser.parse_args().seeded
    if not shutil.which("wrk"):
        sys.exit("wrk is not installed: apt-get install wrk")
    stack = Stack()
    started = time.monotonic()
    quiet = None
    try:
        extra_report = start_everything(stack, seeded)
        if seeded:
            emails = [bulk.email_of(n) for n in range(1, bulk.BENCH_USERS + 1)]
            tokens = log_in(emails)
            (admin_token,) = log_in([bulk.email_of(bulk.ADMIN_ID)])
            # one of the first user's orders, from the middle of the table
            own = list(bulk.order_ids_of(1))
            order_id = own[len(own) // 2]
        else:
            tokens, order_id = seed()
            admin_token = None
        quiet = Quiet(stack.vhost, stack.amqp_uri)
        runs = {}
        for round_number in range(ROUNDS):
            for name, url, script, target_tokens in targets(tokens, order_id, admin_token):
                for connections in CONNECTIONS:
                    run = wrk(url, connections, script, target_tokens, stack)
                    # events still queued are work the run caused: let it finish
                    run["settle_s"] = quiet.wait()
                    runs.setdefault((name, connections), []).append(run)
                    print(
                        f"round {round_number + 1}/{ROUNDS} {name} c{connections}: "
                        f"{run['rps']:.0f} req/s p99 {run['p99_ms']:.1f} ms, "
                        f"queues empty {run['settle_s']} s after",
                        flush=True,
                    )
        rss = {name: stack.rss_mb(name) for name in ("gateway", "users", "orders")}
    finally:
        if quiet is not None:
            quiet.close()
        stack.stop()
    results = {key: summarise(value) for key, value in runs.items()}
    print()
    if seeded:
        print(
            f"seeded: {bulk.USERS:,} users, {bulk.ORDERS:,} orders, loaded in "
            f"{extra_report['load_s']['total']} s (inserts {extra_report['load_s']['insert total']}"
            f" s, VACUUM ANALYZE {extra_report['load_s']['VACUUM ANALYZE']} s)"
        )
    print_table(results, rss)
    report = {
        "when": datetime.now(UTC).isoformat(),
        "mode": "seeded" if seeded else "empty",
        **extra_report,
        "machine": {"cpus": os.cpu_count(), "python": sys.version.split()[0]},
        "settings": {"rounds": ROUNDS, "seconds": SECONDS, "connections": CONNECTIONS},
        "results": [
            {"target": name, "connections": c, **row} for (name, c), row in results.items()
        ],
        "rss_mb": rss,
        "duration_s": round(time.monotonic() - started, 1),
    }
    os.makedirs(os.path.join(ROOT, "var", "bench"), exist_ok=True)
    path = os.path.join(ROOT, "var", "bench", f"results-{int(time.time())}.json")
    with open(path, "w") as out:
        json.dump(report, out, indent=2)
    print(f"results written to {os.path.relpath(path, ROOT)} ({report['duration_s']} s)")


if __name__ == "__main__":
    main()
