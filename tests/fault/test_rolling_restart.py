"""The short rolling restart of ``make test``: one users, one orders, one gateway replica.

Two gateways behind HAProxy, two replicas of users and of orders, all run by the
production entry (``python -m shared.cli run``) on a private RabbitMQ and
PostgreSQL (:mod:`tests.fault.rolling`); under a steady load, users 1, orders 1
and gateway 1 are replaced in turn (SIGTERM, exit, new one, ready). The promise:
no request fails as the client sees it (not one 5xx, connection error, timeout
or retry), and the harness's consistency checks hold. ``python -m
tests.fault.run --rolling`` replaces all six.
"""

import time

import pytest

from tests.fault.harness import format_report
from tests.fault.rolling import HAProxy, RollingRun, format_rolling
from tests.private_servers import MachineServersWatch

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(not HAProxy.available(), reason="haproxy is not installed"),
]


def test_a_rolling_restart_under_load_fails_no_request(tmp_path):
    started = time.monotonic()
    with MachineServersWatch() as machine:
        with RollingRun(tmp_path, clients=3, settle=1.5) as run:
            run.wait_for_traffic()
            run.calm(1)
            run.rolling_restart(only={"users 1", "orders 1", "gateway 1"})
            run.finish_load()
            report = run.verify(consistency_timeout=30)
    shown = format_report(report) + "\n" + format_rolling(report)
    print(shown)
    print(f"with private servers set up and torn down: {time.monotonic() - started:.1f} s")
    assert report["problems"] == [], shown
    assert report["rolling"]["failed_requests"] == 0, shown
    replaced = report["rolling"]["replacements"]
    assert [row["process"] for row in replaced] == ["users 1", "orders 1", "gateway 1"]
    assert all(row["requests"] > 0 and row["failed"] == 0 for row in replaced), shown
    assert all(row["exit_status"] == 0 and row["stop_seconds"] < 10 for row in replaced), shown
    assert report["orders_acknowledged"] > 0
    assert machine.problems() == []
