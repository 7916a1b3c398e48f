"""The short fault run of ``make test``: kill -9 orders mid-load, then restart RabbitMQ.

The broker restarted is a private node that the run starts for itself (and the
database a private PostgreSQL cluster), so this test can run beside any other
work: the machine's own RabbitMQ and PostgreSQL are never touched, and the test
proves it by holding a connection to each for the whole run.
``make fault`` (``tests/fault/run.py``) runs every fault.
"""

import time

import pytest

from tests.fault.harness import FaultRun, format_report
from tests.private_servers import MachineServersWatch

pytestmark = pytest.mark.integration


def test_a_killed_orders_service_and_a_broker_restart_lose_and_duplicate_nothing(tmp_path):
    started = time.monotonic()
    with MachineServersWatch() as machine:
        with FaultRun(tmp_path, clients=3) as run:
            run.calm(3)
            run.step(run.kill_and_restart, run.system.orders[0], "kill -9 orders, restart")
            run.calm(3)
            run.step(run.restart_broker)
            run.calm(3)
            run.finish_load()
            report = run.verify(consistency_timeout=30)
    print(format_report(report))
    print(f"with private servers set up and torn down: {time.monotonic() - started:.1f} s")
    assert report["problems"] == [], format_report(report)
    assert report["orders_acknowledged"] > 0
    assert [name for name, _ in report["faults"]] == [
        "kill -9 orders, restart",
        "RabbitMQ restart (app stopped, started)",
    ]
    # the faults hit the private servers only: the machine's kept their connections
    assert machine.problems() == []
    print(f"machine's servers not watched (not reachable): {machine.unwatched or 'none'}")


def test_a_killed_cluster_node_loses_nothing_and_orders_go_on_meanwhile(tmp_path):
    """The short form of ``make fault``'s cluster run: three private RabbitMQ nodes with
    quorum queues, two replicas of users and orders; kill -9 the node holding the
    leader of orders' queue, boot it again. Orders must keep being acknowledged while
    it is down (the harness counts that a broken promise otherwise)."""
    with MachineServersWatch() as machine:
        with FaultRun(tmp_path, clients=3, nodes=3, replicas=2) as run:
            run.calm(3)
            run.step(run.kill_queue_leader_node)
            run.calm(3)
            run.finish_load()
            report = run.verify(consistency_timeout=30)
    print(format_report(report))
    assert report["problems"] == [], format_report(report)
    (fault,) = report["node_faults"]
    assert fault["orders_acknowledged_while_down"] > 0
    assert machine.problems() == []
