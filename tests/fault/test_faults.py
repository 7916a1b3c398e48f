"""The short fault run of ``make test``: kill -9 orders mid-load, then restart RabbitMQ.

It restarts this machine's real RabbitMQ, so it runs in this pytest session only,
between other tests (pytest runs them one at a time), never beside another
test process. ``make fault`` (``tests/fault/run.py``) runs every fault.
"""

import pytest

from tests.fault.harness import FaultRun, format_report

pytestmark = pytest.mark.integration


def test_a_killed_orders_service_and_a_broker_restart_lose_and_duplicate_nothing(tmp_path):
    with FaultRun(tmp_path, clients=3) as run:
        run.calm(3)
        run.step(run.kill_and_restart, run.system.orders[0], "kill -9 orders, restart")
        run.calm(3)
        run.step(run.restart_broker)
        run.calm(3)
        run.finish_load()
        report = run.verify(consistency_timeout=30)
    print(format_report(report))
    assert report["problems"] == [], format_report(report)
    assert report["orders_acknowledged"] > 0
    assert [name for name, _ in report["faults"]] == [
        "kill -9 orders, restart",
        "RabbitMQ restart (stop_app/start_app)",
    ]
