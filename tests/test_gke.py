"""deploy/gke as GKE will read it: load-balancer objects for WebSockets, shutdown order, the NetworkPolicy, the
readiness-gate patch, and every custom resource against its project's published CRD schema (tests/schemas/).

Built-in objects go through ``kubernetes-validate --strict`` on 1.29 and the newest version it knows
(``validate_builtin`` in tests/test_deploy.py); nothing here starts an agent.
"""

from __future__ import annotations

import copy
import hashlib
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.support.crds import CRD_FILES, SCHEMAS, crd_errors, recorded_digests
from tests.test_deploy import (
    AGENT_CONTAINER,
    DEPLOY,
    GATE_PATCH,
    agent_sidecar,
    load_docs,
    one,
    pod_spec,
    validate_builtin,
)
from tests.test_helm import DEFAULT_CONDITION, GOOGLE_HEALTH_CHECK_RANGES, assert_app_uses_the_client, gate_state

GKE = DEPLOY / "gke"
AGENT_PORT = 9180
# Detection bound of the agent's defaults (docs/checks.md "How the verdict works"): 1 x 1.2 + 3 x (0.5 + 0.2 x 1.2).
DETECTION_BOUND_SECONDS = 3.42
WEBSOCKET_BACKEND_TIMEOUT = 3600
# The load balancer's detection delay (interval x unhealthy threshold + timeout): docs/gke.md "Load balancing
# WebSockets" states it, and the race demo uses it as its load-balancer delay.
LB_DETECTION_SECONDS = 3
# Strategic-merge keys of the pod-spec lists the gate patch touches (k8s.io/api core/v1 patchMergeKey tags).
MERGE_KEYS = {"containers": "name", "initContainers": "name", "env": "name", "volumes": "name",
              "volumeMounts": "mountPath", "readinessGates": "conditionType"}


def docs_of(name: str) -> list[dict[str, Any]]:
    return load_docs((GKE / name).read_text())


def strategic_merge(base: Any, patch: Any, key: str = "") -> Any:
    """``patch`` applied to ``base`` as kubectl's strategic merge patch does for the fields used here: maps merge
    recursively, the lists in MERGE_KEYS merge item by item on their key, other values are replaced."""
    if isinstance(base, dict) and isinstance(patch, dict):
        merged = dict(base)
        for name, value in patch.items():
            merged[name] = strategic_merge(base[name], value, name) if name in base else copy.deepcopy(value)
        return merged
    if isinstance(base, list) and isinstance(patch, list) and key in MERGE_KEYS:
        field = MERGE_KEYS[key]
        merged_list = [copy.deepcopy(item) for item in base]
        for item in patch:
            index = next((i for i, old in enumerate(merged_list) if old[field] == item[field]), None)
            if index is None:
                merged_list.append(copy.deepcopy(item))
            else:
                merged_list[index] = strategic_merge(merged_list[index], item)
        return merged_list
    return copy.deepcopy(patch)


@pytest.fixture(scope="module")
def deployment() -> dict[str, Any]:
    return one(docs_of("deployment.yaml"), "Deployment")


@pytest.fixture(scope="module")
def services() -> dict[str, dict[str, Any]]:
    return {d["metadata"]["name"]: d for d in docs_of("deployment.yaml") if d["kind"] == "Service"}


class TestPublishedSchemas:
    def test_schema_files_match_their_recorded_digests(self) -> None:
        """Every schema file is listed in tests/schemas/README.md with its source and sha256, and matches it."""
        digests = recorded_digests()
        assert set(digests) == set(CRD_FILES.values())
        for name, digest in digests.items():
            assert hashlib.sha256((SCHEMAS / name).read_bytes()).hexdigest() == digest, name

    def test_every_custom_resource_is_valid(self) -> None:
        """Each PodMonitoring, ServiceMonitor, BackendConfig, HealthCheckPolicy and GCPBackendPolicy under
        deploy/gke has a published schema here and passes it."""
        seen = set()
        for path in sorted(set(GKE.glob("*.yaml")) - {GATE_PATCH}):
            for doc in load_docs(path.read_text()):
                group = doc["apiVersion"].rpartition("/")[0]
                if "." in group and not group.endswith(".k8s.io"):  # not a built-in API group
                    assert (doc["apiVersion"], doc["kind"]) in CRD_FILES, f"{path.name}: no schema for {doc['kind']}"
                    assert crd_errors(doc) == [], path.name
                    seen.add(doc["kind"])
        assert seen == {kind for _api, kind in CRD_FILES} - {"PrometheusRule"}  # the chart's only (test_helm.py)

    @pytest.mark.parametrize(("name", "kind", "path"), [
        ("backendconfig.yaml", "BackendConfig", ["spec", "healthCheck"]),
        ("gateway-policies.yaml", "HealthCheckPolicy", ["spec", "default", "config", "httpHealthCheck"]),
        ("gateway-policies.yaml", "GCPBackendPolicy", ["spec", "default", "connectionDraining"]),
        ("podmonitoring.yaml", "PodMonitoring", ["spec", "endpoints", 0]),
        ("servicemonitor.yaml", "ServiceMonitor", ["spec", "endpoints", 0]),
    ])
    def test_a_misspelled_field_is_caught(self, name: str, kind: str, path: list[str | int]) -> None:
        """The validation is strict: one misspelled field in a valid object is an error naming it."""
        doc = copy.deepcopy(one(docs_of(name), kind))
        node: Any = doc
        for step in path:
            node = node[step]
        node["requestPth"] = "/readyz"
        assert any("'requestPth' was unexpected" in error for error in crd_errors(doc))


class TestLoadBalancing:
    def test_backendconfig_is_wired_to_the_apps_service(self, services: dict[str, dict[str, Any]]) -> None:
        """The app's Service names the BackendConfig in its annotation and uses container-native load
        balancing; the metrics Service gets neither."""
        backend = one(docs_of("backendconfig.yaml"), "BackendConfig")
        annotations = services["websocket-app"]["metadata"]["annotations"]
        assert yaml.safe_load(annotations["cloud.google.com/backend-config"]) == {
            "default": backend["metadata"]["name"]}
        assert yaml.safe_load(annotations["cloud.google.com/neg"]) == {"ingress": True}
        assert "annotations" not in services["websocket-app-readiness-agent"]["metadata"]

    def test_websockets_are_not_cut_and_drain_within_the_pods_budget(self, deployment: dict[str, Any]) -> None:
        """Ingress and Gateway both set a 3600 s backend timeout (not the 30 s default) and connection draining
        equal to the pod's termination budget."""
        grace = pod_spec(deployment)["terminationGracePeriodSeconds"]
        backend = one(docs_of("backendconfig.yaml"), "BackendConfig")["spec"]
        policy = one(docs_of("gateway-policies.yaml"), "GCPBackendPolicy")["spec"]["default"]
        for spec in (backend, policy):
            assert spec["timeoutSec"] == WEBSOCKET_BACKEND_TIMEOUT
            assert spec["connectionDraining"]["drainingTimeoutSec"] == grace

    def test_health_checks_ask_the_agent(self, deployment: dict[str, Any]) -> None:
        """Both health checks are HTTP GET /readyz on the agent's container port, tolerate one lost reply, and
        time out before the next check."""
        port = agent_sidecar(pod_spec(deployment))["ports"][0]["containerPort"]
        assert port == AGENT_PORT
        backend = one(docs_of("backendconfig.yaml"), "BackendConfig")["spec"]["healthCheck"]
        assert (backend["type"], backend["requestPath"], backend["port"]) == ("HTTP", "/readyz", port)
        policy = one(docs_of("gateway-policies.yaml"), "HealthCheckPolicy")["spec"]["default"]
        http = policy["config"]["httpHealthCheck"]
        assert policy["config"]["type"] == "HTTP"
        # The CRD's CEL rule (not evaluated by jsonschema): USE_FIXED_PORT needs port and no portName.
        assert http["portSpecification"] == "USE_FIXED_PORT" and http["port"] == port and "portName" not in http
        assert http["requestPath"] == "/readyz"
        for check in (backend, policy):
            assert check["unhealthyThreshold"] >= 2 and check["timeoutSec"] <= check["checkIntervalSec"]
            # This check, not pod readiness, routes new connections (the NEG keeps not-Ready pods): Google's
            # minimum interval and timeout, so a pod is out of rotation within 3 s of /readyz turning 503.
            assert (check["checkIntervalSec"], check["timeoutSec"]) == (1, 1)
            assert check["checkIntervalSec"] * check["unhealthyThreshold"] + check["timeoutSec"] == LB_DETECTION_SECONDS

    def test_gateway_policies_target_the_apps_service(self, services: dict[str, dict[str, Any]]) -> None:
        """HealthCheckPolicy and GCPBackendPolicy attach to the app's Service (core group) by targetRef."""
        for policy in docs_of("gateway-policies.yaml"):
            assert policy["spec"]["targetRef"] == {"group": "", "kind": "Service", "name": "websocket-app"}
        assert "websocket-app" in services


class TestShutdownAndProbes:
    def test_app_sleeps_in_prestop_within_the_budget(self, deployment: dict[str, Any]) -> None:
        """The app container sleeps (kubelet sleep action) while the pod leaves the endpoints; the grace period
        holds the sleep, 20 s of WebSocket close-out and the agent's 5 s drain."""
        spec = pod_spec(deployment)
        [app] = spec["containers"]
        seconds = app["lifecycle"]["preStop"]["sleep"]["seconds"]
        assert seconds == 10 and spec["terminationGracePeriodSeconds"] >= seconds + 20 + 5

    def test_app_uses_readiness_client(self, deployment: dict[str, Any]) -> None:
        """The app container follows the agent's GET /watch and drains with the client's GKE window, which the
        termination budget holds (docs/app-client.md)."""
        spec = pod_spec(deployment)
        [app] = spec["containers"]
        assert_app_uses_the_client(spec, app)

    def test_metrics_service_targets_the_port_number(self, services: dict[str, dict[str, Any]],
                                                     deployment: dict[str, Any]) -> None:
        """The metrics Service's targetPort is the sidecar's port number (named sidecar ports are missing from
        EndpointSlices before 1.32)."""
        port = services["websocket-app-readiness-agent"]["spec"]["ports"][0]["targetPort"]
        assert port == agent_sidecar(pod_spec(deployment))["ports"][0]["containerPort"]

    def test_readiness_probe_tolerates_one_slow_reply(self, deployment: dict[str, Any]) -> None:
        """failureThreshold 2 survives one slow reply; period x threshold stays within the detection bound."""
        probe = agent_sidecar(pod_spec(deployment))["readinessProbe"]
        assert probe["failureThreshold"] == 2 and probe["successThreshold"] == 1
        assert probe["periodSeconds"] * probe["failureThreshold"] <= DETECTION_BOUND_SECONDS


class TestNetworkPolicy:
    def test_agent_port_is_open_to_probes_prometheus_and_health_checks_only(self, deployment: dict[str, Any],
                                                                           tmp_path: Path) -> None:
        """The agent's policy opens port 9180 to both Managed Prometheus namespaces and Google's two health-check
        ranges, and to no node range (the pod's own node, the kubelet, is always allowed; a node range would open
        /status to every node); the app's policy opens only the app's port; both select the app's pods."""
        docs = docs_of("networkpolicy.yaml")
        validate_builtin(docs, tmp_path)
        labels = deployment["spec"]["template"]["metadata"]["labels"]
        policies = {d["metadata"]["name"]: d["spec"] for d in docs}
        agent, app = policies["websocket-app-readiness-agent"], policies["websocket-app"]
        for spec in (agent, app):
            assert spec["podSelector"]["matchLabels"].items() <= labels.items() and spec["policyTypes"] == ["Ingress"]
        [rule] = agent["ingress"]
        assert rule["ports"] == [{"port": AGENT_PORT, "protocol": "TCP"}]
        prometheus, *google = rule["from"]
        assert prometheus == {"namespaceSelector": {"matchExpressions": [
            {"key": "kubernetes.io/metadata.name", "operator": "In", "values": ["gmp-system", "gke-gmp-system"]}]}}
        assert google == [{"ipBlock": {"cidr": cidr}} for cidr in GOOGLE_HEALTH_CHECK_RANGES]
        [app_rule] = app["ingress"]
        app_port = pod_spec(deployment)["containers"][0]["ports"][0]["containerPort"]
        assert app_rule["ports"] == [{"port": app_port, "protocol": "TCP"}]


class TestReadinessGatePatch:
    def test_patched_deployment_is_coherent_and_valid(self, deployment: dict[str, Any], tmp_path: Path) -> None:
        """deployment.yaml + readiness-gate-patch.yaml (strategic merge, as kubectl patch applies it) + rbac.yaml
        is a valid Deployment whose readinessGates the agent can set: gate env, pod identity, its own token,
        the account bound to the least-privilege Role."""
        [patch] = load_docs(GATE_PATCH.read_text())
        assert (patch["kind"], patch["metadata"]["name"]) == ("Deployment", deployment["metadata"]["name"])
        patched = strategic_merge(deployment, patch)
        rbac = docs_of("rbac.yaml")
        validate_builtin([patched, *rbac], tmp_path)
        state = gate_state([patched, *rbac], "default")
        assert state == {"gates": [DEFAULT_CONDITION], "agent_on": True, "rbac": True,
                         "condition": DEFAULT_CONDITION, "account": one(rbac, "ServiceAccount")["metadata"]["name"]}
        spec = pod_spec(patched)
        assert spec["automountServiceAccountToken"] is False
        assert [c["name"] for c in spec["initContainers"]] == [AGENT_CONTAINER]
        assert all("volumeMounts" not in c for c in spec["containers"])

    def test_unpatched_deployment_has_no_gate(self, deployment: dict[str, Any]) -> None:
        """Without the patch the pod has no readinessGates and no account: it works without rbac.yaml."""
        state = gate_state([deployment], "default")
        assert state["gates"] == [] and not state["agent_on"] and state["account"] is None
