"""Observability of the running system: correlated logs, and a real Prometheus on its metrics."""

import json
import os
import shutil
import subprocess
import time
import uuid

import pytest
import requests
import yaml
from nameko.testing.utils import find_free_port

from tests.helpers import answers_ok, wait_until

MONITORING = os.path.join(os.path.dirname(__file__), "..", "..", "monitoring")
RABBITMQ_PROMETHEUS = "127.0.0.1:15692"
ITEMS = [{"sku": "BOOK-42", "quantity": 2, "unit_price": "19.99"}]


def json_lines(text):
    for line in text.splitlines():
        if line.startswith("{"):
            yield json.loads(line)


def test_one_request_id_shows_in_the_json_logs_of_gateway_users_and_orders(system):
    _, auth = system.register_and_login()
    request_id = f"trace-{uuid.uuid4().hex}"
    response = requests.post(
        f"{system.api}/v1/orders",
        json={"items": ITEMS},
        timeout=10,
        headers={**auth, "X-Request-ID": request_id},
    )
    assert response.status_code == 201
    assert response.headers["X-Request-ID"] == request_id

    def entries(service):
        return [e for e in json_lines(system[service].log()) if e.get("request_id") == request_id]

    # users sees it twice: the user check over RPC, then order_created relayed by the outbox
    assert wait_until(
        lambda: any(e.get("entrypoint") == "users.handle_order_created" for e in entries("users")),
        10,
    )
    for service in ("gateway", "users", "orders"):
        found = entries(service)
        assert found, f"{service} logged nothing with the request id"
        for entry in found:
            assert entry["service"] == service
            assert {"time", "level", "logger", "message", "call_id"} <= set(entry)
    assert any(e.get("entrypoint") == "orders.create_order" for e in entries("orders"))
    assert all(e["outcome"] == "success" for e in entries("orders") if "outcome" in e)


def prometheus_config(tmp_path, system):
    """monitoring/prometheus.yml, pointed at the running processes, scraping every second."""
    config = yaml.safe_load(open(os.path.join(MONITORING, "prometheus.yml")))
    config["global"] = {"scrape_interval": "1s", "evaluation_interval": "1s"}
    targets = {name: f"127.0.0.1:{system[name].port}" for name in ("gateway", "users", "orders")}
    targets["rabbitmq"] = RABBITMQ_PROMETHEUS
    for job in config["scrape_configs"]:
        job["static_configs"] = [{"targets": [targets[job["job_name"]]]}]
    rules = yaml.safe_load(open(os.path.join(MONITORING, "alerts.yml")))
    for group in rules["groups"]:
        for rule in group["rules"]:
            if rule["alert"] == "InstanceDown":
                rule["for"] = "2s"  # the test's override; the shipped rule waits a minute
    yaml.safe_dump(rules, open(tmp_path / "alerts.yml", "w"))
    yaml.safe_dump(config, open(tmp_path / "prometheus.yml", "w"))
    return tmp_path / "prometheus.yml"


@pytest.fixture
def prometheus(system, tmp_path):
    binary = shutil.which("prometheus")
    if binary is None:
        if os.environ.get("CI"):
            pytest.fail("prometheus is not installed (.ci/run installs Debian's package)")
        pytest.skip("prometheus is not installed (apt-get install prometheus)")
    port = find_free_port()
    process = subprocess.Popen(
        [
            binary,
            f"--config.file={prometheus_config(tmp_path, system)}",
            f"--storage.tsdb.path={tmp_path / 'tsdb'}",
            f"--web.listen-address=127.0.0.1:{port}",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        assert wait_until(lambda: answers_ok(f"{url}/-/ready"), 30), "Prometheus did not start"
        yield url
    finally:
        process.terminate()
        process.wait(timeout=20)


def query(url, expr):
    response = requests.get(f"{url}/api/v1/query", params={"query": expr}, timeout=5).json()
    assert response["status"] == "success", (expr, response)
    return response["data"]["result"]


def drive_traffic(system):
    user, auth = system.register_and_login()
    order = requests.post(
        f"{system.api}/v1/orders", json={"items": ITEMS}, headers=auth, timeout=10
    ).json()
    requests.get(f"{system.api}/v1/orders/{order['id']}", headers=auth, timeout=10)
    requests.get(f"{system.api}/v1/orders", headers=auth, timeout=10)
    requests.post(f"{system.api}/v1/orders/{order['id']}/cancel", headers=auth, timeout=10)
    requests.get(f"{system.api}/v1/users/me", headers=auth, timeout=10)
    requests.get(f"{system.api}/v1/orders/999999", headers=auth, timeout=10)  # a 404


def dashboard_queries():
    dashboard = json.load(open(os.path.join(MONITORING, "grafana/dashboards/nameko-shop.json")))
    return {
        panel["title"]: target["expr"]
        for panel in dashboard["panels"]
        for target in panel["targets"]
    }


def test_prometheus_scrapes_every_target_finds_every_dashboard_query_and_fires_instance_down(
    system, prometheus
):
    def all_targets_up():
        targets = requests.get(f"{prometheus}/api/v1/targets", timeout=5).json()
        return {t["labels"]["job"]: t["health"] for t in targets["data"]["activeTargets"]}

    assert wait_until(lambda: set(all_targets_up().values()) == {"up"}, 20), all_targets_up()
    assert set(all_targets_up()) == {"gateway", "users", "orders", "rabbitmq"}

    deadline = time.monotonic() + 40
    missing = dashboard_queries()
    while missing and time.monotonic() < deadline:
        drive_traffic(system)
        time.sleep(1)
        missing = {title: expr for title, expr in missing.items() if not query(prometheus, expr)}
    assert not missing, f"dashboard queries without data: {missing}"

    system["users"].kill()

    def users_down_alert():
        alerts = requests.get(f"{prometheus}/api/v1/alerts", timeout=5).json()["data"]["alerts"]
        return [
            a
            for a in alerts
            if a["labels"]["alertname"] == "InstanceDown"
            and a["labels"]["job"] == "users"
            and a["state"] == "firing"
        ]

    assert wait_until(users_down_alert, 20), "InstanceDown did not fire for users"
    assert users_down_alert()[0]["labels"]["severity"] == "critical"
