"""The stack as an operator runs it: healthy, usable, back after a crash, durable, quick to stop.

The checks run in this order on one stack (the fixture in conftest.py builds
and starts it and removes it with its volumes at the end); each says in the
report what it saw.
"""

import os
import signal
import time
import uuid

import pytest
import requests

from tests.compose.stack import (
    APP_SERVICES,
    LONG_RUNNING_SERVICES,
    ONE_SHOT_SERVICES,
)

STOP_LIMIT_SECONDS = 10  # what `docker stop` and Kubernetes grant before SIGKILL
SIGKILL_EXIT = 137
PASSWORD = "correct horse battery staple"

# what the walk-through made, for the checks after it
made = {}


def api(stack, method, path, token=None, **kwargs):
    headers = kwargs.pop("headers", {})
    if token:
        headers["Authorization"] = f"Bearer {token}"
    return requests.request(method, stack.gateway_url + path, headers=headers, timeout=10, **kwargs)


def log_in(stack):
    response = api(
        stack, "POST", "/v1/auth/token", json={"email": made["email"], "password": PASSWORD}
    )
    assert response.status_code == 200, response.text
    return response.json()["access_token"]


def eventually(probe, seconds=60):
    """``probe()``'s first truthy result within ``seconds``, else the last one."""
    deadline = time.monotonic() + seconds
    while True:
        try:
            result = probe()
        except requests.RequestException as error:
            result = None
            last_error = error
        else:
            last_error = None
        if result or time.monotonic() > deadline:
            assert result, f"not within {seconds} s (last error: {last_error})"
            return result
        time.sleep(1)


def test_every_service_becomes_healthy_and_each_one_shot_step_exits_0(stack, report):
    seconds = stack.wait_until_ready()
    report.saw(
        "healthy",
        f"{', '.join(LONG_RUNNING_SERVICES)} healthy and {', '.join(ONE_SHOT_SERVICES)} "
        f"exited 0, {seconds:.0f} s after `up` returned",
    )


def test_the_readme_walk_through_works_through_the_gateway(stack, report):
    made["email"] = f"ann-{uuid.uuid4().hex[:8]}@example.com"
    user = {"email": made["email"], "name": "Ann", "password": PASSWORD}
    registered = api(stack, "POST", "/v1/users", json=user)
    assert registered.status_code == 201, registered.text
    token = log_in(stack)

    order = {"items": [{"sku": "BOOK-42", "quantity": 2, "unit_price": "19.99"}]}
    key = {"Idempotency-Key": "first-order"}
    created = api(stack, "POST", "/v1/orders", token, json=order, headers=dict(key))
    replayed = api(stack, "POST", "/v1/orders", token, json=order, headers=dict(key))
    assert created.status_code == 201, created.text
    assert replayed.status_code == 200, replayed.text
    assert replayed.json()["id"] == created.json()["id"]
    made["order_id"] = created.json()["id"]

    listed = api(stack, "GET", "/v1/orders", token)
    assert listed.status_code == 200, listed.text
    assert [item["id"] for item in listed.json()["items"]] == [made["order_id"]]

    # order_count moves when users consumes orders' event: the event path works
    def counted():
        me = api(stack, "GET", "/v1/users/me", token).json()
        return me if me.get("order_count") == 1 else None

    began = time.monotonic()
    me = eventually(counted)
    report.saw(
        "walk-through",
        f"register 201, log in 200, create 201 (order {made['order_id']}), replay "
        f"{replayed.status_code} with the same id, list: 1 order, /v1/users/me order_count "
        f"{me['order_count']} after {time.monotonic() - began:.1f} s",
    )


def test_a_crashed_container_comes_back_by_itself_and_serves(stack, report):
    """SIGKILL to the service's process, as the OOM killer or a crash would end it.

    Not `docker kill`: Docker counts that as an operator's stop, and no restart
    policy (not even `always`) restarts a container after it.
    """
    restarts = stack.restart_count("users")
    pid = stack.state("users")["Pid"]
    began = time.monotonic()
    try:
        os.kill(pid, signal.SIGKILL)
    except PermissionError:
        pytest.fail(f"cannot SIGKILL the users container's process {pid}: run the tier as root")

    eventually(lambda: stack.restart_count("users") > restarts, seconds=60)
    restarted = time.monotonic() - began
    eventually(lambda: stack.state("users").get("Health", {}).get("Status") == "healthy", 120)
    token = log_in(stack)  # the gateway asks users to check the password
    me = api(stack, "GET", "/v1/users/me", token)
    assert me.status_code == 200, me.text
    report.saw(
        "crash",
        f"SIGKILL to users' process: restarted by its policy after {restarted:.1f} s, healthy "
        f"and serving (log in 200, /v1/users/me 200) after {time.monotonic() - began:.1f} s",
    )


def test_data_survive_down_and_up(stack, report):
    began = time.monotonic()
    stack.compose("down", timeout=300)
    assert stack.containers() == {}
    stack.up()
    stack.wait_until_ready()
    token = log_in(stack)
    listed = api(stack, "GET", "/v1/orders", token).json()
    me = api(stack, "GET", "/v1/users/me", token).json()
    assert [item["id"] for item in listed["items"]] == [made["order_id"]]
    assert me["order_count"] == 1
    report.saw(
        "down/up",
        f"after `down` (volumes kept) and `up`, ready again in {time.monotonic() - began:.0f} s; "
        f"the user logs in, order {made['order_id']} is listed, order_count {me['order_count']}",
    )


@pytest.mark.parametrize("broker", ["up", "down"])
def test_docker_stop_of_each_app_service_takes_under_10_s(stack, report, broker):
    if broker == "down":
        stack.compose("up", "--detach", "--no-build", *APP_SERVICES)
        stack.wait_until_ready()
        stack.stop("rabbitmq")
        time.sleep(3)  # the services have lost the broker and are reconnecting
    stopped = {service: stack.stop(service) for service in APP_SERVICES}
    report.saw(
        f"stop/broker {broker}",
        ", ".join(
            f"{service} {seconds:.1f} s (exit {code})"
            for service, (seconds, code) in stopped.items()
        ),
    )
    for service, (seconds, code) in stopped.items():
        assert seconds < STOP_LIMIT_SECONDS and code != SIGKILL_EXIT, (service, seconds, code)
