"""The race demo's mode (c): the agent pushes its verdict into a pod readiness gate instead of being polled.

Why: after an unannounced kill the agent knows within milliseconds, but a polling prober (kubelet: period and
failure threshold) keeps routing clients to the broken backend until its next probes fail. With
``--kube-readiness-gate`` the agent patches its pod's condition on every transition, and the EndpointSlice
controller, which *watches* pods, drops the pod from the endpoints at once. Here the agent runs with the gate
against the Kubernetes API stand-in (``harness/kube_api.py``: the real wire protocol, the real
``kubernetes`` client in the agent), whose watch pushes every written pod to the router (:func:`follow`).
"""

from __future__ import annotations

import contextlib
import tempfile
from pathlib import Path

from examples.websocket_app.platform_sim import Router, Target, pod_gates
from harness.agent_process import AgentProcess
from harness.kube_api import KubeAPI, write_kubeconfig

NAMESPACE, POD = "demo", "backend-0"
CONDITION = "readiness-agent.io/dependencies-ready"  # agent.settings' default condition type
_TOKEN = "race-demo-token"  # the stand-in's only accepted bearer token (a throwaway, local to the run)


async def start_api(stack: contextlib.AsyncExitStack) -> KubeAPI:
    """The API stand-in with the backend's pod (one readiness gate, its condition not set yet)."""
    api = await KubeAPI(tokens={_TOKEN}).start()
    stack.push_async_callback(api.stop)
    api.add_pod(NAMESPACE, POD)
    return api


def agent_process(stack: contextlib.AsyncExitStack, api: KubeAPI, *args: str) -> AgentProcess:
    """The agent with ``--kube-readiness-gate`` for the pod, credentials in a kubeconfig (as outside a cluster)."""
    directory = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="race-gate-")))
    kubeconfig = write_kubeconfig(directory / "kubeconfig", api.url, _TOKEN, NAMESPACE)
    return AgentProcess(*args, "--kube-readiness-gate", "--kubeconfig", str(kubeconfig),
                        env={"POD_NAME": POD, "POD_NAMESPACE": NAMESPACE})


def follow(api: KubeAPI, router: Router, target: Target) -> None:
    """The EndpointSlice controller's part: the pod's gates now, then every change the watch pushes."""
    router.set_gates(target, pod_gates(api.pods[(NAMESPACE, POD)]))
    api.watchers.append(lambda pod: router.set_gates(target, pod_gates(pod)))


def condition_changes(api: KubeAPI) -> list[tuple[float, bool]]:
    """The gate condition as the API server held it after each pod status write: (monotonic time, True?)."""
    out: list[tuple[float, bool]] = []
    for write in api.pod_writes():
        status = next((c.get("status") for c in write.conditions if c.get("type") == CONDITION), None)
        out.append((write.at, status == "True"))
    return out
