"""The readiness gate wired into ``readiness-agent run``: the real agent process, the real ``kubernetes``
client, a real redis-server, and the API-server stand-in of harness/kube_api.py."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

from harness.agent_process import AgentProcess, run_cli
from harness.kube_api import KubeAPI, write_kubeconfig
from harness.redis_server import RedisProcess, free_port
from harness.wait import until_async
from tests.support.fast import FAST_WINDOW as FAST

NS, POD, CTYPE = "shop", "web-0", "readiness-agent.io/dependencies-ready"
NEG = {"type": "cloud.google.com/load-balancer-neg-ready", "status": "True", "reason": "LoadBalancerNegReady"}


class TestGateInRun:
    async def test_condition_follows_the_verdict_and_keeps_other_conditions(self, redis_proc: RedisProcess,
                                                                           tmp_path: Path) -> None:
        """Ready sets the condition True, a killed Redis sets it False, the NEG condition stays, /status shows it."""
        api = await KubeAPI(tokens={"t0k"}).start()
        try:
            api.add_pod(NS, POD, [dict(NEG)])
            kubeconfig = write_kubeconfig(tmp_path / "kubeconfig", api.url, "t0k", NS)
            env = {"POD_NAME": POD, "POD_NAMESPACE": NS}
            with AgentProcess("--redis-url", redis_proc.url, "--kube-readiness-gate", "--kubeconfig",
                              str(kubeconfig), *FAST, env=env) as agent:

                def condition() -> dict[str, object]:
                    return api.condition(NS, POD, CTYPE) or {}

                await until_async(lambda: condition().get("status") == "True", 10, "condition True")
                assert condition()["reason"] == "DependenciesReady"
                assert (api.condition(NS, POD, NEG["type"]) or {}).get("status") == "True"  # untouched
                status = await asyncio.to_thread(agent.get, "/status")
                gate = json.loads(status[1])["kube_gate"]
                assert gate["enabled"] is True and gate["value"] is True
                redis_proc.kill()
                await until_async(lambda: condition().get("status") == "False", 10, "condition False")
                assert condition()["reason"] == "RedisRefused"
                assert "t0k" not in agent.output()
        finally:
            await api.stop()

    def test_missing_pod_identity_is_a_usage_error(self, tmp_path: Path) -> None:
        """With the gate on and no POD_NAME/POD_NAMESPACE, run exits 2 with one line naming them."""
        proc = run_cli("run", "--platform", "local", "--kube-readiness-gate",
                       "--redis-url", f"redis://127.0.0.1:{free_port()}/0", "--listen", "127.0.0.1:0")
        assert proc.returncode == 2
        lines = proc.stderr.strip().splitlines()
        assert len(lines) == 1 and "POD_NAME" in lines[0] and "POD_NAMESPACE" in lines[0]

    def test_gate_off_by_default_reports_disabled(self, redis_proc: RedisProcess) -> None:
        """Without the gate /status says the gate is off."""
        with AgentProcess("--redis-url", redis_proc.url, *FAST) as agent:
            doc = json.loads(agent.get("/status")[1])
        assert doc["kube_gate"] == {"enabled": False}
