"""rbac.restrictToOwnPod: the chart's ValidatingAdmissionPolicy, its CEL evaluated, and the gate behind it.

The policy is rendered by the real helm and validated with kubernetes-validate (1.30, where it is GA, and the
newest version known); its CEL (matchConditions, variables, validations) is evaluated with cel-python against
admission requests shaped like kube-apiserver's, so "the agent may write only its own pod's status and Events"
is checked on the expressions that ship, not on a paraphrase. Then the stand-in API server (harness/kube_api.py)
runs that same evaluation on every write, and the real gate shows what a denial looks like from the agent: 403
``forbidden`` with the policy's message (a policy without ``reason: Forbidden`` would be 422 ``invalid``).
"""

# ruff: noqa: F811

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import celpy
import pytest
import pytest_asyncio
import yaml
from celpy import celtypes

from agent.gate.sync import GateConfig, PodGate
from harness.kube_api import Denial, KubeAPI, write_kubeconfig
from harness.wait import until_async
from tests.test_deploy import (
    CHART,
    helm,  # noqa: F401  (the session fixture: helm from scripts/install-helm.sh)
    load_docs,
    run,
    tool,
)

Helm = tuple[str, dict[str, str]]
NS, POD, OTHER, CTYPE, TOKEN = "shop", "web-0", "web-1", "readiness-agent.io/dependencies-ready", "token-1"
SA = "web-readiness-agent"
RENDER = ("--set", "readinessGate.enabled=true", "--set", "rbac.restrictToOwnPod=true")


class Policy:
    """A ValidatingAdmissionPolicy and its binding, evaluated like kube-apiserver does (the parts the chart uses)."""

    def __init__(self, policy: dict[str, Any], binding: dict[str, Any]) -> None:
        self.name = policy["metadata"]["name"]
        self.spec, self.binding = policy["spec"], binding["spec"]
        self.env = celpy.Environment()

    def _eval(self, expression: str, activation: dict[str, Any]) -> Any:
        return self.env.program(self.env.compile(expression)).evaluate(activation)

    def matches(self, request: dict[str, Any]) -> bool:
        resource = request["resource"]["resource"] + (f"/{request['subResource']}" if request["subResource"] else "")
        rules = self.spec["matchConstraints"]["resourceRules"]
        selector = self.binding["matchResources"]["namespaceSelector"]["matchLabels"]
        return (any(resource in r["resources"] and request["operation"] in r["operations"] for r in rules)
                and selector == {"kubernetes.io/metadata.name": request["namespace"]})

    def __call__(self, request: dict[str, Any], obj: dict[str, Any]) -> Denial | None:
        if not self.matches(request):
            return None
        activation: dict[str, Any] = {"request": celpy.json_to_cel(request), "object": celpy.json_to_cel(obj)}
        if not all(self._eval(c["expression"], activation) for c in self.spec["matchConditions"]):
            return None
        variables: dict[Any, Any] = {}
        for variable in self.spec["variables"]:
            activation["variables"] = celtypes.MapType(variables)
            variables[celtypes.StringType(variable["name"])] = self._eval(variable["expression"], activation)
        activation["variables"] = celtypes.MapType(variables)
        for rule in self.spec["validations"]:
            if not self._eval(rule["expression"], activation):
                message = rule.get("message") or str(self._eval(rule["messageExpression"], activation))
                return Denial(self.name, rule.get("reason"), message)
        return None


def user(pod: str | None = POD, uid: str | None = "uid-0", name: str = SA) -> dict[str, Any]:
    """userInfo of a service-account token; a kubelet-projected one carries its pod's name and uid."""
    info: dict[str, Any] = {"username": f"system:serviceaccount:{NS}:{name}"}
    if pod is not None:
        info["extra"] = {"authentication.kubernetes.io/pod-name": [pod], "authentication.kubernetes.io/pod-uid": [uid]}
    return info


def request(operation: str, resource: str, userinfo: dict[str, Any], name: str) -> dict[str, Any]:
    plural, _, sub = resource.partition("/")
    return {"operation": operation, "namespace": NS, "name": name, "userInfo": userinfo,
            "resource": {"group": "", "version": "v1", "resource": plural}, "subResource": sub}


def pod(name: str = POD, uid: str = "uid-0") -> dict[str, Any]:
    return {"metadata": {"name": name, "namespace": NS, "uid": uid}, "status": {"conditions": []}}


def event(about: str = POD, uid: str = "uid-0", kind: str = "Pod") -> dict[str, Any]:
    return {"metadata": {"name": f"{about}.1", "namespace": NS},
            "involvedObject": {"kind": kind, "name": about, "namespace": NS, "uid": uid}}


@pytest.fixture(scope="module")
def rendered(helm: Helm) -> list[dict[str, Any]]:
    result = run([helm[0], "template", "web", CHART, "--namespace", NS, *RENDER], env=helm[1])
    assert result.returncode == 0, result.stderr
    return load_docs(result.stdout)


@pytest.fixture(scope="module")
def policy(rendered: list[dict[str, Any]]) -> Policy:
    [vap] = [d for d in rendered if d["kind"] == "ValidatingAdmissionPolicy"]
    [binding] = [d for d in rendered if d["kind"] == "ValidatingAdmissionPolicyBinding"]
    return Policy(vap, binding)


class TestRender:
    def test_validates_on_1_30_and_newest(self, rendered: list[dict[str, Any]], tmp_path: Path) -> None:
        """The policy and its binding are valid admissionregistration.k8s.io/v1 objects where they are GA."""
        docs = [d for d in rendered if d["kind"].startswith("ValidatingAdmissionPolicy")]
        assert [d["kind"] for d in docs] == ["ValidatingAdmissionPolicy", "ValidatingAdmissionPolicyBinding"]
        path = tmp_path / "policy.yaml"
        path.write_text(yaml.safe_dump_all(docs))
        from kubernetes_validate.utils import latest_version

        for version in ("1.30", ".".join(latest_version().split(".")[:2])):
            result = run([tool("kubernetes-validate"), "--strict", "-k", version, path])
            assert result.returncode == 0 and result.stdout.count(" passed for resource ") == 2, result.stdout

    def test_refused_before_1_30_and_off_by_default(self, helm: Helm) -> None:
        """On 1.29 the render fails naming the version; without the value there is no policy."""
        result = run([helm[0], "template", "web", CHART, "--kube-version", "1.29.0", "--set", "app.preStopAction=exec",
                      *RENDER], env=helm[1])
        assert result.returncode != 0 and "rbac.restrictToOwnPod" in result.stderr and "1.30" in result.stderr
        default = run([helm[0], "template", "web", CHART, "--set", "readinessGate.enabled=true"], env=helm[1])
        assert "ValidatingAdmissionPolicy" not in default.stdout

    def test_denials_are_forbidden(self, policy: Policy) -> None:
        """Every validation says reason Forbidden, so a denial is HTTP 403 (422 without it)."""
        assert {rule.get("reason") for rule in policy.spec["validations"]} == {"Forbidden"}


class TestPolicy:
    @pytest.mark.parametrize(("case", "operation", "resource", "userinfo", "obj", "allowed"), [
        ("own pod's status", "UPDATE", "pods/status", user(), pod(), True),
        ("an Event about its own pod", "CREATE", "events", user(), event(), True),
        ("a count bump of that Event", "UPDATE", "events", user(), event(), True),
        ("another pod's status", "UPDATE", "pods/status", user(), pod(OTHER, "uid-1"), False),
        ("an Event about another pod", "CREATE", "events", user(), event(OTHER, "uid-1"), False),
        ("a pod recreated under the same name", "UPDATE", "pods/status", user(), pod(POD, "uid-9"), False),
        ("an Event about a non-pod", "CREATE", "events", user(), event(kind="Node"), False),
        ("a token bound to no pod", "UPDATE", "pods/status", user(None), pod(), False),
        ("another account (not this policy's)", "UPDATE", "pods/status", user(name="other"), pod(OTHER), True),
    ])
    def test_only_its_own_pod(self, policy: Policy, case: str, operation: str, resource: str,
                              userinfo: dict[str, Any], obj: dict[str, Any], allowed: bool) -> None:
        """The agent's account writes its own pod's status and Events about it; nothing else passes."""
        denial = policy(request(operation, resource, userinfo, obj["metadata"]["name"]), obj)
        assert (denial is None) is allowed, (case, denial)
        if denial is not None:
            assert denial.reason == "Forbidden" and "readiness-agent" in denial.message


@pytest_asyncio.fixture
async def api(policy: Policy) -> AsyncIterator[KubeAPI]:
    server = await KubeAPI(tokens={TOKEN}).start()
    server.admission.append(policy)
    yield server
    await server.stop()


async def start_gate(api: KubeAPI, tmp_path: Path) -> PodGate:
    kubeconfig = write_kubeconfig(tmp_path / "kubeconfig", api.url, TOKEN, NS)
    gate = PodGate(GateConfig(CTYPE, POD, NS, str(kubeconfig)), None, request_timeout=1.0, backoff_base=0.02,
                   backoff_cap=0.2)
    await gate.start()
    return gate


class TestGateBehindThePolicy:
    async def test_own_pod_passes(self, api: KubeAPI, tmp_path: Path) -> None:
        """With its pod-bound token the gate writes its condition and its Events through the policy."""
        uid = api.add_pod(NS, POD)["metadata"]["uid"]
        api.identities[TOKEN] = user(POD, uid)
        gate = await start_gate(api, tmp_path)
        try:
            gate.publish(True, None, "ready")
            await until_async(lambda: (api.condition(NS, POD, CTYPE) or {}).get("status") == "True", 3, "written")
            await until_async(lambda: len(api.events) == 1, 3, "its Event")
            assert gate.patch_counts["forbidden"] == 0 and gate.event_counts["forbidden"] == 0
        finally:
            await gate.stop(0.5)

    async def test_a_token_of_another_pod_is_forbidden(self, api: KubeAPI, tmp_path: Path) -> None:
        """A token bound to another pod: 403, counted as forbidden, the policy's message in /status."""
        api.add_pod(NS, POD)
        other_uid = api.add_pod(NS, OTHER)["metadata"]["uid"]
        api.identities[TOKEN] = user(OTHER, other_uid)
        gate = await start_gate(api, tmp_path)
        try:
            await until_async(lambda: gate.patch_counts["forbidden"] >= 1, 3, "a denied write")
            assert gate.patch_counts["invalid"] == 0 and api.condition(NS, POD, CTYPE) is None
            assert "may write only the status of, and Events about, its own pod web-1" in str(
                gate.status()["last_error"])
            assert {h.status for h in api.hits if h.method == "PATCH"} == {403}
        finally:
            await gate.stop(0.5)

    async def test_without_reason_a_denial_is_invalid(self, api: KubeAPI, policy: Policy, tmp_path: Path) -> None:
        """What the chart avoids: the same denial without reason Forbidden is 422, which the agent counts as
        invalid (an error in its own request), not as missing permission."""
        api.admission[:] = [lambda req, obj: (d if (d := policy(req, obj)) is None else Denial(d.policy, None,
                                                                                              d.message))]
        api.add_pod(NS, POD)
        api.identities[TOKEN] = user(POD, "not-the-uid")
        gate = await start_gate(api, tmp_path)
        try:
            await until_async(lambda: gate.patch_counts["invalid"] >= 1, 3, "a 422")
            assert gate.patch_counts["forbidden"] == 0
        finally:
            await gate.stop(0.5)
