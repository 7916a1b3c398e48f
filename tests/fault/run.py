"""``make fault``: the whole fault suite against the real system on PostgreSQL.

    python -m tests.fault.run [--clients 4] [--calm 5] [--log-dir DIR]
    python -m tests.fault.run --cluster      # a 3-node RabbitMQ cluster, node faults
    python -m tests.fault.run --rolling      # a rolling restart behind HAProxy

A bounded mixed load (register, log in, create orders with an Idempotency-Key,
cancel, read; retries on 5xx, timeouts and connection errors with the same key)
runs while, one after another: orders, users and the gateway are killed with
SIGKILL and restarted; RabbitMQ's app is stopped and started; RabbitMQ's Erlang
VM is killed with SIGKILL and booted again; PostgreSQL is stopped in immediate
mode and started; a second orders instance joins the queue and the first is
killed mid-load. Then it waits for the system to settle and prints the report;
the exit status is 1 if any promise was broken. Takes about three minutes.

RabbitMQ and PostgreSQL here are a private node and a private cluster that the
run starts for itself and wipes at the end (:mod:`tests.private_servers`): the
machine's own are never touched, and the run proves it by holding a connection
to each throughout (a dropped one is a broken promise). It can run beside other
work.

``--rolling`` (:mod:`tests.fault.rolling`, needs ``haproxy``): two gateways
behind HAProxy, two replicas of users and of orders, all run by the production
entry (``python -m shared.cli run``); under the load, each of the six is
replaced in turn (SIGTERM, exit, new one, ready). Every failed request counts,
retried or not: the promise is none. ``--no-drain`` skips taking a gateway out
of HAProxy before its SIGTERM.
"""

import argparse
import signal
import sys
import tempfile
import time

from tests.fault.harness import FaultRun, format_report
from tests.fault.rolling import RollingRun, format_rolling
from tests.private_servers import MachineServersWatch


def scenario(run, calm):
    system = run.system
    run.calm(calm)
    run.step(run.kill_and_restart, system.orders[0], "kill -9 orders, restart")
    run.calm(calm)
    run.step(run.kill_and_restart, system.users, "kill -9 users, restart")
    run.calm(calm)
    run.step(run.kill_and_restart, system.gateway, "kill -9 gateway, restart")
    run.calm(calm)
    run.step(run.restart_broker)
    run.calm(calm)
    run.step(run.kill_broker)
    run.calm(calm)
    run.step(run.restart_postgres)
    run.calm(calm)
    run.step(run.kill_one_of_two_orders)
    run.calm(calm)


def cluster_scenario(run, calm):
    """A 3-node RabbitMQ cluster with quorum queues, two replicas of users and orders."""
    run.calm(calm)
    run.step(run.kill_queue_leader_node)
    run.calm(calm)
    run.step(run.stop_node_gracefully)
    run.calm(calm)


def rolling_scenario(run, calm):
    """Every process replaced one by one: users 1, 2, orders 1, 2, gateway 1, 2."""
    run.wait_for_traffic()
    run.calm(calm)
    run.rolling_restart()
    run.calm(calm)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=4)
    parser.add_argument("--calm", type=float, default=5.0, help="seconds of load between faults")
    parser.add_argument("--log-dir", help="keep the services' logs here (default: a temp dir)")
    parser.add_argument(
        "--cluster",
        action="store_true",
        help="3 RabbitMQ nodes with quorum queues, 2 replicas of users and orders; node faults",
    )
    parser.add_argument(
        "--rolling",
        action="store_true",
        help="2 gateways behind HAProxy, 2 users, 2 orders; a rolling restart of all six",
    )
    parser.add_argument(
        "--no-drain",
        action="store_true",
        help="with --rolling: SIGTERM a gateway without draining it in HAProxy first",
    )
    args = parser.parse_args(argv)
    # SIGTERM (a CI timeout) unwinds like Ctrl-C, so the private servers are wiped
    signal.signal(signal.SIGTERM, lambda *_: (_ for _ in ()).throw(KeyboardInterrupt()))
    log_dir = args.log_dir or tempfile.mkdtemp(prefix="fault-")
    started = time.monotonic()
    print(f"fault run: {args.clients} clients, logs in {log_dir}", flush=True)
    with MachineServersWatch() as machine:
        if args.rolling:
            chosen = RollingRun(log_dir, clients=args.clients, drain=not args.no_drain)
            play = rolling_scenario
        else:
            shape = {"nodes": 3, "replicas": 2} if args.cluster else {}
            chosen = FaultRun(log_dir, clients=args.clients, **shape)
            play = cluster_scenario if args.cluster else scenario
        with chosen as run:
            play(run, args.calm)
            run.finish_load()
            report = run.verify()
    report["problems"].extend(machine.problems())
    print(format_report(report), flush=True)
    if args.rolling:
        print(format_rolling(report), flush=True)
    for server, why in machine.unwatched.items():
        print(f"the machine's {server} was not watched (not reachable): {why}", flush=True)
    print(f"total {time.monotonic() - started:.0f} s", flush=True)
    return 1 if report["problems"] else 0


if __name__ == "__main__":
    sys.exit(main())
