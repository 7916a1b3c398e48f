"""deploy/overlays/cluster: the base plus a 3-node RabbitmqCluster and quorum queues.

The core kinds (Namespace, the patched ConfigMap, everything the overlay renders)
are validated with kubernetes-validate. The RabbitmqCluster kind belongs to the
RabbitMQ Cluster Operator, whose CRD is not available offline: RABBITMQ_CLUSTER
below is a hand-written subset of its schema (rabbitmq.com/v1beta1), the fields
this overlay uses with the operator's own constraints (replicas an integer >= 0,
quantities in Kubernetes' format, at most 2000 characters of additionalConfig in
older operator releases, plugin names matching ``^\\w+$``, a service type of
ClusterIP, LoadBalancer or NodePort) and no field the CRD does not have. Its
affinity is checked as what it is, a core Affinity, inside a Pod.

Rendering uses ``kubectl kustomize`` when kubectl is installed (skipped
otherwise); the other checks read the files and apply the overlay's JSON
patches themselves."""

import os
import re
import shutil
from urllib.parse import urlsplit

import jsonschema
import pytest
import yaml

from tests.deploy.conftest import path, run, tool
from tests.deploy.test_k8s import by_name, example_secrets

OVERLAY = path("deploy", "overlays", "cluster")
QUANTITY = r"^(\+|-)?(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))(([KMGTPE]i)|[numkMGTPE]|([eE](\+|-)?(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))))?$"  # noqa: E501
QUANTITY_SCHEMA = {"anyOf": [{"type": "integer"}, {"type": "string", "pattern": QUANTITY}]}
RESOURCES = {
    "type": "object",
    "additionalProperties": False,
    "properties": {
        "limits": {"type": "object", "additionalProperties": QUANTITY_SCHEMA},
        "requests": {"type": "object", "additionalProperties": QUANTITY_SCHEMA},
    },
}
DNS_1035_LABEL = r"^[a-z]([-a-z0-9]*[a-z0-9])?$"
# The subset of the operator's CRD (rabbitmq.com_rabbitmqclusters.yaml) checked here.
RABBITMQ_CLUSTER = {
    "type": "object",
    "required": ["apiVersion", "kind", "metadata", "spec"],
    "additionalProperties": False,
    "properties": {
        "apiVersion": {"const": "rabbitmq.com/v1beta1"},
        "kind": {"const": "RabbitmqCluster"},
        "metadata": {
            "type": "object",
            "required": ["name", "namespace"],
            "properties": {
                # the operator names Services and a StatefulSet after it
                "name": {"type": "string", "pattern": DNS_1035_LABEL, "maxLength": 42},
                "namespace": {"type": "string", "pattern": DNS_1035_LABEL},
                "labels": {"type": "object", "additionalProperties": {"type": "string"}},
            },
        },
        "spec": {
            "type": "object",
            "required": ["replicas"],
            "additionalProperties": False,
            "properties": {
                "replicas": {"type": "integer", "minimum": 0},
                "image": {"type": "string"},
                "imagePullSecrets": {"type": "array"},
                "service": {
                    "type": "object",
                    "additionalProperties": False,
                    "properties": {
                        "type": {"enum": ["ClusterIP", "LoadBalancer", "NodePort"]},
                        "annotations": {
                            "type": "object",
                            "additionalProperties": {"type": "string"},
                        },
                    },
                },
                "persistence": {
                    "type": "object",
                    "additionalProperties": False,
                    "properties": {
                        "storage": QUANTITY_SCHEMA,
                        "storageClassName": {"type": "string"},
                    },
                },
                "resources": RESOURCES,
                "affinity": {"type": "object"},  # a core Affinity: see the Pod check
                "tolerations": {"type": "array"},
                "rabbitmq": {
                    "type": "object",
                    "additionalProperties": False,
                    "properties": {
                        "additionalConfig": {"type": "string", "maxLength": 2000},
                        "additionalPlugins": {
                            "type": "array",
                            "maxItems": 100,
                            "items": {"type": "string", "pattern": r"^\w+$", "maxLength": 100},
                        },
                        "advancedConfig": {"type": "string", "maxLength": 100000},
                        "envConfig": {"type": "string", "maxLength": 100000},
                    },
                },
                "tls": {"type": "object"},
                "override": {"type": "object"},
                "skipPostDeploySteps": {"type": "boolean"},
                "terminationGracePeriodSeconds": {"type": "integer", "minimum": 0},
            },
        },
    },
}
# rabbitmq.conf keys the operator writes itself (peer discovery on Kubernetes,
# its memory limit): additionalConfig must not fight them
OPERATOR_OWNED = ("cluster_formation.", "total_memory_available_override_value")


def load_yaml_documents(*parts):
    with open(os.path.join(OVERLAY, *parts)) as stream:
        return [doc for doc in yaml.safe_load_all(stream) if doc]


def kustomization():
    (doc,) = load_yaml_documents("kustomization.yaml")
    return doc


def overlay_objects():
    """The overlay's own objects (not the base's)."""
    found = []
    for resource in kustomization()["resources"]:
        if resource.endswith((".yaml", ".yml")):
            found.extend(load_yaml_documents(resource))
    return found


def the_cluster():
    (cluster,) = [doc for doc in overlay_objects() if doc["kind"] == "RabbitmqCluster"]
    return cluster


def cluster_service_host():
    """The client Service the operator makes for the cluster: <name>.<namespace>.svc."""
    metadata = the_cluster()["metadata"]
    return f"{metadata['name']}.{metadata['namespace']}.svc"


def json_patch(document, operations):
    """The few JSON patch operations the overlay uses (add, replace) on a copy."""
    document = yaml.safe_load(yaml.safe_dump(document))
    for operation in operations:
        assert operation["op"] in ("add", "replace"), operation
        *parents, last = [part.replace("~1", "/") for part in operation["path"].split("/")[1:]]
        target = document
        for part in parents:
            target = target[int(part)] if isinstance(target, list) else target[part]
        if operation["op"] == "replace":
            assert last in target, f"replace of a missing {operation['path']}"
        target[last] = operation["value"]
    return document


def patched_base():
    """{(kind, name): object} of the base's objects the overlay patches, patched."""
    patched = {}
    for patch in kustomization()["patches"]:
        target = patch["target"]
        base_object = by_name(target["kind"])[target["name"]]
        key = (target["kind"], target["name"])
        patched[key] = json_patch(patched.get(key, base_object), yaml.safe_load(patch["patch"]))
    return patched


def test_the_overlay_builds_on_the_base_and_lists_its_own_files():
    resources = kustomization()["resources"]
    assert "../../k8s" in resources
    own = sorted(name for name in os.listdir(OVERLAY) if name != "kustomization.yaml")
    assert sorted(r for r in resources if r != "../../k8s") == own
    # no namespace field: it would move the broker into nameko-shop too
    assert "namespace" not in kustomization()


def test_a_three_node_cluster_of_the_operator_with_resources_and_storage():
    cluster = the_cluster()
    jsonschema.validate(cluster, RABBITMQ_CLUSTER)
    spec = cluster["spec"]
    assert spec["replicas"] == 3
    # RabbitMQ computes its memory watermark from the limit; a request below it
    # lets the node be scheduled where the memory is not there
    assert spec["resources"]["requests"]["memory"] == spec["resources"]["limits"]["memory"]
    assert spec["persistence"]["storage"]
    config = spec["rabbitmq"]["additionalConfig"]
    keys = [
        line.split("=", 1)[0].strip()
        for line in config.splitlines()
        if line.strip() and not line.strip().startswith("#")
    ]
    assert "cluster_partition_handling" in keys
    for key in keys:
        assert not key.startswith(OPERATOR_OWNED), f"{key} is the operator's to set"
        assert re.fullmatch(r"[a-z0-9_.]+", key), key


def test_the_cluster_is_not_in_the_restricted_namespace_of_the_services():
    cluster = the_cluster()
    namespaces = {
        doc["metadata"]["name"]: doc for doc in overlay_objects() if doc["kind"] == "Namespace"
    }
    namespace = namespaces[cluster["metadata"]["namespace"]]
    assert namespace["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] != "restricted"
    assert cluster["metadata"]["namespace"] != by_name("Namespace").popitem()[0]


def test_the_nodes_spread_over_kubernetes_nodes(tmp_path):
    affinity = the_cluster()["spec"]["affinity"]
    terms = affinity["podAntiAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]
    assert terms[0]["topologyKey"] == "kubernetes.io/hostname"
    # the operator labels its pods app.kubernetes.io/name=<cluster name>
    assert terms[0]["labelSelector"]["matchLabels"] == {
        "app.kubernetes.io/name": the_cluster()["metadata"]["name"]
    }
    resources = the_cluster()["spec"]["resources"]
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "affinity-check"},
        "spec": {
            "affinity": affinity,
            "containers": [{"name": "rabbitmq", "image": "rabbitmq", "resources": resources}],
        },
    }
    manifest = tmp_path / "pod.yaml"
    manifest.write_text(yaml.safe_dump(pod))
    result = run([tool("kubernetes-validate"), "--strict", "--quiet", str(manifest)])
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_services_use_quorum_queues_and_the_clusters_management_api():
    config = patched_base()[("ConfigMap", "shop-config")]["data"]
    assert config["QUEUE_TYPE"] == "quorum"
    assert by_name("ConfigMap")["shop-config"]["data"]["QUEUE_TYPE"] == "classic"  # the base's
    management = urlsplit(config["RABBITMQ_MANAGEMENT_URL"])
    assert (management.hostname, management.port) == (cluster_service_host(), 15672)


def test_the_example_secrets_point_every_service_at_the_clusters_service():
    """One address behind the operator's Service: it only sends to ready nodes."""
    secrets = example_secrets()["shop-secrets"]
    for name in ("USERS", "ORDERS", "GATEWAY"):
        uri = secrets[f"{name}_AMQP_URI"]
        for address in uri.split(";"):
            parts = urlsplit(address)
            assert (parts.hostname, parts.port) == (cluster_service_host(), 5672), name


@pytest.fixture(scope="module")
def rendered():
    kubectl = shutil.which("kubectl")
    if not kubectl:
        pytest.skip("kubectl is not installed: the overlay is not rendered (`kubectl kustomize`)")
    result = run([kubectl, "kustomize", OVERLAY])
    assert result.returncode == 0, result.stderr
    return [doc for doc in yaml.safe_load_all(result.stdout) if doc]


def test_kustomize_renders_the_overlay_as_these_checks_expect(rendered):
    found = {(doc["kind"], doc["metadata"]["name"]): doc for doc in rendered}
    assert (
        found[("ConfigMap", "shop-config")]["data"]
        == (patched_base()[("ConfigMap", "shop-config")]["data"])
    )
    cluster = found[("RabbitmqCluster", the_cluster()["metadata"]["name"])]
    assert cluster["metadata"]["namespace"] == the_cluster()["metadata"]["namespace"]
    services_namespace = by_name("Namespace").popitem()[0]
    for (kind, name), doc in found.items():
        if kind not in ("Namespace", "RabbitmqCluster"):
            assert doc["metadata"]["namespace"] == services_namespace, (kind, name)
    for kind in ("Deployment", "PodDisruptionBudget", "Job"):
        assert {name for k, name in found if k == kind} == set(by_name(kind)), kind


def test_every_core_object_of_the_rendered_overlay_is_valid_for_kubernetes(rendered, tmp_path):
    core = [doc for doc in rendered if doc["kind"] != "RabbitmqCluster"]
    assert len(core) == len(rendered) - 1
    manifest = tmp_path / "overlay.yaml"
    manifest.write_text(yaml.safe_dump_all(core))
    result = run([tool("kubernetes-validate"), "--strict", "--quiet", str(manifest)])
    assert result.returncode == 0, result.stdout + result.stderr
