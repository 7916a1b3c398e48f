"""deploy/k8s: pods stop as gracefully as the processes do, and drains never take a
service down.

The rule the numbers keep (DESIGN.md, "Stopping is graceful"): after SIGTERM a
process exits within STOP_TIMEOUT_SECONDS (ConfigMap); the kubelet sends SIGTERM
after the preStop hook, and SIGKILL at terminationGracePeriodSeconds, counted
from the start of the preStop hook. So the grace period must cover preStop +
STOP_TIMEOUT_SECONDS with a margin, or the kubelet cuts a stop short. And a
PodDisruptionBudget must select every Deployment, which must run at least two
pods, or a drain either waits forever or takes the service away."""

import re

from tests.deploy.conftest import APP_SERVICES, load_compose, queue_consumers
from tests.deploy.test_k8s import by_name, objects

# seconds between the process's own deadline and the kubelet's SIGKILL
MARGIN = 5
# DESIGN.md: every process exits within 10 s of SIGTERM
DESIGN_STOP_LIMIT = 10
# the gateway keeps serving while the Ingress and kube-proxy learn it is leaving
MIN_GATEWAY_PRESTOP = 3


def stop_timeout():
    return float(by_name("ConfigMap")["shop-config"]["data"]["STOP_TIMEOUT_SECONDS"])


def pod_spec(deployment):
    return deployment["spec"]["template"]["spec"]


def prestop_seconds(container):
    """Seconds a preStop hook pauses: an exec of `sleep N`, or the sleep action; 0 without."""
    pre_stop = container.get("lifecycle", {}).get("preStop")
    if not pre_stop:
        return 0
    if "sleep" in pre_stop:
        return float(pre_stop["sleep"]["seconds"])
    command = pre_stop["exec"]["command"]
    assert command[0] == "sleep" and len(command) == 2, f"an unexpected preStop: {command}"
    return float(command[1])


def selects(selector, labels):
    return selector["matchLabels"].items() <= labels.items() and not selector.get(
        "matchExpressions"
    )


def minimum_replicas(name):
    """The fewest pods a Deployment runs: its HPA's minReplicas, else its replicas."""
    hpas = {
        hpa["spec"]["scaleTargetRef"]["name"]: hpa for hpa in objects("HorizontalPodAutoscaler")
    }
    if name in hpas:
        return hpas[name]["spec"].get("minReplicas", 1)
    return by_name("Deployment")[name]["spec"].get("replicas", 1)


def test_stop_timeout_is_set_explicitly_and_within_the_design():
    seconds = stop_timeout()
    assert 0 < seconds < DESIGN_STOP_LIMIT


def test_the_grace_period_covers_prestop_and_the_graceful_stop():
    for name, deployment in by_name("Deployment").items():
        spec = pod_spec(deployment)
        (container,) = spec["containers"]
        grace = spec["terminationGracePeriodSeconds"]
        needed = prestop_seconds(container) + stop_timeout() + MARGIN
        assert grace >= needed, f"{name}: grace {grace} s < preStop + stop + margin = {needed} s"


def test_the_gateway_pauses_before_sigterm_so_routing_stops_first():
    (container,) = pod_spec(by_name("Deployment")["gateway"])["containers"]
    assert prestop_seconds(container) >= MIN_GATEWAY_PRESTOP
    # and the readiness probe does not decide it: a terminating pod leaves the
    # endpoints at once; the pause is for those who learn it late


def test_queue_consumers_need_no_pause_and_keep_a_short_grace_period():
    deployments = by_name("Deployment")
    for name in queue_consumers():
        spec = pod_spec(deployments[name])
        (container,) = spec["containers"]
        assert prestop_seconds(container) == 0, name
        # not the 30 s default: a pod that hangs past its own deadline goes soon
        assert spec["terminationGracePeriodSeconds"] <= stop_timeout() + 3 * MARGIN, name


def test_every_deployment_has_exactly_one_disruption_budget_selecting_only_it():
    budgets = objects("PodDisruptionBudget")
    deployments = by_name("Deployment")
    for name, deployment in deployments.items():
        labels = deployment["spec"]["template"]["metadata"]["labels"]
        matching = [
            b["metadata"]["name"] for b in budgets if selects(b["spec"]["selector"], labels)
        ]
        assert matching == [name], f"{name} is selected by {matching}"
    for budget in budgets:
        assert budget["apiVersion"] == "policy/v1", budget["metadata"]["name"]


def test_a_drain_can_always_evict_one_pod_and_never_all():
    for budget in objects("PodDisruptionBudget"):
        name = budget["metadata"]["name"]
        spec = budget["spec"]
        pods = minimum_replicas(name)
        assert pods >= 2, f"{name} may run {pods} pod(s): a drain would take it away"
        if "maxUnavailable" in spec:
            allowed = spec["maxUnavailable"]
        else:
            allowed = pods - spec["minAvailable"]
        assert isinstance(allowed, int), f"{name}: write the budget as a number of pods"
        assert 1 <= allowed < pods, f"{name}: {allowed} of {pods} pods may go at once"


def test_compose_gives_each_process_more_than_its_stop_timeout():
    def seconds(value):
        match = re.fullmatch(r"(\d+)s", str(value))
        assert match, value
        return int(match.group(1))

    services = load_compose()["services"]
    for name in APP_SERVICES:
        environment = services[name].get("environment", {})
        timeout = float(environment.get("STOP_TIMEOUT_SECONDS", 8))
        assert seconds(services[name]["stop_grace_period"]) >= timeout + MARGIN, name
