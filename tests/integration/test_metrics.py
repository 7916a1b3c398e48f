"""The metrics provider on real containers: RED metrics per entrypoint, one registry each."""

import pytest
import requests
from nameko.rpc import rpc
from nameko.testing.services import entrypoint_hook
from nameko.web.handlers import http
from prometheus_client.parser import text_string_to_metric_families

from shared.db import find_dependency
from shared.exceptions import NotFound
from shared.metrics import Metrics, counter
from tests.helpers import wait_until
from users.service import UsersService


class Probe:
    name = "probe"
    metrics = Metrics(counter("probes_total", "Probes", ["kind"]))

    @rpc(expected_exceptions=NotFound)
    def succeed(self):
        self.metrics.probes.labels("ok").inc()
        return "ok"

    @rpc(expected_exceptions=NotFound)
    def refuse(self):
        raise NotFound("nothing here")

    @rpc(expected_exceptions=NotFound)
    def crash(self):
        raise RuntimeError("a bug")

    @http("GET", "/metrics")
    def http_metrics(self, request):
        return self.metrics.response()


class OtherProbe(Probe):
    name = "other_probe"


def samples(text):
    """``{(name, frozenset(labels)): value}`` from Prometheus text."""
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def calls(metrics_text, service, entrypoint, outcome):
    labels = {"service": service, "entrypoint": entrypoint, "type": "rpc", "outcome": outcome}
    return samples(metrics_text).get(("entrypoint_calls_total", frozenset(labels.items())), 0)


@pytest.fixture
def probe(rabbit_config, web_config, container_factory):
    container = container_factory(Probe, {**rabbit_config, **web_config})
    container.start()
    return container


def scrape(port):
    response = requests.get(f"http://127.0.0.1:{port}/metrics", timeout=5)
    assert response.status_code == 200
    assert response.headers["Content-Type"].startswith("text/plain")
    return response.text


def test_calls_are_counted_by_outcome_and_timed(probe, web_config_port):
    with entrypoint_hook(probe, "succeed") as succeed:
        succeed()
        succeed()
    with entrypoint_hook(probe, "refuse") as refuse, pytest.raises(NotFound):
        refuse()
    with entrypoint_hook(probe, "crash") as crash, pytest.raises(RuntimeError):
        crash()

    # nameko counts a call just after it replied: wait for the last one
    wait_until(lambda: calls(scrape(web_config_port), "probe", "crash", "error"))
    text = scrape(web_config_port)
    assert calls(text, "probe", "succeed", "success") == 2
    assert calls(text, "probe", "refuse", "expected_error") == 1
    assert calls(text, "probe", "crash", "error") == 1
    assert calls(text, "probe", "crash", "success") == 0
    count = (
        "entrypoint_duration_seconds_count",
        frozenset({"service": "probe", "entrypoint": "succeed", "type": "rpc"}.items()),
    )
    assert samples(text)[count] == 2
    assert samples(text)[("probes_total", frozenset({"kind": "ok"}.items()))] == 2


def test_two_containers_in_one_process_keep_their_own_registries(
    rabbit_config, web_config, container_factory
):
    first = container_factory(Probe, {**rabbit_config, **web_config})
    second = container_factory(OtherProbe, rabbit_config)
    first.start()
    second.start()
    with entrypoint_hook(first, "succeed") as succeed:
        succeed()
    with entrypoint_hook(second, "succeed") as succeed:
        succeed()
        succeed()
    wait_until(
        lambda: (
            find_dependency(second, "metrics").registry.get_sample_value(
                "entrypoint_calls_total",
                {
                    "service": "other_probe",
                    "entrypoint": "succeed",
                    "type": "rpc",
                    "outcome": "success",
                },
            )
            == 2
        )
    )
    first_registry = find_dependency(first, "metrics").registry
    second_registry = find_dependency(second, "metrics").registry
    assert first_registry is not second_registry
    labels = {"service": "probe", "entrypoint": "succeed", "type": "rpc", "outcome": "success"}
    assert first_registry.get_sample_value("entrypoint_calls_total", labels) == 1
    other = {**labels, "service": "other_probe"}
    assert second_registry.get_sample_value("entrypoint_calls_total", other) == 2
    assert first_registry.get_sample_value("entrypoint_calls_total", other) is None


def test_users_metrics_show_registrations_and_the_outbox_backlog(
    users_config, container_factory, rpc, web_config_port
):
    container = container_factory(UsersService, users_config)
    container.start()
    rpc.users.create_user("ann@example.com", "Ann", "correct horse battery")
    with pytest.raises(NotFound):
        rpc.users.get_user(999)

    wait_until(lambda: calls(scrape(web_config_port), "users", "get_user", "expected_error"))
    text = scrape(web_config_port)
    assert samples(text)[("users_registered_total", frozenset())] == 1
    assert calls(text, "users", "create_user", "success") == 1
    assert calls(text, "users", "get_user", "expected_error") == 1
    assert ("outbox_backlog", frozenset()) in samples(text)
