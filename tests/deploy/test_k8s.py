"""deploy/k8s: every manifest valid for Kubernetes, listed by the kustomization,
and wired together (labels, ports, config and secret keys, the same commands as compose)."""

import os

import pytest
import yaml

from tests.deploy.conftest import (
    APP_SERVICES,
    DATABASE_SERVICES,
    K8S_DIR,
    compose_environment,
    load_compose,
    load_manifests,
    path,
    run,
    tool,
)

SECRETS_EXAMPLE = path("deploy", "examples", "secrets.example.yaml")


def example_secrets():
    """{name: stringData} of the example Secrets kept outside the base."""
    with open(SECRETS_EXAMPLE) as stream:
        return {doc["metadata"]["name"]: doc["stringData"] for doc in yaml.safe_load_all(stream)}


def objects(kind=None):
    return [
        doc
        for docs in load_manifests().values()
        for doc in docs
        if kind is None or doc["kind"] == kind
    ]


def by_name(kind):
    return {doc["metadata"]["name"]: doc for doc in objects(kind)}


def pod_specs():
    """(owner name, pod spec) of every Deployment and Job."""
    return [
        (doc["metadata"]["name"], doc["spec"]["template"]["spec"])
        for doc in objects()
        if doc["kind"] in ("Deployment", "Job")
    ]


@pytest.mark.parametrize("file_name", sorted(load_manifests()))
def test_manifest_is_valid_for_kubernetes(file_name):
    result = run(
        [tool("kubernetes-validate"), "--strict", "--quiet", os.path.join(K8S_DIR, file_name)]
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_kustomization_lists_every_manifest_once():
    with open(os.path.join(K8S_DIR, "kustomization.yaml")) as stream:
        kustomization = yaml.safe_load(stream)
    resources = kustomization["resources"]
    assert len(resources) == len(set(resources))
    assert sorted(resources) == sorted(load_manifests())
    assert kustomization["namespace"] == by_name("Namespace").popitem()[0]
    assert [image["name"] for image in kustomization["images"]] == ["nameko-shop"]


def test_no_manifest_pins_a_namespace_the_kustomization_sets():
    for doc in objects():
        if doc["kind"] != "Namespace":
            assert "namespace" not in doc["metadata"], doc["metadata"]["name"]


def test_pods_run_the_one_image_as_non_root_without_privileges():
    for owner, spec in pod_specs():
        assert spec["securityContext"]["runAsNonRoot"] is True, owner
        assert spec["automountServiceAccountToken"] is False, owner
        for container in spec.get("initContainers", []) + spec["containers"]:
            assert container["image"] == "nameko-shop", owner
            security = container["securityContext"]
            assert security["allowPrivilegeEscalation"] is False, owner
            assert security["capabilities"]["drop"] == ["ALL"], owner
            assert "requests" in container["resources"], owner
            assert "memory" in container["resources"]["limits"], owner


def test_services_have_probes_on_health_and_ready_at_their_port():
    deployments = by_name("Deployment")
    assert sorted(deployments) == sorted(APP_SERVICES)
    for name, deployment in deployments.items():
        (container,) = deployment["spec"]["template"]["spec"]["containers"]
        port_names = {port["name"] for port in container["ports"]}
        assert container["livenessProbe"]["httpGet"]["path"] == "/health", name
        assert container["readinessProbe"]["httpGet"]["path"] == "/ready", name
        for probe in ("livenessProbe", "readinessProbe", "startupProbe"):
            assert container[probe]["httpGet"]["port"] in port_names, (name, probe)


def test_deployments_run_what_compose_runs_with_the_same_settings():
    compose = load_compose()["services"]
    configmap = by_name("ConfigMap")["shop-config"]["data"]
    for name, deployment in by_name("Deployment").items():
        (container,) = deployment["spec"]["template"]["spec"]["containers"]
        assert container["command"] == compose[name]["command"], name
        k8s_env = {item["name"] for item in container["env"]} | set(configmap)
        missing = set(compose_environment(compose[name])) - k8s_env
        assert not missing, f"{name} lacks {missing} in Kubernetes"
        (port,) = container["ports"]
        address = next(i["value"] for i in container["env"] if i["name"] == "WEB_SERVER_ADDRESS")
        assert address == f"0.0.0.0:{port['containerPort']}", name
    jobs = by_name("Job")
    assert sorted(jobs) == ["broker-setup", "migrate"]
    for name, job in jobs.items():
        (container,) = job["spec"]["template"]["spec"]["containers"]
        assert container["command"] == compose[name]["command"], name


def test_the_migrate_job_migrates_every_service_that_owns_a_database():
    (container,) = by_name("Job")["migrate"]["spec"]["template"]["spec"]["containers"]
    configs = [part for part in container["command"] if part.startswith("config/")]
    assert configs == [f"config/{name}.yaml" for name in DATABASE_SERVICES]
    for name in DATABASE_SERVICES:
        key = f"{name.upper()}_DB_URI"
        assert secret_keys(container).get(key) == key, f"the migrate Job lacks {key}"
        assert key in example_secrets()["shop-secrets"], f"the example Secret lacks {key}"


def test_the_base_ships_no_secret_and_the_example_is_outside_it():
    assert objects("Secret") == []
    for docs in load_manifests().values():
        for doc in docs:
            assert "stringData" not in doc and "password" not in str(doc.get("data", "")).lower()
    for values in example_secrets().values():
        for key, value in values.items():
            if key != "username":
                assert "change-me" in value, f"{key} in the example is not a placeholder"


def test_every_config_and_secret_reference_exists():
    configmaps = by_name("ConfigMap")
    secrets = example_secrets()
    for owner, spec in pod_specs():
        for container in spec.get("initContainers", []) + spec["containers"]:
            for source in container.get("envFrom", []):
                assert source["configMapRef"]["name"] in configmaps, owner
            for item in container.get("env", []):
                ref = item.get("valueFrom", {}).get("secretKeyRef")
                if ref:
                    assert ref["key"] in secrets[ref["name"]], (owner, ref)


def secret_keys(container):
    return {
        item["name"]: item["valueFrom"]["secretKeyRef"]["key"]
        for item in container.get("env", [])
        if "secretKeyRef" in item.get("valueFrom", {})
    }


def test_each_service_connects_to_the_broker_as_its_own_user():
    for name, deployment in by_name("Deployment").items():
        spec = deployment["spec"]["template"]["spec"]
        for container in spec.get("initContainers", []) + spec["containers"]:
            assert secret_keys(container)["AMQP_URI"] == f"{name.upper()}_AMQP_URI", name
    # the broker-setup Job gets every service's URI and the administrator, nobody else does
    (setup,) = by_name("Job")["broker-setup"]["spec"]["template"]["spec"]["containers"]
    keys = secret_keys(setup)
    for name in APP_SERVICES:
        key = f"{name.upper()}_AMQP_URI"
        assert keys.get(key) == key, f"the broker-setup Job lacks {key}"
        assert key in example_secrets()["shop-secrets"], f"the example Secret lacks {key}"
    assert "RABBITMQ_ADMIN_PASSWORD" in keys and "AMQP_URI" not in keys
    for owner, spec in pod_specs():
        if owner != "broker-setup":
            for container in spec.get("initContainers", []) + spec["containers"]:
                assert "RABBITMQ_ADMIN_PASSWORD" not in secret_keys(container), owner
    assert "RABBITMQ_MANAGEMENT_URL" in by_name("ConfigMap")["shop-config"]["data"]


def test_services_select_their_pods_and_reach_a_named_port():
    deployments = by_name("Deployment")
    for name, service in by_name("Service").items():
        deployment = deployments[name]
        labels = deployment["spec"]["template"]["metadata"]["labels"]
        assert deployment["spec"]["selector"]["matchLabels"].items() <= labels.items()
        assert service["spec"]["selector"].items() <= labels.items(), name
        (container,) = deployment["spec"]["template"]["spec"]["containers"]
        port_names = {port["name"] for port in container["ports"]}
        for port in service["spec"]["ports"]:
            assert port["targetPort"] in port_names, name


def test_the_ingress_routes_the_api_to_the_gateway_service_only():
    services = by_name("Service")
    (ingress,) = objects("Ingress")
    paths = [p for rule in ingress["spec"]["rules"] for p in rule["http"]["paths"]]
    # /v1 as a Prefix matches /v1 and /v1/..., not /v1x; /metrics, /health, /ready stay inside
    assert {(p["path"], p["pathType"]) for p in paths} == {
        ("/v1", "Prefix"),
        ("/docs", "Prefix"),
        ("/openapi.json", "Exact"),
    }
    for item in paths:
        backend = item["backend"]["service"]
        assert backend["name"] == "gateway"
        assert backend["port"]["name"] in {p["name"] for p in services["gateway"]["spec"]["ports"]}


def test_autoscalers_scale_the_gateway_and_orders_deployments():
    deployments = by_name("Deployment")
    targets = {hpa["spec"]["scaleTargetRef"]["name"] for hpa in objects("HorizontalPodAutoscaler")}
    assert targets == {"gateway", "orders"}
    assert targets <= set(deployments)
